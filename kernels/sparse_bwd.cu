// Sparse attention backward.  See sparse_bwd.cuh for the design.
#include <cmath>

#include "sparse_bwd.cuh"
#include "sparse_tiles.cuh"

namespace ssa {
namespace {

constexpr int kWarps = 4;   // dQ kernel: tokens per CTA
constexpr int kStages = 3;  // dQ kernel: cp.async stages per warp

// Where the workspace pieces live (host and device agree on this).
struct BwdWork {
  float* delta;      // (B, Hq, Tq)
  int32_t* seg_off;  // (B, Hkv, nb+1): first work item of each key block; [nb] = item count
  float* partial;    // (B, Hkv, max_items, bs, 2, D) fp32: dK (scaled) then dV of split items
  int max_items;     // work items per (b, hkv) upper bound: nb + ceil(Tq*K / seg_tokens)
};
// Key blocks: nb = ceil(Tk / bs).
__host__ __device__ inline int key_blocks(const SparseBwdParams& p) { return (p.Tk + p.block_size - 1) / p.block_size; }
inline BwdWork bwd_work(const SparseBwdParams& p) {
  const int nb = key_blocks(p);
  const int64_t items = nb + (int64_t(p.Tq) * p.top_k + p.seg_tokens - 1) / p.seg_tokens;
  char* w = static_cast<char*>(p.workspace);
  BwdWork r;
  r.delta = reinterpret_cast<float*>(w);
  w += ((size_t(p.B) * p.Hq * p.Tq * 4 + 255) / 256) * 256;
  r.seg_off = reinterpret_cast<int32_t*>(w);
  w += ((size_t(p.B) * p.Hkv * (nb + 1) * 4 + 255) / 256) * 256;
  r.partial = reinterpret_cast<float*>(w);
  r.max_items = int(items);
  return r;
}
inline size_t bwd_work_bytes(const SparseBwdParams& p) {
  const int nb = key_blocks(p);
  const int64_t items = nb + (int64_t(p.Tq) * p.top_k + p.seg_tokens - 1) / p.seg_tokens;
  return ((size_t(p.B) * p.Hq * p.Tq * 4 + 255) / 256) * 256 + ((size_t(p.B) * p.Hkv * (nb + 1) * 4 + 255) / 256) * 256 +
         size_t(p.B) * p.Hkv * items * p.block_size * 2 * p.D * 4;
}

// per (b, hkv): work items of each key block = max(1, ceil(tokens / seg_tokens)), exclusive scan
__global__ void seg_scan_kernel(SparseBwdParams p, BwdWork w) {
  __shared__ int part[1024];
  const int nb = key_blocks(p);
  const int32_t* off = p.index_offsets + int64_t(blockIdx.x) * (nb + 1);
  int32_t* so = w.seg_off + int64_t(blockIdx.x) * (nb + 1);
  const int per = (nb + 1023) / 1024, j0 = threadIdx.x * per, j1 = min(nb, j0 + per);
  auto count = [&](int j) { return max(1, (off[j + 1] - off[j] + p.seg_tokens - 1) / p.seg_tokens); };
  int s = 0;
  for (int j = j0; j < j1; ++j) s += count(j);
  int run = block_exclusive_scan_1024(part, s);
  for (int j = j0; j < j1; ++j) {
    so[j] = run;
    run += count(j);
  }
  if (threadIdx.x == 1023) so[nb] = part[1023];
}

// adds the partials of split key blocks in item order; one CTA per (block, hkv, b)
template <typename T>
__global__ void dkv_reduce_kernel(SparseBwdParams p, BwdWork w) {
  const int j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, bs = p.block_size, D = p.D;
  const int nb = key_blocks(p);
  const int64_t bh = int64_t(b) * p.Hkv + hk;
  const int32_t* so = w.seg_off + bh * (nb + 1);
  const int i0 = so[j], i1 = so[j + 1];
  if (i1 - i0 <= 1) return;
  T* dkb = static_cast<T*>(p.dk) + b * p.dk_s.b + hk * p.dk_s.h;
  T* dvb = static_cast<T*>(p.dv) + b * p.dv_s.b + hk * p.dv_s.h;
  for (int e = threadIdx.x; e < bs * 2 * D; e += blockDim.x) {
    const int row = e / (2 * D), which = (e / D) % 2, d = e % D, key = j * bs + row;
    float acc = 0.f;
    for (int i = i0; i < i1; ++i) acc += w.partial[((bh * w.max_items + i) * bs) * 2 * D + e];
    if (key < p.Tk) (which ? dvb + int64_t(key) * p.dv_s.t : dkb + int64_t(key) * p.dk_s.t)[d] = TypeOf<T>::from_float(acc);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32) sparse_dq_kernel(SparseBwdParams p, BwdWork w) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16, ND = D / 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int G = p.Hq / p.Hkv, RT = (G + 15) / 16;
  const int wid = blockIdx.x * kWarps + warp;
  const int t = wid / RT, h0 = (wid % RT) * 16;  // query row t, at position pos
  if (t >= p.Tq) return;
  const int pos = p.q_offset + t;
  const int b = blockIdx.z, hk = blockIdx.y;
  T* sK = reinterpret_cast<T*>(smem_raw) + warp * kStages * 2 * 16 * D;
  T* sV = sK + kStages * 16 * D;
  const int r0 = h0 + g, r1 = h0 + g + 8;

  uint32_t qa[NK][4], da[NK][4];
  load_rows_frag<T, D>(qa, static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk * G) * p.q_s.h + int64_t(t) * p.q_s.t,
                       p.q_s.h, G, r0, r1, c);
  load_rows_frag<T, D>(da,
                       static_cast<const T*>(p.dout) + b * p.do_s.b + int64_t(hk * G) * p.do_s.h + int64_t(t) * p.do_s.t,
                       p.do_s.h, G, r0, r1, c);
  const int64_t row_base = (int64_t(b) * p.Hq + hk * G) * p.Tq + t;
  const float lse0 = r0 < G ? p.lse[row_base + int64_t(r0) * p.Tq] * kLog2e : 0.f;
  const float lse1 = r1 < G ? p.lse[row_base + int64_t(r1) * p.Tq] * kLog2e : 0.f;
  // delta = rowsum(dO * O), from O loaded in dO's fragment layout; saved for the dK/dV kernel
  float dl0 = 0.f, dl1 = 0.f;
  {
    uint32_t oa[NK][4];
    load_rows_frag<T, D>(oa, static_cast<const T*>(p.o) + b * p.o_s.b + int64_t(hk * G) * p.o_s.h + int64_t(t) * p.o_s.t,
                         p.o_s.h, G, r0, r1, c);
#pragma unroll
    for (int ks = 0; ks < NK; ++ks)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 x = TypeOf<T>::unpack(oa[ks][i]), y = TypeOf<T>::unpack(da[ks][i]);
        (i & 1 ? dl1 : dl0) += x.x * y.x + x.y * y.y;
      }
    dl0 = quad_sum(dl0);
    dl1 = quad_sum(dl1);
    if (c == 0) {
      if (r0 < G) w.delta[row_base + int64_t(r0) * p.Tq] = dl0;
      if (r1 < G) w.delta[row_base + int64_t(r1) * p.Tq] = dl1;
    }
  }

