// Sparse decoding against a KV cache (decode.cuh says what and why).
#include <cfloat>
#include <climits>

#include "common.cuh"
#include "decode.cuh"

namespace ssa {

namespace {

constexpr int kScoreThreads = 128;  // pooled blocks per CTA of decode_scores
constexpr int kWarps = 8;           // warps of decode_attend
constexpr int kMaxPicks = 127;      // K - 1 bound (selection slots after the own block)

__host__ __device__ inline int chunks_of(int nbc) { return (nbc + kScoreThreads - 1) / kScoreThreads; }

// Workspace: logits (B, Hkv, G, nbc) then per-CTA (max, sum) (B, Hkv, chunks, G, 2).
__host__ __device__ inline size_t logits_elems(const DecodeParams& p) {
  const int nbc = p.Tk / p.block_size;
  return size_t(p.B) * p.Hkv * (p.Hq / p.Hkv) * nbc;
}

struct AttendSmem {  // byte offsets into decode_attend's dynamic shared memory
  size_t qs, stats, prob, cand_val, cand_idx, sel, pbuf, acc, total;
};
__host__ __device__ inline AttendSmem attend_smem(int G, int D, int own, int K) {
  AttendSmem s{};
  size_t o = 0;
  auto take = [&](size_t bytes) {
    size_t at = o;
    o += (bytes + 15) / 16 * 16;
    return at;
  };
  s.qs = take(size_t(G) * D * 4);
  s.stats = take(size_t(G) * 2 * 4 + size_t(kWarps) * G * 3 * 4);  // M, Z; per warp m, l, factor
  s.prob = take(size_t(own) * 4);
  s.cand_val = take(size_t(kWarps) * kMaxPicks * 4);
  s.cand_idx = take(size_t(kWarps) * kMaxPicks * 4);
  s.sel = take(size_t(K) * 4);
  s.pbuf = take(size_t(kWarps) * G * 32 * 4);
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

template <typename T, int D, int MAXG>
__global__ void __launch_bounds__(kWarps * 32) decode_attend(DecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int E = D / 32;  // output elements per lane
  const int g = blockIdx.x, b = blockIdx.y, G = p.Hq / p.Hkv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bs = p.block_size, pos = p.Tk - 1, own = pos / bs, nbc = p.Tk / bs, K = p.top_k;
  const int picks = min(K - 1, nbc), nchunks = chunks_of(nbc);
  const AttendSmem L = attend_smem(G, D, own, K);
  float* qs = reinterpret_cast<float*>(smem_raw + L.qs);
  float* Mh = reinterpret_cast<float*>(smem_raw + L.stats);
  float* Zh = Mh + G;
  float* wm = Zh + G;               // (warps, G)
  float* wl = wm + kWarps * G;
  float* wf = wl + kWarps * G;
  float* prob = reinterpret_cast<float*>(smem_raw + L.prob);
  float* cand_val = reinterpret_cast<float*>(smem_raw + L.cand_val);
  int* cand_idx = reinterpret_cast<int*>(smem_raw + L.cand_idx);
  int* sel = reinterpret_cast<int*>(smem_raw + L.sel);
  float* pbuf = reinterpret_cast<float*>(smem_raw + L.pbuf);  // (warps, G, 32)
  float* acc_s = reinterpret_cast<float*>(smem_raw + L.acc);
  const float scale = p.scale > 0 ? p.scale : rsqrtf(float(D));

  const T* q = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(g) * G * p.q_s.h;
  for (int i = tid; i < G * D; i += blockDim.x) qs[i] = TypeOf<T>::to_float(q[(i / D) * p.q_s.h + i % D]);
  // 1. the softmax per head over the complete blocks, from the CTAs' partial sums
  if (tid < G && nbc > 0) {
    const float* part = p.workspace + logits_elems(p) + (int64_t(b) * p.Hkv + g) * nchunks * G * 2;
    float m = -FLT_MAX;
    for (int c = 0; c < nchunks; ++c) m = fmaxf(m, part[(c * G + tid) * 2]);
    float z = 0.f;
    for (int c = 0; c < nchunks; ++c) z += part[(c * G + tid) * 2 + 1] * __expf(part[(c * G + tid) * 2] - m);
    Mh[tid] = m;
    Zh[tid] = z;
  }
  __syncthreads();
  // 2. group-summed probabilities of the past blocks (the candidates)
  if (picks > 0) {
    const float* logits = p.workspace + (int64_t(b) * p.Hkv + g) * G * nbc;
    for (int j = tid; j < own; j += blockDim.x) {
      float sum = 0.f;
      for (int h = 0; h < G; ++h) sum += __expf(logits[int64_t(h) * nbc + j] - Mh[h]) / Zh[h];
      prob[j] = sum;
    }
  }
  __syncthreads();
  // 3. top `picks` of them: each warp its slice, then warp 0 over the warps' picks
  const int slice = (own + kWarps - 1) / kWarps;
  const int lo = min(own, warp * slice), hi = min(own, lo + slice);
  for (int r = 0; r < picks; ++r) {
    float v = -1.f;
    int i = INT_MAX;
    for (int j = lo + lane; j < hi; j += 32)
      if (prob[j] >= 0.f && ranks_before(prob[j], j, v, i)) v = prob[j], i = j;
    warp_best(v, i);
    if (lane == 0) {
      cand_val[warp * kMaxPicks + r] = v;
      cand_idx[warp * kMaxPicks + r] = i;
      if (v >= 0.f) prob[i] = -1.f;  // taken
    }
    __syncwarp();
  }
  __syncthreads();
  if (warp == 0) {
    if (lane == 0) sel[0] = own;
    for (int r = 0; r < picks; ++r) {
      float v = -1.f;
      int i = INT_MAX, at = -1;
      for (int c = lane; c < kWarps * picks; c += 32) {
        const int w = c / picks, rr = c % picks;
        const float cv = cand_val[w * kMaxPicks + rr];
        const int ci = cand_idx[w * kMaxPicks + rr];
        if (cv >= 0.f && ranks_before(cv, ci, v, i)) v = cv, i = ci, at = c;
      }
      // the lane holding the winner marks it taken
      float bv = v;
      int bi = i;
      warp_best(bv, bi);
      if (at >= 0 && bi == i && bv == v && bv >= 0.f) cand_val[(at / picks) * kMaxPicks + at % picks] = -1.f;
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
  for (int slot = warp; slot < K; slot += kWarps) {
    const int blk = sel[slot];
    if (blk < 0) continue;
    const int t_end = min(blk * bs + bs, pos + 1);
    for (int t0 = blk * bs; t0 < t_end; t0 += 32) {
      const int key = t0 + lane;
      const bool valid = key < t_end;
      float s[MAXG];
#pragma unroll
      for (int h = 0; h < MAXG; ++h) s[h] = 0.f;
      if (valid) {
        const T* krow = kbase + int64_t(key) * p.k_s.t;
#pragma unroll 2
        for (int d = 0; d < D; d += 8) {
          const uint4 raw = *reinterpret_cast<const uint4*>(krow + d);
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
      const int n = min(32, t_end - t0);
      for (int kk = 0; kk < n; ++kk) {
        const T* vrow = vbase + int64_t(t0 + kk) * p.v_s.t + lane * E;
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

template <typename T, int D, int MAXG>
std::string launch(const DecodeParams& p, cudaStream_t stream) {
  const int G = p.Hq / p.Hkv, nbc = p.Tk / p.block_size, own = (p.Tk - 1) / p.block_size;
  if (nbc > 0) {
    const size_t smem = (size_t(MAXG) * D + 5 * MAXG) * sizeof(float);
    decode_scores<T, D, MAXG><<<dim3(chunks_of(nbc), p.Hkv, p.B), kScoreThreads, smem, stream>>>(p);
    SSA_CUDA_CHECK(cudaGetLastError());
  }
  const AttendSmem L = attend_smem(G, D, own, p.top_k);
  auto kernel = decode_attend<T, D, MAXG>;
  SSA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(L.total)));
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
  return (logits_elems(p) + size_t(p.B) * p.Hkv * chunks_of(nbc) * G * 2) * sizeof(float);
}

std::string decode_supported(const DecodeParams& p) {
  std::string why = check_common(p.B, p.Hq, p.Hkv, 1, p.Tk, p.Tk - 1, p.D, p.block_size, p.top_k);
  if (!why.empty()) return why;
  const int G = p.Hq / p.Hkv;
  if (G * p.D > 2048) return "the decode kernel keeps G x D <= 2048 accumulators per CTA (GQA ratio " +
                             std::to_string(G) + " at head dim " + std::to_string(p.D) + ")";
  if (p.top_k - 1 > kMaxPicks) return "the decode kernel selects at most " + std::to_string(kMaxPicks + 1) + " blocks";
  int device = 0, optin = 0;
  SSA_CUDA_CHECK(cudaGetDevice(&device));
  SSA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t need = attend_smem(G, p.D, (p.Tk - 1) / p.block_size, p.top_k).total;
  if (need > size_t(optin))
    return "the decode kernel keeps a score per block of the context in shared memory: " + std::to_string(need) +
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
