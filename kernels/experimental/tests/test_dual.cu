// GPU tests of the experimental fused dual-stream kernels (dual_fwd, dual_bwd)
// against the fp64 CPU references of kernels/tests/test_common.h.
//
// Each case draws fresh inputs, runs our selection, then the fused forward
// (full causal and sparse outputs, their LSEs) and the fused backward with a
// separate upstream gradient per stream (twice, for determinism), and checks
// every output against fp64: full attention is sparse attention with every
// visible block selected.  Whole sequences only, as the kernels require.
// Usage: test_dual [filter-substring]
#include "../../tests/test_common.h"
#include "../dual_bwd.cuh"
#include "../dual_fwd.cuh"

using namespace ssa_test;

static void run_case(const Case& c, std::mt19937& rng) {
  std::printf("[%s]\n", c.desc().c_str());
  const int nb = (c.T + c.bs - 1) / c.bs;
  const Inputs in(c, rng);
  const size_t nq = in.dout_dev.n, nkv = in.k_dev.n, rows = size_t(c.B) * c.Hq * c.T;
  DevBuf<int32_t> blocks(size_t(c.B) * c.Hkv * c.T * c.K), counts(size_t(c.B) * c.Hkv * c.T);
  run_selection(in, blocks, counts);
  const std::vector<int32_t> gb = blocks.get();
  const std::vector<int> sel(gb.begin(), gb.end());

  // ---- forward: full causal and sparse outputs in one pass
  Case cf = c;  // full attention = every block visible to the token selected (own block first)
  cf.K = nb;
  const std::vector<int> all = all_blocks(c);
  const Grads fx = ref_attention(cf, in.q, in.k, in.v, in.dout, all, false),
              fl = ref_attention(cf, in.q, in.k, in.v, in.dout, all, true);
  const Grads ex = ref_attention(c, in.q, in.k, in.v, in.dout, sel, false),
              lp = ref_attention(c, in.q, in.k, in.v, in.dout, sel, true);
  DevBuf<uint16_t> of(nq), os(nq);
  DevBuf<float> lf(rows), ls(rows);
  DualFwdParams dp;
  c.shape(dp);
  dp.q = in.q_dev(); dp.k = in.k_dev.p; dp.v = in.v_dev.p; dp.o_full = of.p; dp.o_sparse = os.p;
  dp.lse_full = lf.p; dp.lse_sparse = ls.p; dp.blocks = blocks.p;
  dp.q_s = in.q_s; dp.k_s = in.kv_s; dp.v_s = in.kv_s; dp.of_s = in.o_s; dp.os_s = in.o_s;
  of.poison(); os.poison(); lf.poison(); ls.poison();
  OK(dual_fwd(dp, 0));
  CK(cudaDeviceSynchronize());
  const std::vector<float> gof = to_float(c.dt, of.get()), gos = to_float(c.dt, os.get());
  check_output("dual fwd: full O", fx.o, fl.o, gof);
  check_output("dual fwd: sparse O", ex.o, lp.o, gos);
  const double el = max_err(fx.lse, lf.get()), els = max_err(ex.lse, ls.get());
  check(el < 2e-3 && els < 2e-3, "dual fwd: full / sparse LSE", fmt("max err %.3g / %.3g", el, els));

  // ---- backward: the full stream gets dout, the sparse one its own gradient
  const Tensor16 dout2 = random16(c.dt, nq, rng, 1.f);
  DevBuf<uint16_t> ddo2(nq), gq(nq), gk(nkv), gv(nkv), gq2(nq), gk2(nkv), gv2(nkv);
  ddo2.put(dout2.bits);
  DualBwdParams db;
  c.shape(db);
  db.q = in.q_dev(); db.k = in.k_dev.p; db.v = in.v_dev.p; db.o_full = of.p; db.o_sparse = os.p;
  db.do_full = in.dout_dev.p; db.do_sparse = ddo2.p; db.lse_full = lf.p; db.lse_sparse = ls.p; db.blocks = blocks.p;
  db.dq = gq.p; db.dk = gk.p; db.dv = gv.p;
  db.q_s = in.q_s; db.k_s = in.kv_s; db.v_s = in.kv_s; db.of_s = in.o_s; db.os_s = in.o_s; db.dof_s = in.o_s;
  db.dos_s = in.o_s; db.dq_s = in.o_s; db.dk_s = in.kv_s; db.dv_s = in.kv_s;
  DevBuf<unsigned char> dws(dual_bwd_workspace_bytes(db));
  db.workspace = dws.p;
  gq.poison(); gk.poison(); gv.poison();
  OK(dual_bwd(db, 0));
  db.dq = gq2.p; db.dk = gk2.p; db.dv = gv2.p;
  gq2.poison(); gk2.poison(); gv2.poison();
  OK(dual_bwd(db, 0));
  CK(cudaDeviceSynchronize());
  check(gq.get() == gq2.get() && gk.get() == gk2.get() && gv.get() == gv2.get(), "dual bwd: bitwise deterministic",
        "");
  const Grads sx = ref_attention(c, in.q, in.k, in.v, dout2, sel, false),
              sl = ref_attention(c, in.q, in.k, in.v, dout2, sel, true);
  auto sum = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r(a.size());
    for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] + b[i];
    return r;
  };
  check_output("dual bwd: dQ", sum(fx.dq, sx.dq), sum(fl.dq, sl.dq), to_float(c.dt, gq.get()));
  check_output("dual bwd: dK", sum(fx.dk, sx.dk), sum(fl.dk, sl.dk), to_float(c.dt, gk.get()));
  check_output("dual bwd: dV", sum(fx.dv, sx.dv), sum(fl.dv, sl.dv), to_float(c.dt, gv.get()));

  // a chunk of queries is refused with the reason (training only)
  DualFwdParams chunk = dp;
  chunk.Tq = c.T / 2;
  chunk.q_offset = c.T - chunk.Tq;
  const std::string why = dual_fwd_supported(chunk);
  check(why.find("whole sequence") != std::string::npos, "dual fwd refuses Tq < Tk", why);
}

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  std::mt19937 rng(1234);
  const DType bf = DType::bf16, fh = DType::fp16;
  // the shapes of tests/test_kernels.cu (dt, D, B, Hq, Hkv, T, bs, K [, const_k, seg_tokens])
  const std::vector<Case> cases = {
      {bf, 64, 1, 16, 1, 1000, 16, 16, false, 7},   // G16, T not a multiple of bs
      {fh, 128, 2, 8, 8, 517, 32, 4},     // G1, batch 2
      {bf, 128, 1, 4, 2, 300, 64, 3},     // G2
      {bf, 64, 1, 32, 4, 777, 128, 2},    // G8, bs128
      {fh, 64, 1, 32, 1, 260, 16, 17},    // G32, k > past blocks early on
      {bf, 64, 2, 24, 2, 400, 32, 13},    // G12, k == nb
      {bf, 128, 1, 16, 1, 129, 128, 2},   // G16, partial last block of 1 token
      {fh, 128, 1, 6, 2, 333, 16, 5, false, 3},  // G3
      {bf, 64, 1, 8, 1, 256, 16, 6, true, 40},   // all selection scores tie (block 0 popular)
      {fh, 64, 1, 16, 1, 1100, 64, 16, false, 100},  // G16 fp16, longer
      {bf, 64, 2, 16, 1, 333, 16, 8},     // G16, batch 2
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
