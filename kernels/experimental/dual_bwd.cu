// SSA dual stream backward.  See dual_bwd.cuh for the design.
#include <algorithm>
#include <cmath>

#include "dual_bwd.cuh"
#include "../sparse_tiles.cuh"

namespace ssa {
namespace {

constexpr int kTile = 64;   // query rows (dQ) or keys (dK/dV) per CTA: 4 warps x 16
constexpr int kChunk = 64;  // keys (dQ) or query rows (dK/dV) per streamed chunk
constexpr int kStages = 2;  // chunks in flight
constexpr int kThreads = 128;

__host__ __device__ inline int bitmask_words(const DualBwdParams& p) {
  return ((p.Tq + p.block_size - 1) / p.block_size + 31) / 32;
}
__host__ __device__ inline size_t rows(const DualBwdParams& p) { return size_t(p.B) * p.Hq * p.Tq; }
// workspace: delta_full, delta_sparse (B, Hq, T) floats, then the bitmask (B, Hkv, T, words)
__host__ __device__ inline float* delta_full(const DualBwdParams& p) { return static_cast<float*>(p.workspace); }
__host__ __device__ inline float* delta_sparse(const DualBwdParams& p) { return delta_full(p) + rows(p); }
__host__ __device__ inline uint32_t* row_bits(const DualBwdParams& p) {
  return reinterpret_cast<uint32_t*>(delta_sparse(p) + rows(p));
}

// delta = rowsum(dO * O) of both streams, one thread per (b, h, t) row.
template <typename T, int D>
__global__ void dual_delta_kernel(DualBwdParams p, float* df, float* ds) {
  const int64_t n = int64_t(rows(p));
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int t = int(i % p.Tq), h = int((i / p.Tq) % p.Hq), b = int(i / (int64_t(p.Tq) * p.Hq));
    auto rowdot = [&](const void* o, Strides4 os, const void* d, Strides4 dsr) {
      const T* op = static_cast<const T*>(o) + b * os.b + h * os.h + int64_t(t) * os.t;
      const T* dp = static_cast<const T*>(d) + b * dsr.b + h * dsr.h + int64_t(t) * dsr.t;
      float a = 0.f;
#pragma unroll 8
      for (int k = 0; k < D; k += 2) {
        const float2 x = TypeOf<T>::unpack(*reinterpret_cast<const uint32_t*>(op + k));
        const float2 y = TypeOf<T>::unpack(*reinterpret_cast<const uint32_t*>(dp + k));
        a = fmaf(x.x, y.x, fmaf(x.y, y.y, a));
      }
      return a;
    };
    df[i] = rowdot(p.o_full, p.of_s, p.do_full, p.dof_s);
    ds[i] = rowdot(p.o_sparse, p.os_s, p.do_sparse, p.dos_s);
  }
}

// bits[((b Hkv + hk) T + t) words + j / 32] bit j % 32: token t selected block j.
__global__ void dual_bits_kernel(DualBwdParams p, uint32_t* bits, int words) {
  const int64_t n = int64_t(p.B) * p.Hkv * p.Tq * p.top_k;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int j = p.blocks[i];
    if (j >= 0) atomicOr(&bits[(i / p.top_k) * words + j / 32], 1u << (j % 32));
  }
}

// 16x16 weights (two n8 tiles) -> the A fragment of a 16-bit MMA.
template <typename T>
__device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&w)[2][4]) {
  a[0] = TypeOf<T>::pack(w[0][0], w[0][1]);
  a[1] = TypeOf<T>::pack(w[0][2], w[0][3]);
  a[2] = TypeOf<T>::pack(w[1][0], w[1][1]);
  a[3] = TypeOf<T>::pack(w[1][2], w[1][3]);
}