  const float scale_log2 = p.scale * kLog2e;
  const int32_t* sel = p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq + t) * p.top_k;
  KvRing<T, D, kStages> ring{sK, sV, static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h,
                             static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h, p.k_s.t, p.v_s.t, p.Tk, lane};
  ring.prod.init(sel, p.top_k, p.block_size, pos);
  ChunkIter cons = ring.prod;
  ring.prime();
  float dq[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  for (int it = 0; cons.valid(); ++it) {
    ring.refill(it);
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const T* tK = ring.k_tile(it);
    const T* tV = ring.v_tile(it);
    const int key0 = cons.key0();
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    float dp[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    mma_rows_tile_t<T, D>(s, qa, tK, lane);   // S = Q K^T
    mma_rows_tile_t<T, D>(dp, da, tV, lane);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int key = key0 + n * 8 + 2 * c + (e & 1);
        float pr = key <= pos ? fast_exp2(s[n][e] * scale_log2 - (e < 2 ? lse0 : lse1)) : 0.f;
        s[n][e] = pr * (dp[n][e] - (e < 2 ? dl0 : dl1));
      }
    uint32_t sa[4] = {TypeOf<T>::pack(s[0][0], s[0][1]), TypeOf<T>::pack(s[0][2], s[0][3]),
                      TypeOf<T>::pack(s[1][0], s[1][1]), TypeOf<T>::pack(s[1][2], s[1][3])};
    mma_p_tile<T, D>(dq, sa, tK, lane);  // dQ += dS K
    __syncwarp();
    cons.next();
  }
  cp_async_wait<0>();
  T* ob = static_cast<T*>(p.dq) + b * p.dq_s.b + int64_t(hk * G) * p.dq_s.h + int64_t(t) * p.dq_s.t;
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    int d = n * 8 + 2 * c;
    if (r0 < G)
      *reinterpret_cast<uint32_t*>(ob + r0 * p.dq_s.h + d) = TypeOf<T>::pack(dq[n][0] * p.scale, dq[n][1] * p.scale);
    if (r1 < G)
      *reinterpret_cast<uint32_t*>(ob + r1 * p.dq_s.h + d) = TypeOf<T>::pack(dq[n][2] * p.scale, dq[n][3] * p.scale);
  }
}

