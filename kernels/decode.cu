// Sparse decoding against a KV cache (decode.cuh says what and why).
#include <cfloat>
#include <algorithm>
#include <climits>

#include "common.cuh"
#include "decode.cuh"

namespace ssa {

namespace {

constexpr int kScoreThreads = 128;  // pooled blocks per CTA of decode_scores
constexpr int kWarps = 8;           // warps of decode_attend
constexpr int kMaxPicks = 127;      // K - 1 bound (selection slots after the own block)

__host__ __device__ inline int chunks_of(int nbc) { return (nbc + kScoreThreads - 1) / kScoreThreads; }

// Workspace: logits (B, Hkv, G, nbc), then per-CTA (max, sum) (B, Hkv, chunks, G, 2),
// then each chunk's best candidates (B, Hkv, chunks, kMaxPicks) as values and indices.
__host__ __device__ inline size_t logits_elems(const DecodeParams& p) {
  const int nbc = p.Tk / p.block_size;
  return size_t(p.B) * p.Hkv * (p.Hq / p.Hkv) * nbc;
}
__host__ __device__ inline size_t partial_elems(const DecodeParams& p) {
  return size_t(p.B) * p.Hkv * chunks_of(p.Tk / p.block_size) * (p.Hq / p.Hkv) * 2;
}
__host__ __device__ inline size_t candidate_elems(const DecodeParams& p) {
  return size_t(p.B) * p.Hkv * chunks_of(p.Tk / p.block_size) * kMaxPicks;
}

struct AttendSmem {  // byte offsets into decode_attend's dynamic shared memory
  size_t qs, stats, cand_val, cand_idx, sel, pbuf, kv, acc, total;
};
// K and V rows of a 32-key chunk per warp, padded 16 bytes so that lane i
// reading row i does not hit one bank.
__host__ __device__ inline int kv_row_bytes(int D) { return D * 2 + 16; }
__host__ __device__ inline AttendSmem attend_smem(int G, int D, int candidates, int K) {
  AttendSmem s{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    size_t at = o;
    o += (bytes + 15) / 16 * 16;
    return at;
  };
  s.qs = take(size_t(G) * D * 4);
  s.stats = take(size_t(G) * 2 * 4 + size_t(kWarps) * G * 3 * 4);  // M, Z; per warp m, l, factor
  s.cand_val = take(size_t(candidates) * 4);
  s.cand_idx = take(size_t(candidates) * 4);
  s.sel = take(size_t(K) * 4);
  s.pbuf = take(size_t(kWarps) * G * 32 * 4);
  s.kv = take(size_t(kWarps) * 2 * 32 * kv_row_bytes(D));
  s.acc = take(size_t(G) * D * 4);
  s.total = o;
  return s;
}

template <typename T, int D, int MAXG>
__global__ void __launch_bounds__(kScoreThreads) decode_scores(DecodeParams p) {
  extern __shared__ float smem[];
  const int b = blockIdx.z, g = blockIdx.y, chunk = blockIdx.x, G = p.Hq / p.Hkv;
  const int nbc = p.Tk / p.block_size, nchunks = gridDim.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float* qs = smem;                    // (G, D)
  float* red = qs + MAXG * D;          // (4 warps, MAXG)
  float* mx = red + 4 * MAXG;          // (MAXG)
  const float scale = p.scale > 0 ? p.scale : rsqrtf(float(D));
  const T* q = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(g) * G * p.q_s.h;
  for (int i = tid; i < G * D; i += blockDim.x) qs[i] = TypeOf<T>::to_float(q[(i / D) * p.q_s.h + i % D]);
  __syncthreads();
  const int j = chunk * kScoreThreads + tid;
  float s[MAXG];
#pragma unroll
  for (int h = 0; h < MAXG; ++h) s[h] = 0.f;
  if (j < nbc) {
    const float* kb = p.block_keys + b * p.kb_s.b + g * p.kb_s.h + int64_t(j) * p.kb_s.t;
#pragma unroll 4
    for (int d = 0; d < D; d += 4) {
      const float4 kv = *reinterpret_cast<const float4*>(kb + d);
#pragma unroll
      for (int h = 0; h < MAXG; ++h)
        if (h < G) {
          const float* qh = qs + h * D + d;
          s[h] += qh[0] * kv.x + qh[1] * kv.y + qh[2] * kv.z + qh[3] * kv.w;
        }
    }
  }
  float* logits = p.workspace + (int64_t(b) * p.Hkv + g) * G * nbc;
#pragma unroll
  for (int h = 0; h < MAXG; ++h)
    if (h < G) {
      s[h] *= scale;
      if (j < nbc) logits[int64_t(h) * nbc + j] = s[h];
      float m = j < nbc ? s[h] : -FLT_MAX;
      for (int off = 16; off; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
      if (lane == 0) red[warp * MAXG + h] = m;
    }
  __syncthreads();
  if (tid < G) mx[tid] = fmaxf(fmaxf(red[tid], red[MAXG + tid]), fmaxf(red[2 * MAXG + tid], red[3 * MAXG + tid]));
  __syncthreads();
#pragma unroll
  for (int h = 0; h < MAXG; ++h)
    if (h < G) {
      float e = j < nbc ? __expf(s[h] - mx[h]) : 0.f;
      for (int off = 16; off; off >>= 1) e += __shfl_xor_sync(0xffffffffu, e, off);
      if (lane == 0) red[warp * MAXG + h] = e;
    }
  __syncthreads();
  if (tid < G) {
    float* part = p.workspace + logits_elems(p) + ((int64_t(b) * p.Hkv + g) * nchunks + chunk) * G * 2;
    part[tid * 2] = mx[tid];
    part[tid * 2 + 1] = red[tid] + red[MAXG + tid] + red[2 * MAXG + tid] + red[3 * MAXG + tid];
  }
}

// (value desc, index asc): whether (va, ia) ranks before (vb, ib).
__device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}
__device__ __forceinline__ void warp_best(float& v, int& i) {
  for (int off = 16; off; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, off);
    const int oi = __shfl_xor_sync(0xffffffffu, i, off);
    if (ranks_before(ov, oi, v, i)) v = ov, i = oi;
  }
}

// Per chunk of 128 pooled blocks: the group-summed probability of each past
// block (the softmax normalised by every chunk's partial sums) and the
// chunk's best `picks` of them, in rank order, to the workspace.
template <int MAXG>
__global__ void __launch_bounds__(kScoreThreads) decode_pick(DecodeParams p) {
  __shared__ float Mh[MAXG], Zh[MAXG], best_v[4];
  __shared__ int best_i[4];
  const int b = blockIdx.z, g = blockIdx.y, chunk = blockIdx.x, G = p.Hq / p.Hkv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bs = p.block_size, own = (p.Tk - 1) / bs, nbc = p.Tk / bs, nchunks = gridDim.x;
  const int picks = min(p.top_k - 1, nbc);
  const int64_t group = int64_t(b) * p.Hkv + g;
  if (tid < G) {
    const float* part = p.workspace + logits_elems(p) + group * nchunks * G * 2;
    float m = -FLT_MAX;
    for (int c = 0; c < nchunks; ++c) m = fmaxf(m, part[(c * G + tid) * 2]);
    float z = 0.f;
    for (int c = 0; c < nchunks; ++c) z += part[(c * G + tid) * 2 + 1] * __expf(part[(c * G + tid) * 2] - m);
    Mh[tid] = m;
    Zh[tid] = z;
  }
  __syncthreads();
  const int j = chunk * kScoreThreads + tid;
  float prob = -1.f;  // -1: not a candidate (or taken)
  if (j < own) {
    const float* logits = p.workspace + group * G * nbc + j;
    float l[MAXG];
#pragma unroll
    for (int h = 0; h < MAXG; ++h) l[h] = h < G ? logits[int64_t(h) * nbc] : 0.f;  // all loads in flight
    prob = 0.f;
#pragma unroll
    for (int h = 0; h < MAXG; ++h)
      if (h < G) prob += __expf(l[h] - Mh[h]) / Zh[h];
  }
  float* cand_v = p.workspace + logits_elems(p) + partial_elems(p) + (group * nchunks + chunk) * kMaxPicks;
  int* cand_i = reinterpret_cast<int*>(cand_v + candidate_elems(p));
  for (int r = 0; r < picks; ++r) {
    float v = prob;
    int i = prob >= 0.f ? j : INT_MAX;
    warp_best(v, i);
    if (lane == 0) best_v[warp] = v, best_i[warp] = i;
    __syncthreads();
    float bv = best_v[0];
    int bi = best_i[0];
    for (int w = 1; w < 4; ++w)
      if (ranks_before(best_v[w], best_i[w], bv, bi)) bv = best_v[w], bi = best_i[w];
    if (tid == 0) cand_v[r] = bv >= 0.f ? bv : -1.f, cand_i[r] = bv >= 0.f ? bi : -1;
    if (bi == j) prob = -1.f;  // taken
    __syncthreads();
  }
}

template <typename T, int D, int MAXG>
__global__ void __launch_bounds__(kWarps * 32) decode_attend(DecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int E = D / 32;  // output elements per lane
  const int g = blockIdx.x, b = blockIdx.y, G = p.Hq / p.Hkv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bs = p.block_size, pos = p.Tk - 1, own = pos / bs, nbc = p.Tk / bs, K = p.top_k;
  const int picks = min(K - 1, nbc), nchunks = chunks_of(nbc), ncand = nchunks * picks;
  const AttendSmem L = attend_smem(G, D, ncand, K);
  float* qs = reinterpret_cast<float*>(smem_raw + L.qs);
  float* wm = reinterpret_cast<float*>(smem_raw + L.stats);  // (warps, G)
  float* wl = wm + kWarps * G;
  float* wf = wl + kWarps * G;
  float* cand_val = reinterpret_cast<float*>(smem_raw + L.cand_val);
  int* cand_idx = reinterpret_cast<int*>(smem_raw + L.cand_idx);
  int* sel = reinterpret_cast<int*>(smem_raw + L.sel);
  float* pbuf = reinterpret_cast<float*>(smem_raw + L.pbuf);  // (warps, G, 32)
  unsigned char* kv_tiles = smem_raw + L.kv;                   // (warps, K and V, 32 rows)
  float* acc_s = reinterpret_cast<float*>(smem_raw + L.acc);
  const float scale = p.scale > 0 ? p.scale : rsqrtf(float(D));
  const int64_t group = int64_t(b) * p.Hkv + g;

  const T* q = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(g) * G * p.q_s.h;
  for (int i = tid; i < G * D; i += blockDim.x) qs[i] = TypeOf<T>::to_float(q[(i / D) * p.q_s.h + i % D]);
  // the chunks' best candidates (decode_pick), merged: rounds of warp argmax
  {
    const float* cv = p.workspace + logits_elems(p) + partial_elems(p) + group * nchunks * kMaxPicks;
    const int* ci = reinterpret_cast<const int*>(p.workspace + logits_elems(p) + partial_elems(p) + candidate_elems(p)) +
                    group * nchunks * kMaxPicks;
    for (int c = tid; c < ncand; c += blockDim.x) {
      cand_val[c] = cv[(c / picks) * kMaxPicks + c % picks];
      cand_idx[c] = ci[(c / picks) * kMaxPicks + c % picks];
    }
  }
  __syncthreads();
  if (warp == 0) {
    if (lane == 0) sel[0] = own;
    for (int r = 0; r < picks; ++r) {
      float v = -1.f;
      int i = INT_MAX, at = -1;
      for (int c = lane; c < ncand; c += 32)
        if (cand_val[c] >= 0.f && ranks_before(cand_val[c], cand_idx[c], v, i)) v = cand_val[c], i = cand_idx[c], at = c;
      float bv = v;
      int bi = i;
      warp_best(bv, bi);
      if (at >= 0 && bv >= 0.f && bi == i) cand_val[at] = -1.f;  // the lane holding the winner marks it taken
      if (lane == 0) sel[1 + r] = bv >= 0.f ? bi : -1;
      __syncwarp();
    }
    for (int r = 1 + picks + lane; r < K; r += 32) sel[r] = -1;
  }
  __syncthreads();
  if (p.blocks && tid < K) p.blocks[(int64_t(b) * p.Hkv + g) * K + tid] = sel[tid];

  // 4. attention over the selected blocks: warp w takes slots w, w + 8, ...
  float m_run[MAXG], l_run[MAXG], acc[MAXG][E];
#pragma unroll
  for (int h = 0; h < MAXG; ++h) {
    m_run[h] = -FLT_MAX;
    l_run[h] = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[h][e] = 0.f;
  }
  const T* kbase = static_cast<const T*>(p.k) + b * p.k_s.b + g * p.k_s.h;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_s.b + g * p.v_s.h;
  float* pw = pbuf + warp * G * 32;
  const int RB = kv_row_bytes(D);
  unsigned char* kt = kv_tiles + warp * 2 * 32 * RB;  // this warp's K rows, then its V rows
  unsigned char* vt = kt + 32 * RB;
  for (int slot = warp; slot < K; slot += kWarps) {
    const int blk = sel[slot];
    if (blk < 0) continue;
    const int t_end = min(blk * bs + bs, pos + 1);
    for (int t0 = blk * bs; t0 < t_end; t0 += 32) {
      const int n = min(32, t_end - t0);
      // the chunk's K and V rows into this warp's tiles, every load in flight at once
      for (int c = lane; c < n * (D / 8); c += 32) {
        const int row = c / (D / 8), piece = c % (D / 8);
        cp_async16(kt + row * RB + piece * 16, kbase + int64_t(t0 + row) * p.k_s.t + piece * 8, true);
        cp_async16(vt + row * RB + piece * 16, vbase + int64_t(t0 + row) * p.v_s.t + piece * 8, true);
      }
      cp_async_commit();
      cp_async_wait<0>();
      __syncwarp();
      const bool valid = lane < n;
      float s[MAXG];
#pragma unroll
      for (int h = 0; h < MAXG; ++h) s[h] = 0.f;
      if (valid) {
        const unsigned char* krow = kt + lane * RB;
#pragma unroll 2
        for (int d = 0; d < D; d += 8) {
          const uint4 raw = *reinterpret_cast<const uint4*>(krow + d * 2);
          const float2 k01 = TypeOf<T>::unpack(raw.x), k23 = TypeOf<T>::unpack(raw.y),
                       k45 = TypeOf<T>::unpack(raw.z), k67 = TypeOf<T>::unpack(raw.w);
#pragma unroll
          for (int h = 0; h < MAXG; ++h)
            if (h < G) {
              const float4 qa = *reinterpret_cast<const float4*>(qs + h * D + d);
              const float4 qb = *reinterpret_cast<const float4*>(qs + h * D + d + 4);
              s[h] += qa.x * k01.x + qa.y * k01.y + qa.z * k23.x + qa.w * k23.y + qb.x * k45.x + qb.y * k45.y +
                      qb.z * k67.x + qb.w * k67.y;
            }
        }
      }
#pragma unroll
      for (int h = 0; h < MAXG; ++h)
        if (h < G) {
          const float sv = valid ? s[h] * scale : -FLT_MAX;
          float cm = sv;
          for (int off = 16; off; off >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
          const float m_new = fmaxf(m_run[h], cm);
          const float alpha = __expf(m_run[h] - m_new);
          const float pr = valid ? __expf(sv - m_new) : 0.f;
          l_run[h] = l_run[h] * alpha + pr;
#pragma unroll
          for (int e = 0; e < E; ++e) acc[h][e] *= alpha;
          m_run[h] = m_new;
          pw[h * 32 + lane] = pr;
        }
      __syncwarp();
      for (int kk = 0; kk < n; ++kk) {
        const unsigned char* vrow = vt + kk * RB + lane * E * 2;
        float vv[E];
        if constexpr (E == 2) {
          const float2 x = TypeOf<T>::unpack(*reinterpret_cast<const uint32_t*>(vrow));
          vv[0] = x.x, vv[1] = x.y;
        } else {
          const uint2 raw = *reinterpret_cast<const uint2*>(vrow);
          const float2 x = TypeOf<T>::unpack(raw.x), y = TypeOf<T>::unpack(raw.y);
          vv[0] = x.x, vv[1] = x.y, vv[2] = y.x, vv[3] = y.y;
        }
#pragma unroll
        for (int h = 0; h < MAXG; ++h)
          if (h < G) {
            const float ph = pw[h * 32 + kk];
#pragma unroll
            for (int e = 0; e < E; ++e) acc[h][e] += ph * vv[e];
          }
      }
      __syncwarp();
    }
  }
  // 5. the warps' partial outputs, combined in warp order
#pragma unroll
  for (int h = 0; h < MAXG; ++h)
    if (h < G) {
      float l = l_run[h];
      for (int off = 16; off; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
      if (lane == 0) wm[warp * G + h] = m_run[h], wl[warp * G + h] = l;
    }
  for (int i = tid; i < G * D; i += blockDim.x) acc_s[i] = 0.f;
  __syncthreads();
  if (tid < G) {
    float m = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, wm[w * G + tid]);
    float total = 0.f;
    for (int w = 0; w < kWarps; ++w) total += wl[w * G + tid] * __expf(wm[w * G + tid] - m);
    for (int w = 0; w < kWarps; ++w) wf[w * G + tid] = wl[w * G + tid] > 0.f ? __expf(wm[w * G + tid] - m) / total : 0.f;
  }
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int h = 0; h < MAXG; ++h)
        if (h < G)
#pragma unroll
          for (int e = 0; e < E; ++e) acc_s[h * D + lane * E + e] += acc[h][e] * wf[w * G + h];
    }
    __syncthreads();
  }
  T* o = static_cast<T*>(p.o) + b * p.o_s.b + int64_t(g) * G * p.o_s.h;
  for (int i = tid; i < G * D; i += blockDim.x) o[(i / D) * p.o_s.h + i % D] = TypeOf<T>::from_float(acc_s[i]);
}