// ------------------------------------------------------------------ dQ
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) dual_dq_kernel(DualBwdParams p, int words) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16;
  T* sK = reinterpret_cast<T*>(smem_raw);  // [kStages][kChunk][D]
  T* sV = sK + kStages * kChunk * D;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int tile = gridDim.x - 1 - blockIdx.x;  // heavy tiles first
  const int h = blockIdx.y, b = blockIdx.z, G = p.Hq / p.Hkv, hk = h / G;
  const int bs_shift = __ffs(p.block_size) - 1;
  const int q0 = tile * kTile, tq0 = q0 + warp * 16, tok[2] = {tq0 + g, tq0 + g + 8};

  uint32_t qa[NK][4], dfa[NK][4], dsa[NK][4];
  load_rows_frag<T, D>(qa, static_cast<const T*>(p.q) + b * p.q_s.b + h * p.q_s.h, p.q_s.t, p.Tq, tok[0], tok[1], c);
  load_rows_frag<T, D>(dfa, static_cast<const T*>(p.do_full) + b * p.dof_s.b + h * p.dof_s.h, p.dof_s.t, p.Tq, tok[0],
                       tok[1], c);
  load_rows_frag<T, D>(dsa, static_cast<const T*>(p.do_sparse) + b * p.dos_s.b + h * p.dos_s.h, p.dos_s.t, p.Tq,
                       tok[0], tok[1], c);
  const float scale_log2 = p.scale * kLog2e;
  const int64_t row0 = (int64_t(b) * p.Hq + h) * p.Tq;
  float Lf[2], Ls[2], dlf[2], dls[2];  // LSE in log2 units (+inf beyond T: P = 0), deltas
  const uint32_t* rbits[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool in = tok[r] < p.Tq;
    Lf[r] = in ? p.lse_full[row0 + tok[r]] * kLog2e : INFINITY;
    Ls[r] = in ? p.lse_sparse[row0 + tok[r]] * kLog2e : INFINITY;
    dlf[r] = in ? delta_full(p)[row0 + tok[r]] : 0.f;
    dls[r] = in ? delta_sparse(p)[row0 + tok[r]] : 0.f;
    rbits[r] = row_bits(p) + ((int64_t(b) * p.Hkv + hk) * p.Tq + (in ? tok[r] : 0)) * words;
  }

  const T* kb = static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h;
  const int nchunk = (min(p.Tq, q0 + kTile) + kChunk - 1) / kChunk;
  auto load = [&](int ci, int st) {
    T* const dst[2] = {sK + st * kChunk * D, sV + st * kChunk * D};
    const T* const src[2] = {kb, vb};
    const int64_t stride[2] = {p.k_s.t, p.v_s.t};
    load_row_tiles<T, D, kChunk, kThreads, 2>(dst, src, stride, ci * kChunk, p.Tq, tid);
  };
  load(0, 0);
  cp_async_commit();

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  for (int ci = 0; ci < nchunk; ++ci) {
    if (ci + 1 < nchunk) load(ci + 1, (ci + 1) % kStages);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int key0 = ci * kChunk;
    if (key0 <= tq0 + 15 && tq0 < p.Tq) {
      const T* tK = sK + (ci % kStages) * kChunk * D;
      const T* tV = sV + (ci % kStages) * kChunk * D;
#pragma unroll
      for (int i = 0; i < kChunk / 16; ++i) {
        const int k16 = key0 + 16 * i;
        if (k16 > tq0 + 15) break;  // past the warp's diagonal (warp-uniform)
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        mma_rows_tile_t<T, D>(s, qa, tK + i * 16 * D, lane);  // S = Q K^T
        const int jb = k16 >> bs_shift;
        bool keep[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) keep[r] = tok[r] < p.Tq && ((rbits[r][jb / 32] >> (jb % 32)) & 1u);
        const bool used = __any_sync(0xffffffffu, keep[0] || keep[1]);
        float pf[2][4], ps[2][4];
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e >> 1;
            const bool causal = k16 + n * 8 + 2 * c + (e & 1) <= tok[r];
            const float x = s[n][e] * scale_log2;
            pf[n][e] = causal ? fast_exp2(x - Lf[r]) : 0.f;
            ps[n][e] = causal && keep[r] ? fast_exp2(x - Ls[r]) : 0.f;
          }
        float dp[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        mma_rows_tile_t<T, D>(dp, dfa, tV + i * 16 * D, lane);  // dP_full = dO_full V^T
        float dsc[2][4];
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) dsc[n][e] = pf[n][e] * (dp[n][e] - dlf[e >> 1]);
        if (used) {
          float dps[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
          mma_rows_tile_t<T, D>(dps, dsa, tV + i * 16 * D, lane);  // dP_sparse = dO_sparse V^T
#pragma unroll
          for (int n = 0; n < 2; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) dsc[n][e] = fmaf(ps[n][e], dps[n][e] - dls[e >> 1], dsc[n][e]);
        }
        uint32_t da[4];
        pack_a<T>(da, dsc);
        mma_p_tile<T, D>(acc, da, tK + i * 16 * D, lane);  // dQ += dS K
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  T* dqb = static_cast<T*>(p.dq) + b * p.dq_s.b + h * p.dq_s.h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (tok[r] >= p.Tq) continue;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<uint32_t*>(dqb + int64_t(tok[r]) * p.dq_s.t + n * 8 + 2 * c) =
          TypeOf<T>::pack(acc[n][2 * r] * p.scale, acc[n][2 * r + 1] * p.scale);
  }
}

// ------------------------------------------------------------------ dK / dV
// Per streamed query row: LSEs (log2 units), deltas and the selection bits of
// the CTA's key blocks (bit i: block first_block + i).
struct RowScalars {
  float lf, ls, df, ds;
  uint32_t sel;
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) dual_dkv_kernel(DualBwdParams p, int words) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16;
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [kStages][kChunk][D]
  T* sDf = sQ + kStages * kChunk * D;
  T* sDs = sDf + kStages * kChunk * D;
  RowScalars* sRow = reinterpret_cast<RowScalars*>(sDs + kStages * kChunk * D);  // [kStages][kChunk]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int tile = blockIdx.x;  // the first key tiles see the most queries: launched first
  const int hk = blockIdx.y, b = blockIdx.z, G = p.Hq / p.Hkv;
  const int bs_shift = __ffs(p.block_size) - 1;
  const int k0 = tile * kTile, wk0 = k0 + warp * 16, key[2] = {wk0 + g, wk0 + g + 8};
  const int first_block = k0 >> bs_shift, wblock = (wk0 >> bs_shift) - first_block;  // warp's block, relative

  uint32_t ka[NK][4], va[NK][4];
  load_rows_frag<T, D>(ka, static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h, p.k_s.t, p.Tq, key[0], key[1], c);
  load_rows_frag<T, D>(va, static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h, p.v_s.t, p.Tq, key[0], key[1], c);
  const float scale_log2 = p.scale * kLog2e;
  const uint32_t* bits = row_bits(p) + (int64_t(b) * p.Hkv + hk) * p.Tq * words;

  // work items: (head of the group, query chunk from the CTA's first key on)
  const int c_first = k0 / kChunk, c_end = (p.Tq + kChunk - 1) / kChunk, per_head = c_end - c_first;
  const int nwork = G * per_head;
  auto load = [&](int w, int st) {
    const int h = hk * G + w / per_head, r0 = (c_first + w % per_head) * kChunk;
    T* const dst[3] = {sQ + st * kChunk * D, sDf + st * kChunk * D, sDs + st * kChunk * D};
    const T* const src[3] = {static_cast<const T*>(p.q) + b * p.q_s.b + h * p.q_s.h,
                             static_cast<const T*>(p.do_full) + b * p.dof_s.b + h * p.dof_s.h,
                             static_cast<const T*>(p.do_sparse) + b * p.dos_s.b + h * p.dos_s.h};
    const int64_t stride[3] = {p.q_s.t, p.dof_s.t, p.dos_s.t};
    load_row_tiles<T, D, kChunk, kThreads, 3>(dst, src, stride, r0, p.Tq, tid);
    // the slot's previous reader finished before the last barrier
    const int64_t row0 = (int64_t(b) * p.Hq + h) * p.Tq;
    for (int i = tid; i < kChunk; i += kThreads) {
      const int t = r0 + i;
      RowScalars rs{INFINITY, INFINITY, 0.f, 0.f, 0u};  // rows beyond T: P = 0
      if (t < p.Tq) {
        rs.lf = p.lse_full[row0 + t] * kLog2e;
        rs.ls = p.lse_sparse[row0 + t] * kLog2e;
        rs.df = delta_full(p)[row0 + t];
        rs.ds = delta_sparse(p)[row0 + t];
        rs.sel = bits[int64_t(t) * words + first_block / 32] >> (first_block % 32);
      }
      sRow[st * kChunk + i] = rs;
    }
  };
  if (nwork > 0) load(0, 0);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  for (int w = 0; w < nwork; ++w) {
    if (w + 1 < nwork) load(w + 1, (w + 1) % kStages);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int st = w % kStages, r0 = (c_first + w % per_head) * kChunk;
    const T* tQ = sQ + st * kChunk * D;
    const T* tDf = sDf + st * kChunk * D;
    const T* tDs = sDs + st * kChunk * D;
    const RowScalars* rows_s = sRow + st * kChunk;
#pragma unroll
    for (int j = 0; j < kChunk / 16; ++j) {
      const int q16 = r0 + 16 * j;
      if (q16 + 15 < wk0 || q16 >= p.Tq) continue;  // all 16 queries before the warp's keys (warp-uniform)
      float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      mma_rows_tile_t<T, D>(s, ka, tQ + j * 16 * D, lane);  // S^T = K Q^T (keys x queries)
      float pf[2][4], ps[2][4];
      bool any = false;
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 16 * j + n * 8 + 2 * c + (e & 1);
          const RowScalars& rs = rows_s[col];
          const bool causal = key[e >> 1] <= r0 + col;
          const bool sel = (rs.sel >> wblock) & 1u;
          const float x = s[n][e] * scale_log2;
          pf[n][e] = causal ? fast_exp2(x - rs.lf) : 0.f;
          ps[n][e] = causal && sel ? fast_exp2(x - rs.ls) : 0.f;
          any |= sel;
        }
      const bool used = __any_sync(0xffffffffu, any);
      uint32_t a[4];
      pack_a<T>(a, pf);
      mma_p_tile<T, D>(dv, a, tDf + j * 16 * D, lane);  // dV += P_full^T dO_full
      float dp[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      mma_rows_tile_t<T, D>(dp, va, tDf + j * 16 * D, lane);  // dP_full^T = V dO_full^T
      float dsc[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dsc[n][e] = pf[n][e] * (dp[n][e] - rows_s[16 * j + n * 8 + 2 * c + (e & 1)].df);
      if (used) {
        pack_a<T>(a, ps);
        mma_p_tile<T, D>(dv, a, tDs + j * 16 * D, lane);  // dV += P_sparse^T dO_sparse
        float dps[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        mma_rows_tile_t<T, D>(dps, va, tDs + j * 16 * D, lane);  // dP_sparse^T = V dO_sparse^T
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            dsc[n][e] = fmaf(ps[n][e], dps[n][e] - rows_s[16 * j + n * 8 + 2 * c + (e & 1)].ds, dsc[n][e]);
      }
      pack_a<T>(a, dsc);
      mma_p_tile<T, D>(dk, a, tQ + j * 16 * D, lane);  // dK += dS^T Q
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  T* dkb = static_cast<T*>(p.dk) + b * p.dk_s.b + hk * p.dk_s.h;
  T* dvb = static_cast<T*>(p.dv) + b * p.dv_s.b + hk * p.dv_s.h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= p.Tq) continue;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int d = n * 8 + 2 * c;
      *reinterpret_cast<uint32_t*>(dkb + int64_t(key[r]) * p.dk_s.t + d) =
          TypeOf<T>::pack(dk[n][2 * r] * p.scale, dk[n][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dvb + int64_t(key[r]) * p.dv_s.t + d) = TypeOf<T>::pack(dv[n][2 * r], dv[n][2 * r + 1]);
    }
  }
}

}  // namespace

size_t dual_bwd_workspace_bytes(const DualBwdParams& p) {
  return 2 * rows(p) * sizeof(float) + size_t(p.B) * p.Hkv * p.Tq * bitmask_words(p) * sizeof(uint32_t);
}

std::string dual_bwd_supported(const DualBwdParams& p) {
  std::string e = check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
  if (e.empty()) e = check_whole_sequence(p.Tq, p.Tk, p.q_offset, "the fused dual-stream backward");
  if (!e.empty()) return e;
  if (!p.workspace) return "dual backward needs its workspace (dual_bwd_workspace_bytes)";
  return "";
}

std::string dual_bwd(const DualBwdParams& p_in, cudaStream_t stream) {
  std::string e = dual_bwd_supported(p_in);
  if (!e.empty()) return e;
  DualBwdParams p = p_in;
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(double(p.D)));
  const int words = bitmask_words(p);
  const size_t nbits = size_t(p.B) * p.Hkv * p.Tq * words;
  SSA_CUDA_CHECK(cudaMemsetAsync(row_bits(p), 0, nbits * sizeof(uint32_t), stream));
  const int64_t nsel = int64_t(p.B) * p.Hkv * p.Tq * p.top_k;
  dual_bits_kernel<<<int(std::min<int64_t>((nsel + 255) / 256, 65536)), 256, 0, stream>>>(p, row_bits(p), words);
  SSA_CUDA_CHECK(cudaGetLastError());
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      const int64_t n = int64_t(rows(p));
      dual_delta_kernel<T, D><<<int(std::min<int64_t>((n + 255) / 256, 65536)), 256, 0, stream>>>(
          p, delta_full(p), delta_sparse(p));
      SSA_CUDA_CHECK(cudaGetLastError());
      const int tiles = (p.Tq + kTile - 1) / kTile;
      const int smem_q = 2 * kStages * kChunk * D * 2;
      auto kq = dual_dq_kernel<T, D>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kq, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_q));
      kq<<<dim3(tiles, p.Hq, p.B), kThreads, smem_q, stream>>>(p, words);
      SSA_CUDA_CHECK(cudaGetLastError());
      const int smem_kv = 3 * kStages * kChunk * D * 2 + kStages * kChunk * int(sizeof(RowScalars));
      auto kkv = dual_dkv_kernel<T, D>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kkv, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_kv));
      kkv<<<dim3(tiles, p.Hkv, p.B), kThreads, smem_kv, stream>>>(p, words);
      SSA_CUDA_CHECK(cudaGetLastError());
    });
  });
  return "";
}

}  // namespace ssa