// Occupancy: at d64 the kernel is latency-bound (ncu at C, bs16: 199 registers,
// 2 CTAs = 8 warps per SM, 0.46 eligible warps per scheduler).  Capping it at
// 168 registers and a 72 KB stage budget fits 3 CTAs: fwd+bwd at C 3.25 ->
// 3.02 ms (bs16), 7.94 -> 7.46 ms (bs64).  At d128 the same caps spill and cost
// 15-20%, and 4 CTAs per SM was slower at both (H100, 2026-11-23).  bs128
// (8 warps) keeps the old settings.
template <int D, int BS>
struct DkvCfg {
  static constexpr int NM = BS / 16;                  // 16-key m-tiles, one per warp
  static constexpr int WARPS = NM >= 4 ? NM : 4;
  static constexpr bool CAPPED = D == 64 && WARPS == 4;  // bs <= 64 (bs128 has 8 warps: 85 registers would spill)
  static constexpr int MIN_BLOCKS = CAPPED ? 3 : 1;   // __launch_bounds__ CTAs per SM
  static constexpr int SMEM_KB = CAPPED ? 72 : 112;   // budget that picks the stage count
  static constexpr int NSPLIT = WARPS / NM;           // warps sharing an m-tile split the rows
  static constexpr int R = 64;                        // gathered rows per stage (4 sub-tiles of 16)
  static constexpr size_t kv_bytes = size_t(2) * BS * D * 2;
  static constexpr size_t stage1 = size_t(2) * R * D * 2;  // Q and dO rows of one stage
  static constexpr size_t budget = size_t(SMEM_KB) * 1024;
  static constexpr int STAGES = kv_bytes + 4 * stage1 <= budget ? 4 : kv_bytes + 3 * stage1 <= budget ? 3 : 2;
  static constexpr size_t stage_bytes = STAGES * stage1;
  static constexpr size_t red_bytes = size_t(NSPLIT - 1) * NM * 2 * 16 * D * 4;
  static constexpr size_t meta_bytes = size_t(STAGES) * R * 12;
  static constexpr size_t body = stage_bytes > red_bytes ? stage_bytes : red_bytes;
  static constexpr size_t smem = kv_bytes + body + meta_bytes;
};

