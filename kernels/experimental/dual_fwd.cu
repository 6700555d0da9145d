// SSA dual stream forward.  See dual_fwd.cuh for the design.
#include <cmath>

#include "dual_fwd.cuh"
#include "../sparse_tiles.cuh"

namespace ssa {
namespace {

constexpr int kRows = 64;   // query rows per CTA (4 warps x 16)
constexpr int kKeys = 64;   // keys per chunk (4 groups of 16)
constexpr int kStages = 3;  // K/V chunks in flight

int bitmask_words(const DualFwdParams& p) { return ((p.Tq + p.block_size - 1) / p.block_size + 31) / 32; }

// Online softmax state of one stream for this thread's two rows (g, g + 8):
// running max (log2 units), sum, and the D-wide output accumulator.
template <int D>
struct Stream {
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[D / 8][4];
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  }
  // x: the chunk's scaled scores (-inf = not attended); with MASKED, only the
  // groups and rows `keep` marks count.  Rescales the state to the new max and
  // packs the weights, 16-bit, as the A fragments of P V (pk[group]).  A row
  // that has attended nothing yet keeps max -inf and gets weights 0.
  template <typename T, bool MASKED>
  __device__ __forceinline__ void weigh(const float (&x)[2 * kKeys / 16][4], const bool (&keep)[kKeys / 16][2],
                                        uint32_t (&pk)[kKeys / 16][4]) {
    constexpr int NG = kKeys / 16;
    auto val = [&](int n, int e) { return !MASKED || keep[n / 2][e >> 1] ? x[n][e] : -INFINITY; };
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < 2 * NG; ++n) mx = fmaxf(mx, fmaxf(val(n, 2 * r), val(n, 2 * r + 1)));
      const float mn = fmaxf(m[r], quad_max(mx));
      base[r] = mn == -INFINITY ? 0.f : mn;
      const float a = fast_exp2(m[r] - base[r]);  // 0 while nothing attended
      m[r] = mn;
      l[r] *= a;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) o[n][2 * r] *= a, o[n][2 * r + 1] *= a;
    }
