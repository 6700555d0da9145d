// Per-block full-attention mass of a selection.  See block_mass.cuh for the design.
#include <algorithm>
#include <cmath>

#include "block_mass.cuh"
#include "common.cuh"

namespace ssa {
namespace {

constexpr int kWarps = 4;  // query rows per CTA

// Floats of shared memory per warp: the group's q rows (D + 4 apart, so that
// two head sets' float4 reads fall in different banks), then their LSEs,
// rounded up to keep the next warp's rows 16-byte aligned.
__host__ __device__ inline int warp_floats(int G, int D) { return G * (D + 4) + (G + 3) / 4 * 4; }

// HPL: heads per lane at most (a power of two, ceil(G / sets) <= HPL), the
// partial sums a lane keeps in registers.
template <typename T, int D, int HPL>
__global__ void __launch_bounds__(kWarps * 32) block_mass_kernel(BlockMassParams p) {
  extern __shared__ __align__(16) float smem[];
  const int G = p.Hq / p.Hkv, row_stride = D + 4;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.z, hk = blockIdx.y, t = blockIdx.x * kWarps + warp;
  if (t >= p.Tq) return;  // no CTA-wide barrier follows
  float* qs = smem + warp * warp_floats(G, D);  // [G][D + 4]: q * scale * log2(e)
  float* lse2 = qs + G * row_stride;            // [G]: the rows' LSE in log2 units
  const float scale_log2 = p.scale * kLog2e;
  const T* qrow = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk) * G * p.q_s.h + int64_t(t) * p.q_s.t;
  for (int i = lane; i < G * D; i += 32)
    qs[(i / D) * row_stride + i % D] = TypeOf<T>::to_float(qrow[(i / D) * p.q_s.h + i % D]) * scale_log2;
  const float* lse_row = p.lse + (int64_t(b) * p.Hq + hk * G) * p.Tq + t;
  for (int h = lane; h < G; h += 32) lse2[h] = lse_row[int64_t(h) * p.Tq] * kLog2e;
  __syncwarp();

  const int bs = p.block_size, K = p.top_k, pos = p.q_offset + t;
  // a pass takes min(bs, 32) keys, one per lane; the lanes form 32 / that many
  // sets of contiguous lanes, set s taking heads s, s + sets, ...
  const int per_pass = bs < 32 ? bs : 32, sets = 32 / per_pass;
  const int set = lane / per_pass, in_set = lane % per_pass;
  const T* kbase = static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h;
  const int32_t* sel = p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq + t) * K;
  float* out = p.mass + (int64_t(b) * p.Hq + hk * G) * p.Tq * (K + 1) + int64_t(t) * (K + 1);
  const int64_t out_head = int64_t(p.Tq) * (K + 1);

  for (int slot = 0; slot <= K; ++slot) {  // slot K: block 0
    const int j = slot < K ? sel[slot] : 0;
    float acc[HPL];
#pragma unroll
    for (int m = 0; m < HPL; ++m) acc[m] = 0.f;
    if (j >= 0) {
      const int end = min((j + 1) * bs, min(pos + 1, p.Tk));  // keys the row sees
      for (int key = j * bs + in_set; key < end; key += per_pass) {
        float kf[D];
        const uint4* src = reinterpret_cast<const uint4*>(kbase + int64_t(key) * p.k_s.t);
#pragma unroll
        for (int c = 0; c < D / 8; ++c) {
          const uint4 u = src[c];
          const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 f = TypeOf<T>::unpack(w[e]);
            kf[c * 8 + e * 2] = f.x;
            kf[c * 8 + e * 2 + 1] = f.y;
          }
        }
#pragma unroll
        for (int m = 0; m < HPL; ++m) {
          const int h = set + m * sets;
          if (h < G) {
            const float4* qv = reinterpret_cast<const float4*>(qs + h * row_stride);
            float s = 0.f;
#pragma unroll
            for (int d = 0; d < D / 4; ++d) {
              const float4 x = qv[d];
              s = fmaf(x.x, kf[4 * d], s);
              s = fmaf(x.y, kf[4 * d + 1], s);
              s = fmaf(x.z, kf[4 * d + 2], s);
              s = fmaf(x.w, kf[4 * d + 3], s);
            }
            acc[m] += fast_exp2(s - lse2[h]);
          }
        }
      }
    }
    // each head's sum over its set's lanes (contiguous: offsets below per_pass)
#pragma unroll
    for (int m = 0; m < HPL; ++m) {
      if (m * sets >= G) break;  // the same for every lane
      for (int o = 1; o < per_pass; o *= 2) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], o);
      const int h = set + m * sets;
      if (in_set == 0 && h < G) out[h * out_head + slot] = acc[m];
    }
  }
}

}  // namespace

std::string block_mass_supported(const BlockMassParams& p) {
  return check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
}

std::string block_mass(const BlockMassParams& p_in, cudaStream_t stream) {
  std::string e = block_mass_supported(p_in);
  if (!e.empty()) return e;
  if (!p_in.q || !p_in.k || !p_in.blocks || !p_in.lse || !p_in.mass) return "block mass: q, k, blocks, lse and mass are needed";
  BlockMassParams p = p_in;
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(double(p.D)));
  const int G = p.Hq / p.Hkv, sets = 32 / std::min(p.block_size, 32), per_lane = (G + sets - 1) / sets;
  const dim3 grid((p.Tq + kWarps - 1) / kWarps, p.Hkv, p.B);
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      const int smem = kWarps * warp_floats(G, D) * int(sizeof(float));
      auto kernel = per_lane <= 4 ? block_mass_kernel<T, D, 4>
                    : per_lane <= 8 ? block_mass_kernel<T, D, 8>
                    : per_lane <= 16 ? block_mass_kernel<T, D, 16>
                                     : block_mass_kernel<T, D, 32>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      kernel<<<grid, kWarps * 32, smem, stream>>>(p);
      SSA_CUDA_CHECK(cudaGetLastError());
    });
  });
  return "";
}

}  // namespace ssa