template <typename T, int D, int BS>
__global__ void __launch_bounds__(DkvCfg<D, BS>::WARPS * 32, DkvCfg<D, BS>::MIN_BLOCKS) sparse_dkv_kernel(SparseBwdParams p, BwdWork w) {
  using C = DkvCfg<D, BS>;
  constexpr int NM = C::NM, NSPLIT = C::NSPLIT, R = C::R, S = C::STAGES, NK = D / 16, ND = D / 8, CH = D / 8;
  constexpr int NT = C::WARPS * 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + BS * D;
  T* sQ = sV + BS * D;     // [S][R][D]
  T* sO = sQ + S * R * D;  // [S][R][D] (dO)
  unsigned char* meta = smem_raw + C::kv_bytes + C::body;
  float* sL = reinterpret_cast<float*>(meta);    // [S][R] lse
  float* sD = sL + S * R;                        // [S][R] delta
  int* sT = reinterpret_cast<int*>(sD + S * R);  // [S][R] query position, -1 = padding

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int mt = warp % NM, sp = warp / NM;
  const int item = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int G = p.Hq / p.Hkv, nb = (p.Tk + BS - 1) / BS;
  const int64_t bh = int64_t(b) * p.Hkv + hk;
  // work item -> (key block j, segment of its token list)
  const int32_t* so = w.seg_off + bh * (nb + 1);
  if (item >= so[nb]) return;
  int lo = 0, hi = nb;  // largest j with so[j] <= item
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (so[mid] <= item) lo = mid; else hi = mid;
  }
  const int j = lo, seg = item - so[j], nseg = so[j + 1] - so[j];
  const int key_base = j * BS;

  {  // K and V of this block
    const T* kb = static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h;
    const T* vb = static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h;
    for (int i = tid; i < BS * CH; i += NT) {
      int row = i / CH, ch = i % CH, key = key_base + row;
      bool ok = key < p.Tk;
      cp_async16(sK + swz<D>(row, ch), kb + int64_t(ok ? key : 0) * p.k_s.t + ch * 8, ok);
      cp_async16(sV + swz<D>(row, ch), vb + int64_t(ok ? key : 0) * p.v_s.t + ch * 8, ok);
    }
    cp_async_commit();
  }
  const int32_t* off = p.index_offsets + bh * (nb + 1);
  const int n_all = off[j + 1] - off[j];
  const int start = off[j] + seg * p.seg_tokens, n_tok = min(n_all - seg * p.seg_tokens, p.seg_tokens);
  const int32_t* toks = p.index_tokens + bh * int64_t(p.Tq) * p.top_k + start;
  const int nrows = n_tok * G, n_it = (nrows + R - 1) / R;
  const T* qg = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk * G) * p.q_s.h;
  const T* dg = static_cast<const T*>(p.dout) + b * p.do_s.b + int64_t(hk * G) * p.do_s.h;
  const int64_t lrow = (int64_t(b) * p.Hq + hk * G) * p.Tq;

  const int gshift = (G & (G - 1)) == 0 ? __ffs(G) - 1 : -1;  // power-of-two groups: shifts, not divisions
  auto split_row = [&](int row, int& ti, int& h) {
    if (gshift >= 0) {
      ti = row >> gshift;
      h = row & (G - 1);
    } else {
      ti = row / G;
      h = row - ti * G;
    }
  };
  auto load_stage = [&](int it, int st) {
    for (int i = tid; i < R * CH; i += NT) {
      int rr = i / CH, ch = i % CH, row = it * R + rr;
      bool ok = row < nrows;
      int ti, h;
      split_row(row, ti, h);
      int tok = ok ? toks[ti] : 0;
      if (!ok) h = 0;
      cp_async16(sQ + st * R * D + swz<D>(rr, ch), qg + h * p.q_s.h + int64_t(tok) * p.q_s.t + ch * 8, ok);
      cp_async16(sO + st * R * D + swz<D>(rr, ch), dg + h * p.do_s.h + int64_t(tok) * p.do_s.t + ch * 8, ok);
    }
    for (int i = tid; i < R; i += NT) {  // async too: no thread waits on the scattered lse/delta reads
      const int row = it * R + i;
      const bool ok = row < nrows;
      int ti, h;
      split_row(row, ti, h);
      const int tok = ok ? toks[ti] : 0;
      if (!ok) h = 0;
      cp_async4(sL + st * R + i, p.lse + lrow + int64_t(h) * p.Tq + tok, ok);
      cp_async4(sD + st * R + i, w.delta + lrow + int64_t(h) * p.Tq + tok, ok);
      sT[st * R + i] = ok ? p.q_offset + tok : -1;  // the row's position (causal mask), -1 = padding
    }
  };