#pragma unroll
    for (int i = 0; i < NG; ++i) {
      float w[2][4];
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) w[u][e] = fast_exp2(val(2 * i + u, e) - base[e >> 1]);
      l[0] += (w[0][0] + w[0][1]) + (w[1][0] + w[1][1]);
      l[1] += (w[0][2] + w[0][3]) + (w[1][2] + w[1][3]);
      pk[i][0] = TypeOf<T>::pack(w[0][0], w[0][1]);
      pk[i][1] = TypeOf<T>::pack(w[0][2], w[0][3]);
      pk[i][2] = TypeOf<T>::pack(w[1][0], w[1][1]);
      pk[i][3] = TypeOf<T>::pack(w[1][2], w[1][3]);
    }
  }
  // Writes O = o / l and the natural-log LSE of rows tok0, tok1 (< T).
  template <typename T>
  __device__ __forceinline__ void store(T* ob, int64_t stride_t, float* lse, int tok0, int tok1, int T_len, int c) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int tok = r ? tok1 : tok0;
      const float lq = quad_sum(l[r]);
      if (tok >= T_len) continue;
      const float inv = 1.f / lq;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(ob + int64_t(tok) * stride_t + n * 8 + 2 * c) =
            TypeOf<T>::pack(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
      if (c == 0) lse[tok] = (m[r] + log2f(lq)) * kLn2;
    }
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(kRows * 2, D == 64 ? 3 : 1) dual_fwd_kernel(DualFwdParams p, int words) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16, NG = kKeys / 16;
  T* sK = reinterpret_cast<T*>(smem_raw);  // [kStages][kKeys][D]
  T* sV = sK + kStages * kKeys * D;        // [kStages][kKeys][D]
  uint32_t* bits = reinterpret_cast<uint32_t*>(sV + kStages * kKeys * D);  // [kRows][words]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int tile = gridDim.x - 1 - blockIdx.x;  // heavy tiles first
  const int h = blockIdx.y, b = blockIdx.z, G = p.Hq / p.Hkv, hk = h / G, bs = p.block_size;
  const int bs_shift = __ffs(bs) - 1;
  const int q0 = tile * kRows, tq0 = q0 + warp * 16, tok0 = tq0 + g, tok1 = tok0 + 8;

  build_selection_bits(bits, p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq) * p.top_k, q0, kRows, words, p.Tq, p.top_k,
                       tid, kRows * 2);
  uint32_t qa[NK][4];
  {
    const T* qb = static_cast<const T*>(p.q) + b * p.q_s.b + h * p.q_s.h;
    load_rows_frag<T, D>(qa, qb, p.q_s.t, p.Tq, tok0, tok1, c);
  }
  const float scale_log2 = p.scale * kLog2e;

  const T* kb = static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h;
  const int kend = min(p.Tq, q0 + kRows);
  const int nchunk = (kend + kKeys - 1) / kKeys;
  auto load = [&](int ci, int st) {
    T* const dst[2] = {sK + st * kKeys * D, sV + st * kKeys * D};
    const T* const src[2] = {kb, vb};
    const int64_t stride[2] = {p.k_s.t, p.v_s.t};
    load_row_tiles<T, D, kKeys, kRows * 2, 2>(dst, src, stride, ci * kKeys, p.Tq, tid);
  };
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < nchunk) load(st, st);
    cp_async_commit();
  }

  Stream<D> full, sparse;
  full.clear();
  sparse.clear();
  for (int ci = 0; ci < nchunk; ++ci) {
    if (ci + kStages - 1 < nchunk) load(ci + kStages - 1, (ci + kStages - 1) % kStages);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncthreads();
    const int key0 = ci * kKeys;
    if (key0 <= tq0 + 15 && tq0 < p.Tq) {
      const T* tK = sK + (ci % kStages) * kKeys * D;
      const T* tV = sV + (ci % kStages) * kKeys * D;
      float x[2 * NG][4];
#pragma unroll
      for (int i = 0; i < NG; ++i) {  // S = Q K^T, 16 keys at a time
        float s2[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        mma_rows_tile_t<T, D>(s2, qa, tK + i * 16 * D, lane);
#pragma unroll
        for (int e = 0; e < 4; ++e) x[2 * i][e] = s2[0][e] * scale_log2, x[2 * i + 1][e] = s2[1][e] * scale_log2;
      }
      if (key0 + kKeys - 1 > tq0) {  // causal mask on the diagonal chunk
#pragma unroll
        for (int n = 0; n < 2 * NG; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key0 + n * 8 + 2 * c + (e & 1) > ((e >> 1) ? tok1 : tok0)) x[n][e] = -INFINITY;
      }
      // the sparse stream sees only the row's selected blocks (a block never
      // straddles a 16-key group: bs >= 16); its P V is skipped for a group
      // that no row of the warp selected
      const int jb0 = key0 >> bs_shift;
      uint32_t selw[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) selw[r] = bits[(warp * 16 + g + 8 * r) * words + jb0 / 32] >> (jb0 % 32);
      bool keep[NG][2], group_used[NG];
#pragma unroll
      for (int i = 0; i < NG; ++i) {
        const int sh = (16 * i) >> bs_shift;
        keep[i][0] = (selw[0] >> sh) & 1u;
        keep[i][1] = (selw[1] >> sh) & 1u;
        group_used[i] = __any_sync(0xffffffffu, keep[i][0] || keep[i][1]);
      }
      uint32_t pk[NG][4];
      sparse.template weigh<T, true>(x, keep, pk);
#pragma unroll
      for (int i = 0; i < NG; ++i)
        if (group_used[i]) mma_p_tile<T, D>(sparse.o, pk[i], tV + i * 16 * D, lane);
      full.template weigh<T, false>(x, keep, pk);
#pragma unroll
      for (int i = 0; i < NG; ++i) mma_p_tile<T, D>(full.o, pk[i], tV + i * 16 * D, lane);  // O += P V
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  const int64_t lse_off = (int64_t(b) * p.Hq + h) * p.Tq;
  full.template store<T>(static_cast<T*>(p.o_full) + b * p.of_s.b + h * p.of_s.h, p.of_s.t, p.lse_full + lse_off,
                         tok0, tok1, p.Tq, c);
  sparse.template store<T>(static_cast<T*>(p.o_sparse) + b * p.os_s.b + h * p.os_s.h, p.os_s.t,
                           p.lse_sparse + lse_off, tok0, tok1, p.Tq, c);
}

}  // namespace

std::string dual_fwd_supported(const DualFwdParams& p) {
  std::string e = check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
  if (e.empty()) e = check_whole_sequence(p.Tq, p.Tk, p.q_offset, "the fused dual-stream forward");
  if (!e.empty()) return e;
  if (size_t(kRows) * bitmask_words(p) * 4 > 64 * 1024) return "sequence too long for the dual-stream kernel";
  return "";
}

std::string dual_fwd(const DualFwdParams& p_in, cudaStream_t stream) {
  std::string e = dual_fwd_supported(p_in);
  if (!e.empty()) return e;
  DualFwdParams p = p_in;
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(double(p.D)));
  const int words = bitmask_words(p);
  dim3 grid((p.Tq + kRows - 1) / kRows, p.Hq, p.B);
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      const int smem = 2 * kStages * kKeys * D * 2 + kRows * words * 4;
      auto kern = dual_fwd_kernel<T, D>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      kern<<<grid, kRows * 2, smem, stream>>>(p, words);
    });
  });
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

}  // namespace ssa
