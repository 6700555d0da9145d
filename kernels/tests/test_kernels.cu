// GPU tests of the ssalab kernels against plain CPU references in fp64 (no
// LibTorch; tests/test_common.h says how outputs are compared).
//
// Each case draws fresh random inputs, runs selection -> transposed index ->
// sparse forward -> sparse backward (twice, for determinism) -> statistics and
// compares each with the fp64 reference.  Cache cases run Tq queries at
// positions q_off.. against all T keys, in place inside a longer query tensor
// (strided), and compare with the same references at those positions.
// The fused dual-stream kernels are tested by experimental/tests/test_dual.cu.
// Usage: test_kernels [filter-substring]
#include "../attn_stats.cuh"
#include "../select.cuh"
#include "../sparse_bwd.cuh"
#include "../sparse_fwd.cuh"
#include "test_common.h"

using namespace ssa_test;

static void run_case(const Case& c, std::mt19937& rng) {
  std::printf("[%s]\n", c.desc().c_str());
  const int G = c.Hq / c.Hkv, D = c.D, nb = (c.T + c.bs - 1) / c.bs, nbc = c.T / c.bs, Tq = c.tq();
  const Inputs in(c, rng);
  const size_t nq = in.dout_dev.n, nkv = in.k_dev.n;
  DevBuf<uint16_t> dO(nq), dQ(nq), dK(nkv), dV(nkv), dQ2(nq), dK2(nkv), dV2(nkv);

  // ---- selection
  DevBuf<int32_t> blocks(size_t(c.B) * c.Hkv * Tq * c.K), counts(size_t(c.B) * c.Hkv * Tq);
  run_selection(in, blocks, counts);
  std::vector<int32_t> gb = blocks.get(), gc = counts.get();
  {
    std::vector<int> rb;
    std::vector<double> rs;
    ref_select(c, in.q, in.k, rb, rs);
    size_t exact = 0, bad = 0, cnt_bad = 0;
    for (size_t r = 0; r < size_t(c.B) * c.Hkv * Tq; ++r) {
      const double* sc = &rs[r * std::max(1, nbc)];
      int valid = 0;
      for (int i = 0; i < c.K; ++i) {
        int a = gb[r * c.K + i], e = rb[r * c.K + i];
        valid += a >= 0;
        if (a == e) continue;
        ++exact;
        if (i == 0 || a < 0 || e < 0 || std::fabs(sc[a] - sc[e]) > 1e-5) ++bad;
      }
      if (gc[r] != valid) ++cnt_bad;
    }
    check(bad == 0 && cnt_bad == 0, "selection == fp64 reference",
          fmt("%.0f slots differ (%.0f beyond near-tie), %.0f bad counts", double(exact), double(bad), double(cnt_bad)));
  }
  // ---- the slots kept in registers (k <= 32; otherwise only for rows too long
  // for shared memory): the same scores, so the same indices, for both rules
  // (the backend test checks nsa-chunked against its reference)
  if (c.K <= 32) {
    DevBuf<int32_t> rblocks(blocks.n), rcounts(counts.n), cblocks(blocks.n), ccounts(counts.n);
    run_selection(in, rblocks, rcounts, true);
    run_selection(in, cblocks, ccounts, false, true);
    std::vector<int32_t> chunked = cblocks.get();
    run_selection(in, cblocks, ccounts, true, true);
    check(rblocks.get() == gb && rcounts.get() == gc && cblocks.get() == chunked,
          "selection, slots in registers == shared-memory row", "top-k and nsa-chunked");
  }
  // ---- transposed index
  BlockIndexParams ip;
  ip.blocks = blocks.p;
  ip.B = c.B; ip.Hkv = c.Hkv; ip.Tq = Tq; ip.Tk = c.T; ip.K = c.K; ip.block_size = c.bs;
  DevBuf<int32_t> offsets(size_t(c.B) * c.Hkv * (nb + 1)), tokens(size_t(c.B) * c.Hkv * Tq * c.K),
      iwork(block_index_workspace_bytes(ip) / 4 + 1);
  ip.offsets = offsets.p;
  ip.tokens = tokens.p;
  ip.work = iwork.p;
  tokens.poison();  // slots past each list's end stay unwritten by design; the check reads them all
  OK(build_block_index(ip, 0));
  CK(cudaDeviceSynchronize());
  {
    std::vector<int32_t> go = offsets.get(), gt = tokens.get();
    bool ok = true;
    for (int bh = 0; bh < c.B * c.Hkv && ok; ++bh) {
      const int32_t* o = &go[size_t(bh) * (nb + 1)];
      size_t total = 0;
      for (int t = 0; t < Tq; ++t)
        for (int i = 0; i < c.K; ++i) total += gb[(size_t(bh) * Tq + t) * c.K + i] >= 0;
      if (o[0] != 0 || size_t(o[nb]) != total) ok = false;
      for (int j = 0; j < nb && ok; ++j) {
        std::vector<int> seen;
        for (int e = o[j]; e < o[j + 1]; ++e) {
          int t = gt[size_t(bh) * Tq * c.K + e];
          bool has = false;
          for (int i = 0; i < c.K; ++i) has |= gb[(size_t(bh) * Tq + t) * c.K + i] == j;
          if (!has) ok = false;
          seen.push_back(t);
        }
        std::sort(seen.begin(), seen.end());
        if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) ok = false;
      }
    }
    check(ok, "transposed index", "");
  }
  // ---- forward
  SparseFwdParams fp;
  c.shape(fp);
  fp.q = in.q_dev(); fp.k = in.k_dev.p; fp.v = in.v_dev.p; fp.o = dO.p;
  DevBuf<float> lse(size_t(c.B) * c.Hq * Tq);
  fp.lse = lse.p;
  fp.blocks = blocks.p;
  fp.q_s = in.q_s; fp.k_s = in.kv_s; fp.v_s = in.kv_s; fp.o_s = in.o_s;
  DevBuf<int> tiles(2);
  CK(cudaMemset(tiles.p, 0, 2 * sizeof(int)));
  fp.tile_counts = tiles.p;
  dO.poison();
  lse.poison();
  OK(sparse_fwd(fp, 0));
  CK(cudaDeviceSynchronize());
  // ---- the forward's two paths: every tile as a query tile, the tiles whose
  // tokens use each block twice on average, then every token alone; each must
  // give the default run's bits (top_k <= 32: both walk the blocks in
  // ascending order; above, every run is the per-token kernel)
  {
    const std::vector<int> by_default = tiles.get();
    const std::vector<uint16_t> o_default = dO.get();
    const std::vector<float> lse_default = lse.get();
    const bool tileable = G <= 16 && c.K <= 32;
    DevBuf<uint16_t> o2(nq);
    DevBuf<float> lse2(lse.n);
    std::vector<int> at_reuse_2;
    for (const float reuse : {0.f, 2.f, -1.f}) {
      SparseFwdParams f2 = fp;
      f2.o = o2.p;
      f2.lse = lse2.p;
      f2.min_block_reuse = reuse;
      CK(cudaMemset(tiles.p, 0, 2 * sizeof(int)));
      o2.poison();
      lse2.poison();
      OK(sparse_fwd(f2, 0));
      CK(cudaDeviceSynchronize());
      const std::vector<int> n = tiles.get();
      if (reuse == 2.f) at_reuse_2 = n;
      const bool forced_ok = reuse < 0.f    ? n[0] == 0 && n[1] == 0
                             : reuse == 0.f ? !tileable || (n[0] > 0 && n[1] == 0)
                                            : !tileable || n[0] + n[1] > 0;
      check(forced_ok && o2.get() == o_default && lse2.get() == lse_default,
            reuse == 0.f   ? "forward, every tile a query tile == default, bitwise"
            : reuse == 2.f ? "forward, tiles reusing blocks 2x == default, bitwise"
                           : "forward, per token only == default, bitwise",
            "query tiles / per-token tiles: default run " + std::to_string(by_default[0]) + " / " +
                std::to_string(by_default[1]) + ", this run " + std::to_string(n[0]) + " / " + std::to_string(n[1]));
    }
    if (c.smooth_q && tileable)
      check(at_reuse_2[0] > 0, "forward: smooth queries' tiles reuse blocks 2x",
            fmt("%.0f query tiles, %.0f per token", at_reuse_2[0], at_reuse_2[1]));
  }
  // ---- backward (twice)
  SparseBwdParams bp;
  c.shape(bp);
  bp.q = in.q_dev(); bp.k = in.k_dev.p; bp.v = in.v_dev.p; bp.o = dO.p; bp.dout = in.dout_dev.p; bp.lse = lse.p;
  bp.blocks = blocks.p; bp.index_offsets = offsets.p; bp.index_tokens = tokens.p;
  bp.dq = dQ.p; bp.dk = dK.p; bp.dv = dV.p;
  bp.q_s = in.q_s; bp.k_s = in.kv_s; bp.v_s = in.kv_s; bp.o_s = in.o_s; bp.do_s = in.o_s; bp.dq_s = in.o_s;
  bp.dk_s = in.kv_s; bp.dv_s = in.kv_s;
  bp.seg_tokens = c.seg_tokens;
  DevBuf<unsigned char> bws(sparse_bwd_workspace_bytes(bp));
  bp.workspace = bws.p;
  dQ.poison(); dK.poison(); dV.poison();
  OK(sparse_bwd(bp, 0));
  bp.dq = dQ2.p; bp.dk = dK2.p; bp.dv = dV2.p;
  dQ2.poison(); dK2.poison(); dV2.poison();
  OK(sparse_bwd(bp, 0));
  CK(cudaDeviceSynchronize());
  {
    auto a1 = dQ.get(), a2 = dQ2.get(), b1 = dK.get(), b2 = dK2.get(), c1 = dV.get(), c2 = dV2.get();
    check(a1 == a2 && b1 == b2 && c1 == c2, "backward bitwise deterministic", "");
  }

  std::vector<int> sel(gb.begin(), gb.end());
  Grads ex = ref_attention(c, in.q, in.k, in.v, in.dout, sel, false),
        lp = ref_attention(c, in.q, in.k, in.v, in.dout, sel, true);
  check_output("O", ex.o, lp.o, to_float(c.dt, dO.get()));
  check_output("dQ", ex.dq, lp.dq, to_float(c.dt, dQ.get()));
  check_output("dK", ex.dk, lp.dk, to_float(c.dt, dK.get()));
  check_output("dV", ex.dv, lp.dv, to_float(c.dt, dV.get()));
  {
    std::vector<float> gl = lse.get();
    double e = max_err(ex.lse, gl);
    check(e < 2e-3, "LSE", fmt("max err %.3g", e));
  }

  // ---- statistics (full attention) on the same inputs
  {
    StatsParams st;
    c.shape(st);
    st.q = in.q_dev(); st.k = in.k_dev.p; st.blocks = blocks.p;
    st.q_s = in.q_s; st.k_s = in.kv_s;
    // map rows pooled by 16 (one warp each) and by 48 (not a divisor of the
    // CTA's 128 rows: a CTA's warps add into several map rows)
    const int rp = c.B == 2 ? 48 : 16;
    st.map_row_pool = rp;
    st.map_mean_heads = false;
    const size_t rows = size_t(c.B) * c.Hq * Tq;
    DevBuf<float> stats(rows * kStatCount), map(stats_map_elems(st)), map_sp(stats_map_elems(st)),
        map_dr(stats_map_elems(st));
    st.stats = stats.p;
    st.map = map.p;
    st.map_sparse = map_sp.p;
    st.map_dropped = map_dr.p;
    stats.poison();
    map_sp.poison();
    map_dr.poison();
    OK(attn_stats(st, 0));
    CK(cudaDeviceSynchronize());
    std::vector<float> gs = stats.get(), gm = map.get(), gsp = map_sp.get(), gdr = map_dr.get();
    const int nrow = (Tq + rp - 1) / rp;
    std::vector<double> rmap(stats_map_elems(st), 0.0), rsp(rmap.size(), 0.0), rdr(rmap.size(), 0.0), w(c.T);
    std::vector<char> in_sel(c.T);
    double e_stat[kStatCount] = {0, 0, 0, 0, 0};
    const double scale = 1.0 / std::sqrt(double(D));
    for (int b = 0; b < c.B; ++b)
      for (int h = 0; h < c.Hq; ++h)
        for (int i = 0; i < Tq; ++i) {
          const int hk = h / G, t = c.q_off + i;  // t: the row's position
          const size_t row = (size_t(b) * c.Hq + h) * Tq + i;
          double mx = -1e300;
          for (int s2 = 0; s2 <= t; ++s2) {
            double a = 0;
            for (int d = 0; d < D; ++d)
              a += double(in.q.f[row * D + d]) * in.k.f[((size_t(b) * c.Hkv + hk) * c.T + s2) * D + d];
            w[s2] = a * scale;
            mx = std::max(mx, w[s2]);
          }
          double l = 0;
          for (int s2 = 0; s2 <= t; ++s2) l += std::exp(w[s2] - mx);
          const double lse = mx + std::log(l);
          double ent = 0, sink_b = 0, selm = 0;
          const int* sl = &gb[((size_t(b) * c.Hkv + hk) * Tq + i) * c.K];
          for (int s2 = 0; s2 <= t; ++s2) {
            double pr = std::exp(w[s2] - lse);
            ent -= pr * (w[s2] - lse);
            if (s2 < c.bs) sink_b += pr;
            bool in = false;
            for (int i = 0; i < c.K; ++i) in |= sl[i] == s2 / c.bs;
            in_sel[s2] = in;
            if (in) selm += pr;
          }
          const double cnt = std::min(rp, Tq - (i / rp) * rp);
          for (int s2 = 0; s2 <= t; ++s2) {
            const double pr = std::exp(w[s2] - lse);
            const size_t cell = ((size_t(b) * c.Hq + h) * nrow + i / rp) * nb + s2 / c.bs;
            rmap[cell] += pr / cnt;
            if (in_sel[s2]) rsp[cell] += pr / selm / cnt;
            else rdr[cell] += pr / cnt;
          }
          const double want[kStatCount] = {lse, ent, std::exp(w[0] - lse), sink_b, selm};
          for (int i = 0; i < kStatCount; ++i)
            e_stat[i] = std::max(e_stat[i], std::fabs(want[i] - gs[row * kStatCount + i]) /
                                               (i == kStatEntropy ? std::max(1.0, std::fabs(want[i])) : 1.0));
        }
    double e_map = 0, e_sp = 0, e_dr = 0;
    for (size_t i = 0; i < rmap.size(); ++i) {
      e_map = std::max(e_map, std::fabs(rmap[i] - gm[i]));
      e_sp = std::max(e_sp, std::fabs(rsp[i] - gsp[i]));
      e_dr = std::max(e_dr, std::fabs(rdr[i] - gdr[i]));
    }
    check(e_stat[0] < 2e-3 && e_stat[1] < 5e-3 && e_stat[2] < 2e-3 && e_stat[3] < 2e-3 && e_stat[4] < 2e-3,
          "stats (lse, entropy, sinks, selected)",
          fmt("lse %.2g entropy(rel) %.2g sel %.2g", e_stat[0], e_stat[1], e_stat[4]));
    check(e_map < 2e-3, "pooled attention map", fmt("max err %.3g", e_map));
    check(e_sp < 4e-3 && e_dr < 2e-3, "pooled sparse and dropped maps", fmt("max err %.3g / %.3g", e_sp, e_dr));
  }
}

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  std::mt19937 rng(1234);
  const DType bf = DType::bf16, fh = DType::fp16;
  // dt, D, B, Hq, Hkv, T, bs, K [, const_k, seg_tokens, Tq, q_off, q_sd, k_sd, smooth_q]
  std::vector<Case> cases = {
      {bf, 64, 1, 16, 1, 1000, 16, 16, false, 7},   // G16, T not a multiple of bs, split dK/dV items
      {fh, 128, 2, 8, 8, 517, 32, 4},     // G1, batch 2
      {bf, 128, 1, 4, 2, 300, 64, 3},     // G2
      {bf, 64, 1, 32, 4, 777, 128, 2},    // G8, bs128
      {fh, 64, 1, 32, 1, 260, 16, 17},    // G32, k > past blocks early on
      {bf, 64, 2, 24, 2, 400, 32, 13},    // G12, k == nb
      {bf, 128, 1, 16, 1, 129, 128, 2},   // G16, partial last block of 1 token
      {fh, 128, 1, 6, 2, 333, 16, 5, false, 3},  // G3, split items
      {bf, 64, 1, 8, 1, 256, 16, 6, true, 40},  // all selection scores tie (block 0 popular)
      {fh, 64, 1, 16, 1, 1100, 64, 16, false, 100},  // G16 fp16, longer
      {bf, 64, 1, 16, 1, 1300, 16, 32},   // k 32: the most slots the selection keeps in registers
      {fh, 128, 1, 8, 1, 1300, 16, 40},   // k 40: the selection's shared-memory row
      {bf, 128, 1, 32, 1, 600, 16, 8},    // G32 at d128: the selection's two row tiles of two warpgroups
      {bf, 64, 2, 16, 1, 333, 16, 8},     // G16, batch 2 (the engine binding test's shape)
      // a KV cache: Tq queries at positions q_off.. against T keys
      {bf, 64, 1, 16, 1, 700, 16, 8, false, 64, 200, 333},     // a chunk inside the sequence, split items
      {fh, 128, 2, 8, 2, 517, 32, 6, false, 512, 130, 387},    // the last chunk (q_off + Tq = T), batch 2
      {bf, 64, 1, 32, 2, 600, 64, 4, false, 512, 1, 599},      // decoding one token
      {bf, 128, 1, 4, 1, 300, 16, 5, false, 512, 37, 100},     // keys past the last query
      {bf, 64, 1, 16, 1, 4200, 16, 16, false, 512, 64, 4136},  // 262 visible blocks: the wide selection kernel on Hopper
      // q and k outside fp16's range (their products inside it): the selection's
      // power-of-two scaling into fp16, both ways
      {bf, 64, 1, 16, 1, 500, 16, 8, false, 512, 0, 0, 1e5f, 1e-6f},
      {bf, 128, 1, 8, 2, 400, 16, 6, false, 512, 0, 0, 1e-6f, 1e5f},
      // neighbouring tokens sharing their blocks (the forward's query tiles)
      {bf, 64, 1, 16, 1, 1000, 16, 16, false, 512, 0, 0, 1.f, 1.f, true},
      {fh, 128, 2, 8, 2, 700, 32, 8, false, 512, 0, 0, 1.f, 1.f, true},
      {bf, 64, 1, 32, 2, 1100, 64, 8, false, 512, 0, 0, 1.f, 1.f, true},
      {bf, 64, 1, 16, 1, 900, 16, 16, false, 512, 333, 300, 1.f, 1.f, true},  // a chunk inside the sequence
  };
  int ran = 0;
  for (const Case& c : cases) {
    if (!filter.empty() && c.desc().find(filter) == std::string::npos) continue;
    run_case(c, rng);
    ++ran;
  }
  std::printf("\n%d cases, %d failed checks\n", ran, g_fail);
  return g_fail ? 1 : 0;
}