#pragma unroll
  for (int st = 0; st < S - 1; ++st) {
    if (st < n_it) load_stage(st, st);
    cp_async_commit();
  }
  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  const float scale_log2 = p.scale * kLog2e;
  const int key_r0 = key_base + mt * 16 + g, key_r1 = key_r0 + 8;
  // d64: the warp's K and V A-fragments live in registers for the whole CTA
  constexpr bool KREG = D == 64;
  uint32_t ka[KREG ? NK : 1][4], va[KREG ? NK : 1][4];
  if constexpr (KREG) {
    cp_async_wait<S - 1>();  // the K/V group was committed first
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < NK; ++ks) {
      const int aoff = swz<D>(mt * 16 + (lane & 15), ks * 2 + (lane >> 4));
      ldsm_x4(ka[ks][0], ka[ks][1], ka[ks][2], ka[ks][3], smem_u32(sK + aoff));
      ldsm_x4(va[ks][0], va[ks][1], va[ks][2], va[ks][3], smem_u32(sV + aoff));
    }
  }

  for (int it = 0; it < n_it; ++it) {
    if (it + S - 1 < n_it) load_stage(it + S - 1, (it + S - 1) % S);
    cp_async_commit();
    cp_async_wait<S - 1>();
    __syncthreads();
    const int st = it % S;
    const T* tQ = sQ + st * R * D;
    const T* tO = sO + st * R * D;
    const int rows_here = min(R, nrows - it * R);
#pragma unroll 1
    for (int sub = sp; sub * 16 < rows_here; sub += NSPLIT) {
      float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      float dp[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int ks = 0; ks < NK; ++ks) {
        uint32_t b0, b1, b2, b3;
        const int boff = swz<D>(sub * 16 + (lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1));
        if constexpr (KREG) {
          ldsm_x4(b0, b1, b2, b3, smem_u32(tQ + boff));
          mma16816<T>(s[0], ka[ks], b0, b1);
          mma16816<T>(s[1], ka[ks], b2, b3);
          ldsm_x4(b0, b1, b2, b3, smem_u32(tO + boff));
          mma16816<T>(dp[0], va[ks], b0, b1);
          mma16816<T>(dp[1], va[ks], b2, b3);
        } else {
          uint32_t a[4];
          const int aoff = swz<D>(mt * 16 + (lane & 15), ks * 2 + (lane >> 4));
          ldsm_x4(a[0], a[1], a[2], a[3], smem_u32(sK + aoff));
          ldsm_x4(b0, b1, b2, b3, smem_u32(tQ + boff));
          mma16816<T>(s[0], a, b0, b1);
          mma16816<T>(s[1], a, b2, b3);
          ldsm_x4(a[0], a[1], a[2], a[3], smem_u32(sV + aoff));
          ldsm_x4(b0, b1, b2, b3, smem_u32(tO + boff));
          mma16816<T>(dp[0], a, b0, b1);
          mma16816<T>(dp[1], a, b2, b3);
        }
      }
      float pr[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e2 = 0; e2 < 2; ++e2) {
          const int qr = st * R + sub * 16 + n * 8 + 2 * c + e2;
          const int tok = sT[qr];
          const float lq = sL[qr] * kLog2e, dq2 = sD[qr];
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            const int e = hi * 2 + e2;
            const float x = (hi ? key_r1 : key_r0) <= tok ? fast_exp2(s[n][e] * scale_log2 - lq) : 0.f;
            pr[n][e] = x;
            s[n][e] = x * (dp[n][e] - dq2);  // dS^T
          }
        }
      uint32_t pa[4] = {TypeOf<T>::pack(pr[0][0], pr[0][1]), TypeOf<T>::pack(pr[0][2], pr[0][3]),
                        TypeOf<T>::pack(pr[1][0], pr[1][1]), TypeOf<T>::pack(pr[1][2], pr[1][3])};
      uint32_t sa[4] = {TypeOf<T>::pack(s[0][0], s[0][1]), TypeOf<T>::pack(s[0][2], s[0][3]),
                        TypeOf<T>::pack(s[1][0], s[1][1]), TypeOf<T>::pack(s[1][2], s[1][3])};
#pragma unroll
      for (int dn = 0; dn < NK; ++dn) {
        uint32_t b0, b1, b2, b3;
        const int toff = swz<D>(sub * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, dn * 2 + (lane >> 4));
        ldsm_x4_t(b0, b1, b2, b3, smem_u32(tO + toff));
        mma16816<T>(dv[2 * dn], pa, b0, b1);
        mma16816<T>(dv[2 * dn + 1], pa, b2, b3);
        ldsm_x4_t(b0, b1, b2, b3, smem_u32(tQ + toff));
        mma16816<T>(dk[2 * dn], sa, b0, b1);
        mma16816<T>(dk[2 * dn + 1], sa, b2, b3);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();

  if constexpr (NSPLIT > 1) {  // fixed-order sum of the splits' partial dK/dV
    float* red = reinterpret_cast<float*>(sQ);
    if (sp > 0) {
      float* r = red + ((sp - 1) * NM + mt) * (2 * ND * 4 * 32);
#pragma unroll
      for (int n = 0; n < ND; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          r[(n * 4 + e) * 32 + lane] = dk[n][e];
          r[((ND + n) * 4 + e) * 32 + lane] = dv[n][e];
        }
    }
    __syncthreads();
    if (sp == 0) {
      for (int s2 = 1; s2 < NSPLIT; ++s2) {
        const float* r = red + ((s2 - 1) * NM + mt) * (2 * ND * 4 * 32);
#pragma unroll
        for (int n = 0; n < ND; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            dk[n][e] += r[(n * 4 + e) * 32 + lane];
            dv[n][e] += r[((ND + n) * 4 + e) * 32 + lane];
          }
      }
    }
  }
  if (sp == 0 && nseg > 1) {  // split block: fp32 partial, summed by dkv_reduce_kernel
    float* pb = w.partial + ((bh * w.max_items + item) * BS) * 2 * D;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      const int d = n * 8 + 2 * c, r0 = mt * 16 + g, r1 = r0 + 8;
      pb[r0 * 2 * D + d] = dk[n][0] * p.scale;
      pb[r0 * 2 * D + d + 1] = dk[n][1] * p.scale;
      pb[r1 * 2 * D + d] = dk[n][2] * p.scale;
      pb[r1 * 2 * D + d + 1] = dk[n][3] * p.scale;
      pb[r0 * 2 * D + D + d] = dv[n][0];
      pb[r0 * 2 * D + D + d + 1] = dv[n][1];
      pb[r1 * 2 * D + D + d] = dv[n][2];
      pb[r1 * 2 * D + D + d + 1] = dv[n][3];
    }
  } else if (sp == 0) {
    T* dkb = static_cast<T*>(p.dk) + b * p.dk_s.b + hk * p.dk_s.h;
    T* dvb = static_cast<T*>(p.dv) + b * p.dv_s.b + hk * p.dv_s.h;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      int d = n * 8 + 2 * c;
      if (key_r0 < p.Tk) {
        *reinterpret_cast<uint32_t*>(dkb + int64_t(key_r0) * p.dk_s.t + d) =
            TypeOf<T>::pack(dk[n][0] * p.scale, dk[n][1] * p.scale);
        *reinterpret_cast<uint32_t*>(dvb + int64_t(key_r0) * p.dv_s.t + d) = TypeOf<T>::pack(dv[n][0], dv[n][1]);
      }
      if (key_r1 < p.Tk) {
        *reinterpret_cast<uint32_t*>(dkb + int64_t(key_r1) * p.dk_s.t + d) =
            TypeOf<T>::pack(dk[n][2] * p.scale, dk[n][3] * p.scale);
        *reinterpret_cast<uint32_t*>(dvb + int64_t(key_r1) * p.dv_s.t + d) = TypeOf<T>::pack(dv[n][2], dv[n][3]);
      }
    }
  }
}

