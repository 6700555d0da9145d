// Sparse attention forward.  See sparse_fwd.cuh for the design.
#include <cmath>

#include "sparse_fwd.cuh"
#include "sparse_tiles.cuh"

namespace ssa {
namespace {

constexpr int kWarps = 4;
constexpr int kStages = 3;

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32) sparse_fwd_kernel(SparseFwdParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16;  // k-steps over the head dim
  constexpr int ND = D / 8;   // n8 tiles over the head dim
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int G = p.Hq / p.Hkv, RT = (G + 15) / 16;
  const int wid = blockIdx.x * kWarps + warp;
  const int t = wid / RT, h0 = (wid % RT) * 16;  // query row t, at position pos
  if (t >= p.Tq) return;
  const int pos = p.q_offset + t;
  const int b = blockIdx.z, hk = blockIdx.y;
  T* sK = reinterpret_cast<T*>(smem_raw) + warp * kStages * 2 * 16 * D;
  T* sV = sK + kStages * 16 * D;

  // Q fragments of rows h0..h0+15 (heads of this token), zero beyond G
  uint32_t qa[NK][4];
  load_rows_frag<T, D>(qa, static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk * G) * p.q_s.h + int64_t(t) * p.q_s.t,
                       p.q_s.h, G, h0 + g, h0 + g + 8, c);
  const float scale_log2 = p.scale * kLog2e;
  const int32_t* sel = p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq + t) * p.top_k;
  KvRing<T, D, kStages> ring{sK, sV, static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h,
                             static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h, p.k_s.t, p.v_s.t, p.Tk, lane};
  ring.prod.init(sel, p.top_k, p.block_size, pos);
  ChunkIter cons = ring.prod;
  ring.prime();

  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

  for (int it = 0; cons.valid(); ++it) {
    ring.refill(it);
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const T* tK = ring.k_tile(it);
    const T* tV = ring.v_tile(it);
    const int key0 = cons.key0();

    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    mma_rows_tile_t<T, D>(s, qa, tK, lane);  // S = Q K^T
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int key = key0 + n * 8 + 2 * c + (e & 1);
        float x = key <= pos ? s[n][e] * scale_log2 : -INFINITY;
        s[n][e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
      }
    mx0 = fmaxf(m0, quad_max(mx0));
    mx1 = fmaxf(m1, quad_max(mx1));
    const float a0 = fast_exp2(m0 - mx0), a1 = fast_exp2(m1 - mx1);
    m0 = mx0;
    m1 = mx1;
    l0 *= a0;
    l1 *= a1;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      o[n][0] *= a0; o[n][1] *= a0; o[n][2] *= a1; o[n][3] *= a1;
    }
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      s[n][0] = fast_exp2(s[n][0] - m0); s[n][1] = fast_exp2(s[n][1] - m0);
      s[n][2] = fast_exp2(s[n][2] - m1); s[n][3] = fast_exp2(s[n][3] - m1);
      l0 += s[n][0] + s[n][1];
      l1 += s[n][2] + s[n][3];
    }
    uint32_t pa[4] = {TypeOf<T>::pack(s[0][0], s[0][1]), TypeOf<T>::pack(s[0][2], s[0][3]),
                      TypeOf<T>::pack(s[1][0], s[1][1]), TypeOf<T>::pack(s[1][2], s[1][3])};
    mma_p_tile<T, D>(o, pa, tV, lane);  // O += P V
    __syncwarp();
    cons.next();
  }
  cp_async_wait<0>();

  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const float i0 = 1.f / l0, i1 = 1.f / l1;
  T* ob = static_cast<T*>(p.o) + b * p.o_s.b + int64_t(hk * G) * p.o_s.h + int64_t(t) * p.o_s.t;
  const int r0 = h0 + g, r1 = h0 + g + 8;
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    int d = n * 8 + 2 * c;
    if (r0 < G) *reinterpret_cast<uint32_t*>(ob + r0 * p.o_s.h + d) = TypeOf<T>::pack(o[n][0] * i0, o[n][1] * i0);
    if (r1 < G) *reinterpret_cast<uint32_t*>(ob + r1 * p.o_s.h + d) = TypeOf<T>::pack(o[n][2] * i1, o[n][3] * i1);
  }
  if (c == 0) {
    float* lb = p.lse + (int64_t(b) * p.Hq + hk * G) * p.Tq + t;
    if (r0 < G) lb[int64_t(r0) * p.Tq] = (m0 + log2f(l0)) * kLn2;
    if (r1 < G) lb[int64_t(r1) * p.Tq] = (m1 + log2f(l1)) * kLn2;
  }
}

}  // namespace

std::string sparse_fwd_supported(const SparseFwdParams& p) {
  return check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
}

std::string sparse_fwd(const SparseFwdParams& p_in, cudaStream_t stream) {
  std::string e = sparse_fwd_supported(p_in);
  if (!e.empty()) return e;
  SparseFwdParams p = p_in;
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(double(p.D)));
  const int G = p.Hq / p.Hkv, RT = (G + 15) / 16;
  dim3 grid((int)((int64_t(p.Tq) * RT + kWarps - 1) / kWarps), p.Hkv, p.B);
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      const int smem = kWarps * kStages * 2 * 16 * D * 2;
      auto kern = sparse_fwd_kernel<T, D>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      kern<<<grid, kWarps * 32, smem, stream>>>(p);
    });
  });
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

}  // namespace ssa