// The most dynamic shared memory a CTA may take on this GPU (asked once).
int shared_memory_optin() {
  static int optin = [] {
    int device = 0, bytes = 48 << 10;
    if (cudaGetDevice(&device) == cudaSuccess)
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    return bytes;
  }();
  return optin;
}

template <typename T, int D, int MAXG>
std::string launch(const DecodeParams& p, cudaStream_t stream) {
  const int G = p.Hq / p.Hkv, nbc = p.Tk / p.block_size;
  if (nbc > 0) {
    const size_t smem = (size_t(MAXG) * D + 5 * MAXG) * sizeof(float);
    decode_scores<T, D, MAXG><<<dim3(chunks_of(nbc), p.Hkv, p.B), kScoreThreads, smem, stream>>>(p);
    SSA_CUDA_CHECK(cudaGetLastError());
  }
  const int picks = std::min(p.top_k - 1, nbc);
  if (picks > 0) {
    decode_pick<MAXG><<<dim3(chunks_of(nbc), p.Hkv, p.B), kScoreThreads, 0, stream>>>(p);
    SSA_CUDA_CHECK(cudaGetLastError());
  }
  const AttendSmem L = attend_smem(G, D, chunks_of(nbc) * picks, p.top_k);
  auto kernel = decode_attend<T, D, MAXG>;
  static bool opted_in = false;  // once per instantiation: as much shared memory as the GPU allows
  if (!opted_in) {
    SSA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_memory_optin()));
    opted_in = true;
  }
  kernel<<<dim3(p.Hkv, p.B), kWarps * 32, L.total, stream>>>(p);
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