template <typename T, int D, int BS>
std::string launch_dkv(const SparseBwdParams& p, const BwdWork& w, cudaStream_t stream) {
  using C = DkvCfg<D, BS>;
  auto kern = sparse_dkv_kernel<T, D, BS>;
  SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::smem)));
  kern<<<dim3(w.max_items, p.Hkv, p.B), C::WARPS * 32, C::smem, stream>>>(p, w);
  SSA_CUDA_CHECK(cudaGetLastError());
  dkv_reduce_kernel<T><<<dim3(key_blocks(p), p.Hkv, p.B), 256, 0, stream>>>(p, w);
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

}  // namespace

size_t sparse_bwd_workspace_bytes(const SparseBwdParams& p) { return bwd_work_bytes(p); }

std::string sparse_bwd_supported(const SparseBwdParams& p) {
  std::string e = check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
  if (!e.empty()) return e;
  if (p.seg_tokens < 1) return "seg_tokens must be >= 1";
  return "";
}

std::string sparse_bwd(const SparseBwdParams& p_in, cudaStream_t stream) {
  std::string e = sparse_bwd_supported(p_in);
  if (e.empty() && !p_in.workspace) e = "no workspace";
  if (!e.empty()) return e;
  SparseBwdParams p = p_in;
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(double(p.D)));
  const int G = p.Hq / p.Hkv, RT = (G + 15) / 16;
  dim3 grid((int)((int64_t(p.Tq) * RT + kWarps - 1) / kWarps), p.Hkv, p.B);
  std::string err;
  const BwdWork w = bwd_work(p);
  seg_scan_kernel<<<p.B * p.Hkv, 1024, 0, stream>>>(p, w);
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      const int smem = kWarps * kStages * 2 * 16 * D * 2;
      auto kern = sparse_dq_kernel<T, D>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      kern<<<grid, kWarps * 32, smem, stream>>>(p, w);
      SSA_CUDA_CHECK(cudaGetLastError());
      switch (p.block_size) {
        case 16: err = launch_dkv<T, D, 16>(p, w, stream); break;
        case 32: err = launch_dkv<T, D, 32>(p, w, stream); break;
        case 64: err = launch_dkv<T, D, 64>(p, w, stream); break;
        default: err = launch_dkv<T, D, 128>(p, w, stream); break;
      }
    });
  });
  return err;
}

}  // namespace ssa