template <typename T, int D>
std::string launch_g(const DecodeParams& p, cudaStream_t stream) {
  const int G = p.Hq / p.Hkv;
  if (G <= 8) return launch<T, D, 8>(p, stream);
  if (G <= 16) return launch<T, D, 16>(p, stream);
  if constexpr (D == 64) return launch<T, D, 32>(p, stream);
  return "unreachable: decode_supported() refuses G x D above 2048";
}

template <typename T>
std::string launch_d(const DecodeParams& p, cudaStream_t stream) {
  return p.D == 64 ? launch_g<T, 64>(p, stream) : launch_g<T, 128>(p, stream);
}

}  // namespace

size_t decode_workspace_bytes(const DecodeParams& p) {
  const int nbc = p.block_size > 0 ? p.Tk / p.block_size : 0;
  const int G = p.Hkv > 0 ? p.Hq / p.Hkv : 0;
  (void)nbc, (void)G;
  return (logits_elems(p) + partial_elems(p) + 2 * candidate_elems(p)) * sizeof(float);
}

std::string decode_supported(const DecodeParams& p) {
  std::string why = check_common(p.B, p.Hq, p.Hkv, 1, p.Tk, p.Tk - 1, p.D, p.block_size, p.top_k);
  if (!why.empty()) return why;
  const int G = p.Hq / p.Hkv;
  if (G * p.D > 2048) return "the decode kernel keeps G x D <= 2048 accumulators per CTA (GQA ratio " +
                             std::to_string(G) + " at head dim " + std::to_string(p.D) + ")";
  if (p.top_k - 1 > kMaxPicks) return "the decode kernel selects at most " + std::to_string(kMaxPicks + 1) + " blocks";
  const int optin = shared_memory_optin();
  const int nbc = p.Tk / p.block_size;
  const size_t need = attend_smem(G, p.D, chunks_of(nbc) * std::min(p.top_k - 1, nbc), p.top_k).total;
  if (need > size_t(optin))
    return "the decode kernel keeps every chunk's candidate blocks in shared memory: " + std::to_string(need) +
           " bytes at " + std::to_string(p.Tk) + " tokens and block size " + std::to_string(p.block_size) +
           ", more than this GPU's " + std::to_string(optin);
  return "";
}

std::string decode_attention(const DecodeParams& p, cudaStream_t stream) {
  std::string why = decode_supported(p);
  if (!why.empty()) return why;
  if (!p.q || !p.k || !p.v || !p.o || !p.workspace || (!p.block_keys && p.Tk >= p.block_size))
    return "decode_attention: a null pointer among q, k, v, o, workspace, block_keys";
  return p.dtype == DType::bf16 ? launch_d<__nv_bfloat16>(p, stream) : launch_d<__half>(p, stream);
}

}  // namespace ssa
