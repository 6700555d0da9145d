// Sparse decoding against a KV cache (decode.cuh says what and why).
#include <cfloat>
#include <algorithm>
#include <climits>
#include <cstdlib>

#include "common.cuh"
#include "decode.cuh"
#include "select.cuh"  // kNsaChunkBlocks

namespace ssa {

namespace {

constexpr int kScoreThreads = 128;  // pooled blocks per CTA of decode_scores
constexpr int kWarps = 8;           // warps of decode_attend
constexpr int kMaxPicks = 127;      // K - 1 bound (selection slots after the own block)

__host__ __device__ inline int chunks_of(int nbc) { return (nbc + kScoreThreads - 1) / kScoreThreads; }

// decode_pick and decode_attend are launched as programmatic dependents of the
// kernel before them (launch_dependent below): they may start while it drains
// and wait here, before reading what it wrote.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Workspace: logits (B, Hkv, G, nbc) with rows of logit_stride, then per-CTA
// (max, sum) (B, Hkv, G, chunks, 2), then each chunk's best candidates
// (B, Hkv, chunks, kMaxPicks) as values and indices, then each group's
// normalisers (B, Hkv, kMaxGroup, 2) when decode_normalise runs.
// A logit row's stride is even, so that decode_scores stores each lane's two
// neighbouring logits as one float2: a quad then fills whole 32-byte sectors
// (single floats left every other 4 bytes of a sector unwritten).
// Block sizes are powers of two (check_common): positions divide by a shift.
// (An integer division by a runtime value is some 20 instructions; decode_pick
// ran 13 of them per thread, measured ALU-bound at 128K x 32.)
__host__ __device__ inline int log2_block(int block_size) {
#ifdef __CUDA_ARCH__
  return __ffs(block_size) - 1;
#else
  return __builtin_ctz(unsigned(block_size));
#endif
}
__host__ __device__ inline int complete_blocks(const DecodeParams& p) { return p.Tk >> log2_block(p.block_size); }
__host__ __device__ inline int own_block(const DecodeParams& p) { return (p.Tk - 1) >> log2_block(p.block_size); }
__host__ __device__ inline int logit_stride(const DecodeParams& p) { return (complete_blocks(p) + 3) / 4 * 4; }
__host__ __device__ inline size_t logits_elems(const DecodeParams& p) {  // a multiple of 4: the partials are read as float2
  return size_t(p.B) * p.Hkv * (p.Hq / p.Hkv) * logit_stride(p);
}
__host__ __device__ inline size_t partial_elems(const DecodeParams& p) {
  return size_t(p.B) * p.Hkv * chunks_of(complete_blocks(p)) * (p.Hq / p.Hkv) * 2;
}
__host__ __device__ inline size_t candidate_elems(const DecodeParams& p) {
  return size_t(p.B) * p.Hkv * chunks_of(complete_blocks(p)) * kMaxPicks;
}
// decode_normalise's output: per group, kMaxGroup (max, 1 / sum) pairs
constexpr int kMaxGroup = 32;  // the largest MAXG a launch takes (launch_g)
__host__ __device__ inline size_t normaliser_elems(const DecodeParams& p) { return size_t(p.B) * p.Hkv * kMaxGroup * 2; }

struct AttendSmem {  // byte offsets into decode_attend's dynamic shared memory
  size_t qs, stats, cand_key, head_key, next_cand, sel, pbuf, kv, acc, total;
};
// K and V rows of a 32-key chunk per warp, padded 16 bytes so that lane i
// reading row i does not hit one bank.
__host__ __device__ inline int kv_row_bytes(int D) { return D * 2 + 16; }
// Byte offsets of a kernel's shared-memory regions, taken in order, each
// rounded up to 16 bytes.
struct SmemCarver {
  size_t used = 0;
  __host__ __device__ size_t take(size_t bytes) {
    const size_t at = used;
    used += (bytes + 15) / 16 * 16;
    return at;
  }
};
__host__ __device__ inline AttendSmem attend_smem(int G, int D, int chunks, int candidates, int K) {
  AttendSmem s{};
  SmemCarver smem;
  s.qs = smem.take(size_t(G) * D * 4);
  s.stats = smem.take(size_t(G) * 2 * 4 + size_t(kWarps) * G * 3 * 4);  // M, Z; per warp m, l, factor
  s.cand_key = smem.take(size_t(candidates) * 8);
  s.head_key = smem.take(size_t(chunks) * 2 * 8);   // two lists per chunk under the nsa-chunked rule
  s.next_cand = smem.take(size_t(chunks) * 2 * 4);
  s.sel = smem.take(size_t(K) * 4);
  s.pbuf = smem.take(size_t(kWarps) * G * 32 * 4);
  s.kv = smem.take(size_t(kWarps) * 2 * 32 * kv_row_bytes(D));
  s.acc = smem.take(size_t(G) * D * 4);
  s.total = smem.used;
  return s;
}

// The three 16-bit terms of two fp32 values (hi + mid + lo == x to ~24 bits),
// packed in pairs as an MMA operand wants them: a 16-bit q times a term is
// exact in the fp32 accumulator, so q . kbar comes out at fp32 accuracy (as in
// select.cu, which splits kbar once per call; here the pooled keys are read once
// per step, so they are split as they are loaded).
template <typename T>
__device__ __forceinline__ void split_terms(float a, float b, uint32_t (&terms)[3]) {
  const float ha = TypeOf<T>::to_float(TypeOf<T>::from_float(a)), hb = TypeOf<T>::to_float(TypeOf<T>::from_float(b));
  const float ra = a - ha, rb = b - hb;
  const float ma = TypeOf<T>::to_float(TypeOf<T>::from_float(ra)), mb = TypeOf<T>::to_float(TypeOf<T>::from_float(rb));
  terms[0] = TypeOf<T>::pack(ha, hb);
  terms[1] = TypeOf<T>::pack(ma, mb);
  terms[2] = TypeOf<T>::pack(ra - ma, rb - mb);
}

// Two query elements (d, d + 1) of head h as one packed operand, 0 past the group.
template <typename T>
__device__ __forceinline__ uint32_t q_pair(const T* q, int64_t head_stride, int h, int G, int d) {
  if (h >= G) return 0u;
  return *reinterpret_cast<const uint32_t*>(q + h * head_stride + d);
}

// L2 eviction priorities for the selection's two big streams (sm_80+): the
// pooled keys are read once a step, the logits written by decode_scores and
// read back by decode_pick right after (32 MB at 128K x 32 d64 block 16, in
// an L2 of 50 MB). With `hints` the keys go first and the logits stay; without,
// both are the L2's normal priority, as plain loads and stores. Where it won
// the hinted loads also took more registers and were scheduled earlier; which
// of the two made d128 faster was not separated.
struct L2Policies {
  uint64_t keys, logits_write, logits_read;
};
enum class L2Priority { Normal, EvictFirst, EvictLast };
__device__ __forceinline__ uint64_t l2_policy(L2Priority priority) {
  uint64_t policy;
  if (priority == L2Priority::EvictFirst) {
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  } else if (priority == L2Priority::EvictLast) {
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  } else {
    asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  }
  return policy;
}
__device__ __forceinline__ L2Policies l2_policies(bool hints) {
  if (!hints) {
    const uint64_t normal = l2_policy(L2Priority::Normal);
    return L2Policies{normal, normal, normal};
  }
  const uint64_t first = l2_policy(L2Priority::EvictFirst);
  return L2Policies{first, l2_policy(L2Priority::EvictLast), first};
}
__device__ __forceinline__ uint2 load_hinted(const uint2* at, uint64_t policy) {
  uint2 v;
  asm("ld.global.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;" : "=r"(v.x), "=r"(v.y) : "l"(at), "l"(policy));
  return v;
}
__device__ __forceinline__ float4 load_hinted(const float4* at, uint64_t policy) {
  float4 v;
  asm("ld.global.L2::cache_hint.v4.f32 {%0, %1, %2, %3}, [%4], %5;"
      : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
      : "l"(at), "l"(policy));
  return v;
}
__device__ __forceinline__ float load_hinted(const float* at, uint64_t policy) {
  float v;
  asm("ld.global.L2::cache_hint.f32 %0, [%1], %2;" : "=f"(v) : "l"(at), "l"(policy));
  return v;
}
__device__ __forceinline__ void store_hinted(float2* at, float2 v, uint64_t policy) {
  asm volatile("st.global.L2::cache_hint.v2.f32 [%0], {%1, %2}, %3;" ::"l"(at), "f"(v.x), "f"(v.y), "l"(policy)
               : "memory");
}

// A plain load, or one with an L2 policy (HINTED)
template <bool HINTED, typename V>
__device__ __forceinline__ V load_maybe_hinted(const V* at, uint64_t policy) {
  if constexpr (HINTED) return load_hinted(at, policy);
  return *at;
}

// A lane's 4 consecutive elements from column `col` of pooled block j (V: uint2
// of bf16 keys), zeros past the complete blocks.
template <typename V, bool HINTED, typename E>
__device__ __forceinline__ V load_pooled(const E* kb, int64_t row_stride, int j, int nbc, int col,
                                        uint64_t policy) {
  const E* row = kb + int64_t(min(j, nbc - 1)) * row_stride + col;
  return j < nbc ? load_maybe_hinted<HINTED>(reinterpret_cast<const V*>(row), policy) : V{};
}

// Scores on the tensor cores: S (16 heads x 8 blocks) = q (16 x D) . kbar^T
// per mma, each of the 4 warps over 32 pooled blocks, MT tiles of 16 heads.
// KB16: kbar is bf16 (DecodeParams::block_keys_bf16, PooledKeys::Bf16), one term.
// L2HINTS: the pooled keys read with evict-first, the logits written with
// evict-last (L2Policies; decode_l2_hints says when).
template <typename T, int D, int MT, bool KB16 = false, bool L2HINTS = false>
__global__ void __launch_bounds__(kScoreThreads) decode_scores(DecodeParams p) {
  constexpr int kWarpsPerCta = kScoreThreads / 32, kTiles = 4;  // 4 n-tiles of 8 blocks per warp
  __shared__ float red[kWarpsPerCta][MT * 16], mx[MT * 16];
  const int b = blockIdx.z, g = blockIdx.y, chunk = blockIdx.x, G = p.Hq / p.Hkv;
  const int nbc = complete_blocks(p), nchunks = gridDim.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, quad = lane >> 2, pair = (lane & 3) * 2;
  const float scale = p.scale > 0 ? p.scale : rsqrtf(float(D));
  const L2Policies l2 = L2HINTS ? l2_policies(true) : L2Policies{};
  const T* q = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(g) * G * p.q_s.h;
  // The dot product does not care which d sits in which k slot of the mma, so
  // lane t of a quad takes d = 4t .. 4t + 3 of each 16 as k = 2t, 2t + 1 and
  // 2t + 8, 2t + 9: one 16-byte load of a pooled key row per k-step and tile.
  uint32_t qa[MT][D / 16][4];  // A fragments: rows are the group's heads
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const int h = mt * 16 + quad, d = ks * 16 + pair * 2;
      qa[mt][ks][0] = q_pair(q, p.q_s.h, h, G, d);
      qa[mt][ks][1] = q_pair(q, p.q_s.h, h + 8, G, d);
      qa[mt][ks][2] = q_pair(q, p.q_s.h, h, G, d + 2);
      qa[mt][ks][3] = q_pair(q, p.q_s.h, h + 8, G, d + 2);
    }
  const int row0 = chunk * kScoreThreads + warp * 32;
  float c[MT][kTiles][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) c[mt][nt][0] = c[mt][nt][1] = c[mt][nt][2] = c[mt][nt][3] = 0.f;
  const float* kb = p.block_keys + b * p.kb_s.b + g * p.kb_s.h;
  constexpr int kStep = D == 64 ? D / 16 : D / 32;  // k-steps whose loads are in flight together
  if constexpr (KB16) {
    // a lane's 4 d of a k-step are 8 bytes of bf16: the two packed pairs of its B fragment as loaded
    const uint16_t* kb16 = static_cast<const uint16_t*>(p.block_keys_bf16) + b * p.kb_s.b + g * p.kb_s.h;
#pragma unroll
    for (int ks0 = 0; ks0 < D / 16; ks0 += kStep) {
      uint2 x[kStep][kTiles];
#pragma unroll
      for (int u = 0; u < kStep; ++u)
#pragma unroll
        for (int nt = 0; nt < kTiles; ++nt)
          x[u][nt] = load_pooled<uint2, L2HINTS>(kb16, p.kb_s.t, row0 + nt * 8 + quad, nbc, (ks0 + u) * 16 + pair * 2,
                                                   l2.keys);
#pragma unroll
      for (int u = 0; u < kStep; ++u)
#pragma unroll
        for (int nt = 0; nt < kTiles; ++nt)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) mma16816<T>(c[mt][nt], qa[mt][ks0 + u], x[u][nt].x, x[u][nt].y);
    }
  } else {
#pragma unroll
    for (int ks0 = 0; ks0 < D / 16; ks0 += kStep) {
      float4 x[kStep][kTiles];  // B fragments: kbar rows (blocks) x d
#pragma unroll
      for (int u = 0; u < kStep; ++u)
#pragma unroll
        for (int nt = 0; nt < kTiles; ++nt) {  // (not load_pooled: that moved the d128 kernels' registers, 106 -> 90, untimed)
          const int j = row0 + nt * 8 + quad;
          const float* row = kb + int64_t(min(j, nbc - 1)) * p.kb_s.t + (ks0 + u) * 16 + pair * 2;
          x[u][nt] = j < nbc ? load_maybe_hinted<L2HINTS>(reinterpret_cast<const float4*>(row), l2.keys)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
      for (int u = 0; u < kStep; ++u)
#pragma unroll
        for (int nt = 0; nt < kTiles; ++nt) {
          uint32_t b0[3], b1[3];
          split_terms<T>(x[u][nt].x, x[u][nt].y, b0);
          split_terms<T>(x[u][nt].z, x[u][nt].w, b1);
#pragma unroll
          for (int part = 2; part >= 0; --part)  // small terms first
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) mma16816<T>(c[mt][nt], qa[mt][ks0 + u], b0[part], b1[part]);
        }
    }
  }
  // logits to the workspace; the CTA's per-head max, then sum of exponentials
  const int stride = logit_stride(p);
  float* logits = p.workspace + (int64_t(b) * p.Hkv + g) * G * stride;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h = mt * 16 + quad + half * 8;
      float m = -FLT_MAX;
#pragma unroll
      for (int nt = 0; nt < kTiles; ++nt) {
        const int j = row0 + nt * 8 + pair;  // even; j + 1 falls in the row's padding past nbc
        float& s0 = c[mt][nt][half * 2];
        float& s1 = c[mt][nt][half * 2 + 1];
        s0 *= scale;
        s1 *= scale;
        if (h < G && j < nbc) {
          float2* at = reinterpret_cast<float2*>(logits + int64_t(h) * stride + j);
          if constexpr (L2HINTS) {
            store_hinted(at, make_float2(s0, s1), l2.logits_write);
          } else {
            *at = make_float2(s0, s1);
          }
        }
        if (j < nbc) m = fmaxf(m, s0);
        if (j + 1 < nbc) m = fmaxf(m, s1);
      }
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      if ((lane & 3) == 0) red[warp][h] = m;
    }
  __syncthreads();
  if (tid < MT * 16) {
    float m = red[0][tid];
    for (int w = 1; w < kWarpsPerCta; ++w) m = fmaxf(m, red[w][tid]);
    mx[tid] = m;
  }
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h = mt * 16 + quad + half * 8;
      float z = 0.f;
#pragma unroll
      for (int nt = 0; nt < kTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (row0 + nt * 8 + pair + e < nbc) z += __expf(c[mt][nt][half * 2 + e] - mx[h]);
      z += __shfl_xor_sync(0xffffffffu, z, 1);
      z += __shfl_xor_sync(0xffffffffu, z, 2);
      if ((lane & 3) == 0) red[warp][h] = z;
    }
  __syncthreads();
  if (tid < G) {
    float z = 0.f;
    for (int w = 0; w < kWarpsPerCta; ++w) z += red[w][tid];
    float* part = p.workspace + logits_elems(p) + (((int64_t(b) * p.Hkv + g) * G + tid) * nchunks + chunk) * 2;
    part[0] = mx[tid];
    part[1] = z;
  }
}

// The candidate lists of a step. The exact rule keeps one list per chunk of
// 128 blocks: its best `picks`. The nsa-chunked rule keeps two, the blocks
// before `split` (the completed K-block chunks) and those from it on (the
// own block's chunk), with `quota[0]` and `quota[1]` slots; the second list
// starts at slot quota[0] of the chunk's `picks`.
struct CandidateLists {
  int lists = 1, split = INT_MAX, quota[2] = {0, 0};
  __host__ __device__ int list_of(int j) const { return j >= split ? 1 : 0; }
  __host__ __device__ int start(int list) const { return list ? quota[0] : 0; }
  __host__ __device__ int quota_of(int list) const { return list ? quota[1] : quota[0]; }  // no dynamic index
};
__host__ __device__ inline CandidateLists candidate_lists(const DecodeParams& p) {
  const int own = own_block(p), nbc = complete_blocks(p), K = p.top_k;
  CandidateLists c;
  c.quota[0] = K - 1 < nbc ? K - 1 : nbc;
  if (p.nsa_chunked && K >= kNsaChunkBlocks && own >= K) {  // past the first chunk (then nbc >= K)
    c.lists = 2;
    c.split = own / K * K;
    c.quota[0] = K / 2;
    c.quota[1] = K - K / 2 - 1;
  }
  return c;
}

// A candidate (probability, block) as a 64-bit key that orders as the rank
// does (value desc, index asc), larger first; 0 for an empty slot (value < 0).
__device__ __forceinline__ unsigned long long candidate_key(float value, int block) {
  return value >= 0.f ? (static_cast<unsigned long long>(__float_as_uint(value) + 1u) << 32) | ~unsigned(block) : 0ull;
}

// What decode_pick needs of a step's shape, worked out once on the host: a
// division by a runtime value or a 64-bit product of the workspace's extents
// is some 20 instructions per thread, and ncu counted 1,250 instructions a
// warp in the pick at 128K x 32 (issue-bound), a third of them such address
// and shape arithmetic.
struct PickShape {
  int G = 0, own = 0, picks = 0, stride = 0;  // heads per group, own block, picks per chunk, logit row stride
  int64_t partials_at = 0, values_at = 0, indices_at = 0;  // workspace offsets (floats): partials, candidates
  CandidateLists lists;
  int64_t normalisers_at = 0;  // and decode_normalise's output (an even offset: read as float2)
  bool l2_hints = false;       // the logits read with L2 evict-first (decode_scores kept them: L2Policies)
};
PickShape pick_shape(const DecodeParams& p, bool l2_hints) {
  PickShape s;
  s.G = p.Hq / p.Hkv;
  s.own = own_block(p);
  s.picks = std::min(p.top_k - 1, complete_blocks(p));
  s.stride = logit_stride(p);
  s.partials_at = int64_t(logits_elems(p));
  s.values_at = s.partials_at + int64_t(partial_elems(p));
  s.indices_at = s.values_at + int64_t(candidate_elems(p));
  s.normalisers_at = s.indices_at + int64_t(candidate_elems(p));
  s.lists = candidate_lists(p);
  s.l2_hints = l2_hints;
  return s;
}

// Every chunk's (max, sum) per head combined into the softmax's normalisers,
// normaliser[h] = (max, 1 / sum), (0, 0) for heads past the group up to MAXG.
// partials: the workspace's, group `group`'s head h's nchunks at
// (group * G + h) * nchunks. `lanes` threads per head (an aligned power of two
// within a warp; 128 threads) take the max over their chunks, a butterfly the
// head's max M, then each its chunks' sums rescaled to M (one exponential per
// partial; the second pass reads them from L1) and a butterfly the total; the
// same order every call, so decode_pick and decode_normalise agree bit for bit.
template <int MAXG>
__device__ __forceinline__ void combine_normalisers(const float2* partials, int64_t group, int G, int nchunks,
                                                    float2* normaliser) {
  const int tid = threadIdx.x;
  const int log2_lanes = G <= 4 ? 5 : G <= 8 ? 4 : G <= 16 ? 3 : 2, lanes = 1 << log2_lanes;
  const int h = tid >> log2_lanes, sub = tid & (lanes - 1);
  const float2* part = partials + (group * G + min(h, G - 1)) * nchunks;
  float m = -FLT_MAX, z = 0.f;
  if (h < G) {
#pragma unroll 4
    for (int c = sub; c < nchunks; c += lanes) m = fmaxf(m, part[c].x);
  }
  for (int off = lanes / 2; off; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (h < G) {
#pragma unroll 4
    for (int c = sub; c < nchunks; c += lanes) {
      const float2 x = part[c];
      z += x.y * fast_exp2((x.x - m) * kLog2e);
    }
  }
  for (int off = lanes / 2; off; off >>= 1) z += __shfl_xor_sync(0xffffffffu, z, off);
  // a reciprocal, multiplied in by decode_pick, as select.cu's pass 2 does;
  // heads past the group weigh 0, so its sum runs over all MAXG without a test
  if (h < G && sub == 0) normaliser[h] = make_float2(m, 1.f / z);
  if (tid >= G && tid < MAXG) normaliser[tid] = make_float2(0.f, 0.f);
}

// The normalisers of each group once (a CTA per group), for decode_pick to
// read (normalise_apart, below) instead of each of its CTAs combining the
// group's partials again: at 128K x 32 a fifth of decode_pick's warp samples
// wait on those loads (bench/results/h100-2026-12-07-decode-stalls.txt).
template <int MAXG>
__global__ void __launch_bounds__(kScoreThreads) decode_normalise(DecodeParams p, PickShape s) {
  static_assert(MAXG <= kMaxGroup, "the workspace holds kMaxGroup normalisers a group");
  __shared__ float2 normaliser[MAXG];
  const int64_t group = int64_t(blockIdx.y) * p.Hkv + blockIdx.x;
  const int nchunks = chunks_of(complete_blocks(p));
  wait_for_previous_kernel();
  combine_normalisers<MAXG>(reinterpret_cast<const float2*>(p.workspace + s.partials_at), group, s.G, nchunks,
                            normaliser);
  __syncthreads();
  if (threadIdx.x < MAXG)
    reinterpret_cast<float2*>(p.workspace + s.normalisers_at)[group * MAXG + threadIdx.x] = normaliser[threadIdx.x];
}

// Per chunk of 128 pooled blocks: the group-summed probability of each past
// block (the softmax normalised by every chunk's partial sums) and the
// chunk's best `picks` of them, in rank order, to the workspace.
// NORMALISED: decode_normalise ran, the normalisers are read rather than combined.
template <int MAXG, bool NORMALISED = false>
__global__ void __launch_bounds__(kScoreThreads) decode_pick(DecodeParams p, PickShape s) {
  __shared__ float2 normaliser[MAXG];  // per head: (max, 1 / sum of exponentials); (0, 0) past the group
  __shared__ __align__(16) unsigned long long keys[kScoreThreads];
  const int b = blockIdx.z, g = blockIdx.y, chunk = blockIdx.x, tid = threadIdx.x, nchunks = gridDim.x;
  const int G = s.G, picks = s.picks;
  const int64_t group = int64_t(b) * p.Hkv + g;
  const int j = chunk * kScoreThreads + tid;
  wait_for_previous_kernel();
  float l[MAXG];  // this block's logits, loaded first: they do not wait for the normalisers
  if (j < s.own) {
    const float* logit = p.workspace + group * G * s.stride + j;  // head 0's, then a row per head
    const uint64_t policy = l2_policies(s.l2_hints).logits_read;
#pragma unroll
    for (int h = 0; h < MAXG; ++h, logit += s.stride) l[h] = h < G ? load_hinted(logit, policy) : 0.f;
  }
  if constexpr (NORMALISED) {  // decode_normalise's, for every CTA of the group
    if (tid < MAXG)
      normaliser[tid] = reinterpret_cast<const float2*>(p.workspace + s.normalisers_at)[group * MAXG + tid];
  } else {  // at 128K tokens a step has 64 partials per head, read by each of the 64 CTAs
    combine_normalisers<MAXG>(reinterpret_cast<const float2*>(p.workspace + s.partials_at), group, G, nchunks,
                              normaliser);
  }
  __syncthreads();
  float prob = -1.f;  // -1: not a candidate
  if (j < s.own) {
    prob = 0.f;
#pragma unroll
    for (int h = 0; h < MAXG; ++h) {
      const float2 n = normaliser[h];
      prob += fast_exp2((l[h] - n.x) * kLog2e) * n.y;
    }
  }
  // The chunk's blocks in rank order (value desc, index asc) as 64-bit keys,
  // larger first: a probability is not negative, so its bits order as an
  // unsigned integer does (+1 keeps a probability of 0 above a
  // non-candidate's 0), and the low word is the thread index reversed. Under
  // the nsa-chunked rule the top bit marks the second list, so each list is
  // ranked on its own: the second list's blocks all rank before the first's.
  // Each warp sorts its 32 keys (a bitonic network through shuffles), then a
  // sorted key's rank in the chunk is its lane plus, per other warp, how many
  // of that warp's keys are larger (a binary search): about 200 instructions
  // a warp where counting against all 128 keys took 600 half-rate compares.
  const int64_t list_at = (group * nchunks + chunk) * kMaxPicks;
  float* cand_v = p.workspace + s.values_at + list_at;
  int* cand_i = reinterpret_cast<int*>(p.workspace + s.indices_at) + list_at;
  const CandidateLists lists = s.lists;
  if (lists.lists == 2 && tid < picks) cand_v[tid] = -1.f, cand_i[tid] = -1;  // slots a list cannot fill
  constexpr unsigned long long kSecondList = 1ull << 63;
  const int lane = tid & 31, warp = tid >> 5, base = chunk * kScoreThreads;
  unsigned long long key = (static_cast<unsigned long long>(prob >= 0.f ? __float_as_uint(prob) + 1u : 0u) << 32) |
                           unsigned(kScoreThreads - 1 - tid);
  if (lists.list_of(j)) key |= kSecondList;
#pragma unroll
  for (int size = 2; size <= 32; size *= 2)
#pragma unroll
    for (int stride = size / 2; stride; stride /= 2) {
      const unsigned long long other = __shfl_xor_sync(0xffffffffu, key, stride);
      // descending runs where (lane & size) == 0; the lower lane of a pair keeps the larger key there
      const bool keep_larger = ((lane & size) == 0) == ((lane & stride) == 0);
      key = keep_larger == (other > key) ? other : key;
    }
  keys[tid] = key;  // keys[warp * 32 + r]: the warp's r-th largest
  __syncthreads();
  // the second list's members in this chunk: the first list's ranks start after them
  const int second = lists.lists == 2 ? min(max(base + kScoreThreads - lists.split, 0), kScoreThreads) : 0;
  const int list = (key & kSecondList) ? 1 : 0;
  if (lane >= lists.quota_of(list) + (list ? 0 : second)) return;  // its rank is at least its lane
  int rank = lane;
#pragma unroll
  for (int w = 0; w < kScoreThreads / 32; ++w) {
    if (w == warp) continue;
    const unsigned long long* sorted = keys + w * 32;
    int larger = 0;  // keys of warp w larger than this one: the first position holding a smaller key
#pragma unroll
    for (int step = 16; step; step /= 2)
      if (sorted[larger + step - 1] > key) larger += step;
    larger += sorted[larger] > key;  // sorted[31] itself (keys are distinct)
    rank += larger;
  }
  if (!list) rank -= second;
  const unsigned upper = unsigned(key >> 32) & 0x7fffffffu;
  const float value = upper ? __uint_as_float(upper - 1u) : -1.f;
  const int block = base + kScoreThreads - 1 - int(unsigned(key));
  if (rank < lists.quota_of(list) && (lists.lists == 1 || value >= 0.f)) {
    cand_v[lists.start(list) + rank] = value;
    cand_i[lists.start(list) + rank] = value >= 0.f ? block : -1;
  }
}

// The cache position of entry x of the selected blocks' tokens as one list
// (slot s of sel holds entries s * bs .. s * bs + bs - 1), -1 if none: past
// the list, an empty slot, or past the query at pos.
__host__ __device__ __forceinline__ int selected_token(const int* sel, int x, int ntok, int bs, int pos) {
  if (x >= ntok) return -1;
  const int blk = sel[x >> log2_block(bs)], t = blk * bs + (x & (bs - 1));
  return blk >= 0 && t <= pos ? t : -1;
}

// A 32-token chunk of the selected tokens (entries x0 .. x0 + 31, token_of's
// list) into a warp's K and V tiles, rows of row_bytes: the first `rows` rows,
// zeros where an entry has no token; every load in flight at once, waited for.
template <int D, typename T, typename TokenOf>
__device__ __forceinline__ void load_kv_chunk(unsigned char* kt, unsigned char* vt, int row_bytes, int rows, int x0,
                                              int lane, const T* kbase, const T* vbase, const DecodeParams& p,
                                              TokenOf token_of) {
  for (int c = lane; c < rows * (D / 8); c += 32) {
    const int row = c / (D / 8), piece = c % (D / 8), t = token_of(x0 + row);
    cp_async16(kt + row * row_bytes + piece * 16, kbase + int64_t(max(t, 0)) * p.k_s.t + piece * 8, t >= 0);
    cp_async16(vt + row * row_bytes + piece * 16, vbase + int64_t(max(t, 0)) * p.v_s.t + piece * 8, t >= 0);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
}

// Lists a lane of merge_selection's warp keeps in registers: up to 128 (a
// 128K-token step at block 16 under the nsa-chunked rule); more stay in
// shared memory.
constexpr int kListsPerLane = 4;

// Candidate n of list c (chunk c >> two, side c & two, two = lists.lists - 1)
// as its key, 0 past the side's quota: a list holds its chunk's best on that
// side in rank order, from slot lists.start(side) of the chunk's `picks`.
__device__ __forceinline__ unsigned long long list_candidate(const CandidateLists& lists,
                                                             const unsigned long long* cand_key, int picks, int c,
                                                             int n) {
  const int two = lists.lists - 1, side = c & two;
  return n < lists.quota_of(side) ? cand_key[(c >> two) * picks + lists.start(side) + n] : 0ull;
}

// The warp's largest key (0 if every lane offers 0): two 32-bit reductions,
// the high words, then the low words of the lanes holding that high word.
__device__ __forceinline__ unsigned long long warp_max_key(unsigned long long key) {
  const unsigned hi = __reduce_max_sync(0xffffffffu, unsigned(key >> 32));
  const unsigned lo = __reduce_max_sync(0xffffffffu, unsigned(key >> 32) == hi ? unsigned(key) : 0u);
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

// merge_selection's picks with each lane's lists (c = lane, lane + 32, ...)
// in registers: their heads, their next positions and the lane's best head.
// A pick is two reductions, then only the winner's lane loads its list's next
// candidate and looks again at its own lists (every lane when a side has used
// its quota). The heads in shared memory made each pick a chain of some ten
// dependent shared loads and stores on one warp while the CTA's other warps
// waited: about 40% of decode_attend_mma at 128K x 32 (ncu).
__device__ __forceinline__ void merge_in_registers(const CandidateLists& lists, int nlists, int picks,
                                                   const unsigned long long* cand_key, int* sel, int K) {
  const int lane = threadIdx.x & 31, two = lists.lists - 1;  // list c: chunk c >> two, side c & two
  unsigned long long head[kListsPerLane];
  int next[kListsPerLane];
#pragma unroll
  for (int i = 0; i < kListsPerLane; ++i) {
    const int c = lane + 32 * i;
    next[i] = 0;
    head[i] = c < nlists ? list_candidate(lists, cand_key, picks, c, 0) : 0ull;
  }
  int left0 = lists.quota[0], left1 = lists.quota[1];
  unsigned long long best = 0;  // this lane's best head on a side that may still pick (0: none)
  int at = -1;                  // its register
  auto look_again = [&] {
    best = 0, at = -1;
#pragma unroll
    for (int i = 0; i < kListsPerLane; ++i)
      if (head[i] > best && (((lane + 32 * i) & two) ? left1 : left0) > 0) best = head[i], at = i;
  };
  look_again();
  for (int r = 0; r < picks; ++r) {
    const unsigned long long top = warp_max_key(best);
    if (top == 0) {  // nothing left on either side
      for (int rr = 1 + r + lane; rr < K; rr += 32) sel[rr] = -1;
      return;
    }
    const int block = int(~unsigned(top)), side = lists.list_of(block);
    const bool won = at >= 0 && best == top;
    if (side) --left1; else --left0;
    if (lane == 0) sel[1 + r] = block;
    if (won) {  // the winner's list moves on
#pragma unroll
      for (int i = 0; i < kListsPerLane; ++i)
        if (i == at) head[i] = list_candidate(lists, cand_key, picks, lane + 32 * i, ++next[i]);
    }
    if (won || (side ? left1 : left0) == 0) look_again();
  }
}

// merge_selection's picks with the lists' heads in shared memory (more lists
// than merge_in_registers keeps): each lane compares the heads of its lists
// at every pick.
__device__ __forceinline__ void merge_in_shared(const CandidateLists& lists, int nlists, int picks,
                                                const unsigned long long* cand_key, unsigned long long* head_key,
                                                int* next_cand, int* sel, int K) {
  const int lane = threadIdx.x & 31, two = lists.lists - 1;
  int left0 = lists.quota[0], left1 = lists.quota[1];
  for (int c = lane; c < nlists; c += 32) {
    next_cand[c] = 0;
    head_key[c] = list_candidate(lists, cand_key, picks, c, 0);
  }
  __syncwarp();
  for (int r = 0; r < picks; ++r) {
    unsigned long long best = 0;  // 0: no candidate
    int at = -1;
    for (int c = lane; c < nlists; c += 32) {
      const unsigned long long key = head_key[c];
      if (key > best && ((c & two) ? left1 : left0) > 0) best = key, at = c;
    }
    const unsigned long long top = warp_max_key(best);
    if (top == 0) {  // nothing left on either side
      for (int rr = 1 + r + lane; rr < K; rr += 32) sel[rr] = -1;
      break;
    }
    const int block = int(~unsigned(top));
    if (at >= 0 && best == top) {  // the winner's list moves on
      head_key[at] = list_candidate(lists, cand_key, picks, at, ++next_cand[at]);
    }
    if (lists.list_of(block)) --left1; else --left0;
    if (lane == 0) sel[1 + r] = block;
    __syncwarp();
  }
}

// select_by_radix's shared scratch, in the attend kernels' K/V tile space
// (unused until the selection is made).
struct RadixScratch {
  unsigned hist[2][2][256];               // per pass parity and side: open keys per value of the pass's digit
  unsigned long long prefix[2], mask[2];  // per side: the digits fixed so far, and their bits
  int remaining[2];                       // how many the side still takes among the keys matching its prefix
  int open[2];                            // 1 while the side's threshold is not found
  int count;                              // keys chosen so far (the compaction)
  unsigned long long chosen[kMaxPicks];
};
static_assert(sizeof(RadixScratch) <= size_t(kWarps) * 2 * 32 * (64 * 2 + 16), "fits in the K/V tiles at d64");

// The same selection as merging the lists (each side's best quota_of(side)
// keys, in rank order) with the whole CTA at once: a radix select per side,
// a pass per byte of the 64-bit keys from the top (the float's exponent and
// leading mantissa bits first; at most eight), finds the key value that leaves
// exactly the side's quota at or above it, then the chosen keys (at most
// K - 1) are ranked by counting. The merge is a chain of dependent steps per
// pick on one warp: at 128K x 32 on an H100, 42% of the attend kernel's warp
// samples wait at the barrier after it (bench/results/h100-2026-12-07-decode-stalls.txt);
// this is two barriers a pass whatever K is. Keys are distinct (the block
// index is in the low word), so every threshold is exact and the order is the
// merge's. Ends with the CTA synchronised.
__device__ __forceinline__ void select_by_radix(const CandidateLists& lists, int ncand, int own,
                                                const unsigned long long* cand_key, RadixScratch& rs, int* sel,
                                                int K) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid < 2) {
    const bool takes = tid < lists.lists && lists.quota_of(tid) > 0;
    rs.prefix[tid] = rs.mask[tid] = 0;
    rs.remaining[tid] = takes ? lists.quota_of(tid) : 0;
    rs.open[tid] = takes;
  }
  if (tid == 0) rs.count = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    // two sets of histograms, a pass's and the next's: warps 0 and 1 may still
    // be reading this pass's while the others clear the next's
    unsigned (&hist)[2][256] = rs.hist[(shift >> 3) & 1];
    for (int i = tid; i < 2 * 256; i += blockDim.x) hist[i >> 8][i & 255] = 0;
    __syncthreads();  // the histograms cleared, the last pass's prefixes seen by all
    const bool open0 = rs.open[0], open1 = rs.open[1];
    if (!open0 && !open1) break;
    // every thread the same number of rounds: the warp's lanes count their
    // keys' digits together (one shared atomic per distinct digit)
    for (int i0 = 0; i0 < ncand; i0 += blockDim.x) {
      int bin = -1;
      if (i0 + tid < ncand) {
        const unsigned long long key = cand_key[i0 + tid];
        const int side = lists.list_of(int(~unsigned(key)));
        if (key != 0 && (side ? open1 : open0) && (key & rs.mask[side]) == rs.prefix[side])
          bin = side * 256 + int((key >> shift) & 255);
      }
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&hist[0][0] + bin, unsigned(__popc(peers)));
    }
    __syncthreads();
    if (warp < 2 && (warp ? open1 : open0)) {  // warp s: side s's digit
      const int side = warp;
      unsigned count[8], sum = 0;  // lane l: digits 255 - 8l down to 248 - 8l
#pragma unroll
      for (int e = 0; e < 8; ++e) sum += count[e] = hist[side][255 - 8 * lane - e];
      unsigned from_top = sum;  // keys at this lane's digits or above
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const unsigned x = __shfl_up_sync(0xffffffffu, from_top, off);
        if (lane >= off) from_top += x;
      }
      const unsigned want = rs.remaining[side], total = __shfl_sync(0xffffffffu, from_top, 31);
      if (total <= want) {  // (first pass only) no more keys than it takes: all of them (prefix and mask 0)
        if (lane == 0) rs.open[side] = 0;
      } else if (from_top - sum < want && from_top >= want) {  // the lane whose digits reach `want`
        unsigned above = from_top - sum;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          if (above + count[e] >= want) {
            rs.prefix[side] |= static_cast<unsigned long long>(255 - 8 * lane - e) << shift;
            rs.mask[side] |= 0xffull << shift;
            rs.remaining[side] = int(want - above);
            if (count[e] == want - above) rs.open[side] = 0;  // the digit's keys fill it exactly
            break;
          }
          above += count[e];
        }
      }
    }
  }
  __syncthreads();
  // the chosen keys: each side's at or above its threshold
  for (int i = tid; i < ncand; i += blockDim.x) {
    const unsigned long long key = cand_key[i];
    const int side = lists.list_of(int(~unsigned(key)));
    if (key != 0 && lists.quota_of(side) > 0 && (key & rs.mask[side]) >= rs.prefix[side]) {
      const int slot = atomicAdd(&rs.count, 1);
      if (slot < kMaxPicks) rs.chosen[slot] = key;  // (at most the quotas' sum, K - 1, by construction)
    }
  }
  __syncthreads();
  const int n = min(rs.count, K - 1);  // (K - 1 <= kMaxPicks: decode_supported)
  for (int i = tid; i < n; i += blockDim.x) {
    const unsigned long long key = rs.chosen[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += rs.chosen[j] > key;
    sel[1 + rank] = int(~unsigned(key));
  }
  if (tid == 0) sel[0] = own;
  for (int r = 1 + n + tid; r < K; r += blockDim.x) sel[r] = -1;
  __syncthreads();
}

// The step's selection for group `group`, into sel[0 .. K) (shared): the own
// block, then the best picks from the chunks' ranked candidate lists
// (decode_pick), -1 where there are fewer: merged by one warp, or by
// select_by_radix (by_radix). cand_key, head_key and next_cand are shared
// scratch (attend_smem), and so is `scratch` (RadixScratch). Ends with the CTA
// synchronised.
__device__ __forceinline__ void merge_selection(const DecodeParams& p, int64_t group, unsigned long long* cand_key,
                                                unsigned long long* head_key, int* next_cand, int* sel,
                                                void* scratch, bool by_radix) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int own = own_block(p), nbc = complete_blocks(p), K = p.top_k;
  const int picks = min(K - 1, nbc), nchunks = chunks_of(nbc), ncand = nchunks * picks;
  // the chunks' best candidates (decode_pick), staged for the merge below
  {
    const float* cv = p.workspace + logits_elems(p) + partial_elems(p) + group * nchunks * kMaxPicks;
    const int* ci = reinterpret_cast<const int*>(p.workspace + logits_elems(p) + partial_elems(p) + candidate_elems(p)) +
                    group * nchunks * kMaxPicks;
    // one candidate per thread and pass, every load of a thread's passes
    // issued before the first is used: at batch 1 each pass was a wait on L2
    constexpr int kInFlight = 4;
    for (int c0 = tid; c0 < ncand; c0 += kInFlight * blockDim.x) {
      float value[kInFlight];
      int block[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int c = c0 + u * blockDim.x, at = (c / picks) * kMaxPicks + c % picks;
        value[u] = c < ncand ? cv[at] : -1.f;
        block[u] = c < ncand ? ci[at] : -1;
      }
#pragma unroll
      for (int u = 0; u < kInFlight; ++u)
        if (c0 + u * blockDim.x < ncand) cand_key[c0 + u * blockDim.x] = candidate_key(value[u], block[u]);
    }
  }
  __syncthreads();
  if (by_radix) {
    select_by_radix(candidate_lists(p), ncand, own, cand_key, *static_cast<RadixScratch*>(scratch), sel, K);
    return;
  }
  if (warp == 0) {
    // each chunk's lists are in rank order, so the best remaining block is
    // always the head of one list: a pick compares the lists' heads (kept
    // as keys in registers, past 128 lists in shared memory), the warp's
    // best in two reductions, and only the winner's list moves on. `left0`,
    // `left1` count what each side may still take (the nsa-chunked rule's
    // quotas; one side and all picks for the exact rule).
    const CandidateLists lists = candidate_lists(p);
    const int two = lists.lists - 1;  // list c: chunk c >> two, side c & two
    const int nlists = nchunks << two;
    if (lane == 0) sel[0] = own;
    if (nlists <= 32 * kListsPerLane) {
      merge_in_registers(lists, nlists, picks, cand_key, sel, K);
    } else {
      merge_in_shared(lists, nlists, picks, cand_key, head_key, next_cand, sel, K);
    }
    for (int r = 1 + picks + lane; r < K; r += 32) sel[r] = -1;
  }
  __syncthreads();
}

template <typename T, int D, int MAXG>
__global__ void __launch_bounds__(kWarps * 32) decode_attend(DecodeParams p, bool by_radix) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int E = D / 32;  // output elements per lane
  const int g = blockIdx.x, b = blockIdx.y, G = p.Hq / p.Hkv;
  const int Gc = G / gridDim.z, h0 = blockIdx.z * Gc;  // this CTA's heads of the group (launch() says why)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bs = p.block_size, pos = p.Tk - 1, nbc = complete_blocks(p), K = p.top_k;
  const int picks = min(K - 1, nbc), nchunks = chunks_of(nbc), ncand = nchunks * picks;
  const AttendSmem L = attend_smem(Gc, D, nchunks, ncand, K);
  float* qs = reinterpret_cast<float*>(smem_raw + L.qs);
  float* wm = reinterpret_cast<float*>(smem_raw + L.stats);  // (warps, Gc)
  float* wl = wm + kWarps * Gc;
  float* wf = wl + kWarps * Gc;
  unsigned long long* cand_key = reinterpret_cast<unsigned long long*>(smem_raw + L.cand_key);
  unsigned long long* head_key = reinterpret_cast<unsigned long long*>(smem_raw + L.head_key);  // each list's best left
  int* next_cand = reinterpret_cast<int*>(smem_raw + L.next_cand);  // each list's next position
  int* sel = reinterpret_cast<int*>(smem_raw + L.sel);
  float* pbuf = reinterpret_cast<float*>(smem_raw + L.pbuf);  // (warps, Gc, 32)
  unsigned char* kv_tiles = smem_raw + L.kv;                   // (warps, K and V, 32 rows)
  float* acc_s = reinterpret_cast<float*>(smem_raw + L.acc);
  const float scale = p.scale > 0 ? p.scale : rsqrtf(float(D));
  const int64_t group = int64_t(b) * p.Hkv + g;

  // (before q too: without complete blocks there is no decode_pick, and the
  // kernel before this one may be the one that writes q)
  wait_for_previous_kernel();
  const T* q = static_cast<const T*>(p.q) + b * p.q_s.b + (int64_t(g) * G + h0) * p.q_s.h;
  for (int i = tid; i < Gc * D; i += blockDim.x) qs[i] = TypeOf<T>::to_float(q[(i / D) * p.q_s.h + i % D]);
  merge_selection(p, group, cand_key, head_key, next_cand, sel, kv_tiles, by_radix);
  if (p.blocks && blockIdx.z == 0 && tid < K) p.blocks[(int64_t(b) * p.Hkv + g) * K + tid] = sel[tid];

  // attention over the selected blocks (this CTA's heads): online softmax per warp
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
  float* pw = pbuf + warp * Gc * 32;
  const int RB = kv_row_bytes(D);
  unsigned char* kt = kv_tiles + warp * 2 * 32 * RB;  // this warp's K rows, then its V rows
  unsigned char* vt = kt + 32 * RB;
  // The selected blocks' tokens as one list (slot s holds entries s * bs ..
  // s * bs + bs - 1), cut into 32-token chunks, warp w taking chunks w, w + 8,
  // ...: at block size 16 a chunk holds two blocks, so no lane idles.
  const int ntok = K * bs;
  auto token_of = [&](int x) { return selected_token(sel, x, ntok, bs, pos); };
  for (int x0 = warp * 32; x0 < ntok; x0 += kWarps * 32) {
    const int my_token = token_of(x0 + lane);
    const unsigned rows = __ballot_sync(0xffffffffu, my_token >= 0);
    if (!rows) continue;
    const int n = 32 - __clz(rows);  // rows past the last valid one are not read
    {
      load_kv_chunk<D>(kt, vt, RB, n, x0, lane, kbase, vbase, p, token_of);
      const bool valid = my_token >= 0;
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
            if (h < Gc) {
              const float4 qa = *reinterpret_cast<const float4*>(qs + h * D + d);
              const float4 qb = *reinterpret_cast<const float4*>(qs + h * D + d + 4);
              s[h] += qa.x * k01.x + qa.y * k01.y + qa.z * k23.x + qa.w * k23.y + qb.x * k45.x + qb.y * k45.y +
                      qb.z * k67.x + qb.w * k67.y;
            }
        }
      }
#pragma unroll
      for (int h = 0; h < MAXG; ++h)
        if (h < Gc) {
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
          if (h < Gc) {
            const float ph = pw[h * 32 + kk];
#pragma unroll
            for (int e = 0; e < E; ++e) acc[h][e] += ph * vv[e];
          }
      }
      __syncwarp();
    }
  }
  // the warps' partial outputs, combined in warp order
#pragma unroll
  for (int h = 0; h < MAXG; ++h)
    if (h < Gc) {
      float l = l_run[h];
      for (int off = 16; off; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
      if (lane == 0) wm[warp * Gc + h] = m_run[h], wl[warp * Gc + h] = l;
    }
  for (int i = tid; i < Gc * D; i += blockDim.x) acc_s[i] = 0.f;
  __syncthreads();
  if (tid < Gc) {
    float m = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, wm[w * Gc + tid]);
    float total = 0.f;
    for (int w = 0; w < kWarps; ++w) total += wl[w * Gc + tid] * __expf(wm[w * Gc + tid] - m);
    for (int w = 0; w < kWarps; ++w) wf[w * Gc + tid] = wl[w * Gc + tid] > 0.f ? __expf(wm[w * Gc + tid] - m) / total : 0.f;
  }
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int h = 0; h < MAXG; ++h)
        if (h < Gc)
#pragma unroll
          for (int e = 0; e < E; ++e) acc_s[h * D + lane * E + e] += acc[h][e] * wf[w * Gc + h];
    }
    __syncthreads();
  }
  T* o = static_cast<T*>(p.o) + b * p.o_s.b + (int64_t(g) * G + h0) * p.o_s.h;
  for (int i = tid; i < Gc * D; i += blockDim.x) o[(i / D) * p.o_s.h + i % D] = TypeOf<T>::from_float(acc_s[i]);
}

// decode_attend on the tensor cores (the default; SSA_DECODE_ATTEND_MMA=0
// keeps decode_attend): one CTA per (sequence, KV group), the group's heads
// the M rows of m16n8k16 mmas (MT tiles of 16), so a warp's 32-token chunk is
// S = Q K^T (4 n-tiles x D / 16 k-steps) and O += P V (D / 8 n-tiles x 2
// k-steps) where the scalar kernel spent G x D multiply-adds per lane and
// token. K and V rows reach shared memory by cp.async and the mma operands by
// ldmatrix (V transposed); P is rounded to T for the P V mma, as in
// FlashAttention. Each warp keeps its own online softmax; the warps' partial
// outputs are added in warp order (deterministic).
// A warp's shared memory in decode_attend_mma: its K and V rows, later its partial output.
__host__ __device__ inline size_t attend_mma_warp_bytes(int rows, int D) {
  const size_t tiles = size_t(2) * 32 * kv_row_bytes(D), partial = size_t(rows) * D * 4;
  return tiles > partial ? tiles : partial;
}
__host__ __device__ inline AttendSmem attend_mma_smem(int G, int D, int chunks, int candidates, int K) {
  AttendSmem s{};
  SmemCarver smem;
  const int rows = (G + 15) / 16 * 16;
  s.stats = smem.take(size_t(kWarps) * rows * 2 * 4 + size_t(rows) * 4);  // per warp m, l; per row 1 / L
  s.cand_key = smem.take(size_t(candidates) * 8);
  s.head_key = smem.take(size_t(chunks) * 2 * 8);
  s.next_cand = smem.take(size_t(chunks) * 2 * 4);
  s.sel = smem.take(size_t(K) * 4);
  // K and V rows of a chunk per warp; after the loop, the warp's partial output (rows x D fp32) in their place
  s.kv = smem.take(size_t(kWarps) * attend_mma_warp_bytes(rows, D));
  s.total = smem.used;
  return s;
}

template <typename T, int D, int MT>
__global__ void __launch_bounds__(kWarps * 32) decode_attend_mma(DecodeParams p, bool by_radix) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int kRows = MT * 16;
  const int g = blockIdx.x, b = blockIdx.y, G = p.Hq / p.Hkv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, quad = lane >> 2, pair = (lane & 3) * 2;
  const int bs = p.block_size, pos = p.Tk - 1, nbc = complete_blocks(p), K = p.top_k;
  const int picks = min(K - 1, nbc), nchunks = chunks_of(nbc);
  const AttendSmem L = attend_mma_smem(G, D, nchunks, nchunks * picks, K);
  float* wm = reinterpret_cast<float*>(smem_raw + L.stats);  // (warps, rows): each warp's row max
  float* wl = wm + kWarps * kRows;                           // and row sum
  float* row_inv_l = wl + kWarps * kRows;                    // per row: 1 / its sum over the warps
  unsigned long long* cand_key = reinterpret_cast<unsigned long long*>(smem_raw + L.cand_key);
  unsigned long long* head_key = reinterpret_cast<unsigned long long*>(smem_raw + L.head_key);
  int* next_cand = reinterpret_cast<int*>(smem_raw + L.next_cand);
  int* sel = reinterpret_cast<int*>(smem_raw + L.sel);
  const int RB = kv_row_bytes(D);
  const size_t warp_bytes = attend_mma_warp_bytes(kRows, D);
  unsigned char* kt = smem_raw + L.kv + warp * warp_bytes;  // this warp's K rows, then its V rows
  unsigned char* vt = kt + 32 * RB;
  const float scale = p.scale > 0 ? p.scale : rsqrtf(float(D));
  const int64_t group = int64_t(b) * p.Hkv + g;

  wait_for_previous_kernel();  // (before q: the kernel before this one may write it)
  const T* q = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(g) * G * p.q_s.h;
  uint32_t qa[MT][D / 16][4];  // A fragments, the standard layout: rows = heads (0 past the group), k = d
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const int h = mt * 16 + quad, d = ks * 16 + pair;
      qa[mt][ks][0] = q_pair(q, p.q_s.h, h, G, d);
      qa[mt][ks][1] = q_pair(q, p.q_s.h, h + 8, G, d);
      qa[mt][ks][2] = q_pair(q, p.q_s.h, h, G, d + 8);
      qa[mt][ks][3] = q_pair(q, p.q_s.h, h + 8, G, d + 8);
    }
  merge_selection(p, group, cand_key, head_key, next_cand, sel, smem_raw + L.kv, by_radix);
  if (p.blocks && tid < K) p.blocks[group * K + tid] = sel[tid];

  float o[MT][D / 8][4], m_run[MT][2], l_run[MT][2];  // rows quad and quad + 8 of each m-tile
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m_run[mt][0] = m_run[mt][1] = -FLT_MAX;
    l_run[mt][0] = l_run[mt][1] = 0.f;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) o[mt][dn][0] = o[mt][dn][1] = o[mt][dn][2] = o[mt][dn][3] = 0.f;
  }
  const T* kbase = static_cast<const T*>(p.k) + b * p.k_s.b + g * p.k_s.h;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_s.b + g * p.v_s.h;
  // the selected blocks' tokens as one list, cut into 32-token chunks, warp w taking chunks w, w + 8, ...
  const int ntok = K * bs;
  auto token_of = [&](int x) { return selected_token(sel, x, ntok, bs, pos); };
  // ldmatrix row addresses: K as B of S (x4: two n-tiles of 8 tokens x 16 d), V transposed as B of P V
  // (x4: 16 tokens x two n-tiles of 8 d)
  const int lr = lane & 7, lm = lane >> 3;
  const uint32_t k_addr = smem_u32(kt) + ((lm >> 1) * 8 + lr) * RB + (lm & 1) * 16;
  const uint32_t v_addr = smem_u32(vt) + ((lm & 1) * 8 + lr) * RB + (lm >> 1) * 16;
  for (int x0 = warp * 32; x0 < ntok; x0 += kWarps * 32) {
    const int my_token = token_of(x0 + lane);
    const unsigned rows = __ballot_sync(0xffffffffu, my_token >= 0);
    if (!rows) continue;
    load_kv_chunk<D>(kt, vt, RB, 32, x0, lane, kbase, vbase, p, token_of);  // every row: the mmas read them all
    float s[MT][4][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
#pragma unroll
      for (int nt = 0; nt < 4; nt += 2) {
        uint32_t b0, b1, b2, b3;  // n-tile nt: b0, b1; n-tile nt + 1: b2, b3
        ldsm_x4(b0, b1, b2, b3, k_addr + nt * 8 * RB + ks * 32);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816<T>(s[mt][nt], qa[mt][ks], b0, b1);
          mma16816<T>(s[mt][nt + 1], qa[mt][ks], b2, b3);
        }
      }
    // scale, mask the entries without a token, online softmax per row
    uint32_t pa[MT][2][4];  // P as A fragments of the two 16-token k-steps
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float cm = -FLT_MAX;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][nt][half * 2 + e];
            x = (rows >> (nt * 8 + pair + e)) & 1u ? x * scale : -INFINITY;
            cm = fmaxf(cm, x);
          }
        cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, 1));
        cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, 2));
        const float m_new = fmaxf(m_run[mt][half], cm), alpha = __expf(m_run[mt][half] - m_new);
        m_run[mt][half] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][nt][half * 2 + e];
            x = __expf(x - m_new);
            sum += x;
          }
        l_run[mt][half] = l_run[mt][half] * alpha + sum;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) o[mt][dn][half * 2] *= alpha, o[mt][dn][half * 2 + 1] *= alpha;
      }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        pa[mt][kk][0] = TypeOf<T>::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][kk][1] = TypeOf<T>::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][kk][2] = TypeOf<T>::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][kk][3] = TypeOf<T>::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
    for (int kk = 0; kk < 2; ++kk)
#pragma unroll
      for (int dn = 0; dn < D / 8; dn += 2) {
        uint32_t b0, b1, b2, b3;  // d n-tile dn: b0, b1; dn + 1: b2, b3
        ldsm_x4_t(b0, b1, b2, b3, v_addr + kk * 16 * RB + dn * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816<T>(o[mt][dn], pa[mt][kk], b0, b1);
          mma16816<T>(o[mt][dn + 1], pa[mt][kk], b2, b3);
        }
      }
    __syncwarp();  // the tiles are reloaded by the next chunk
  }
  // each warp's row statistics and partial output (in its own tile space), then added in warp order
  float* ow = reinterpret_cast<float*>(kt);  // (rows, D)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = l_run[mt][half];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int row = mt * 16 + quad + half * 8;
      if ((lane & 3) == 0) wm[warp * kRows + row] = m_run[mt][half], wl[warp * kRows + row] = l;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn)
        *reinterpret_cast<float2*>(ow + row * D + dn * 8 + pair) = make_float2(o[mt][dn][half * 2], o[mt][dn][half * 2 + 1]);
    }
  __syncthreads();
  // per row, each warp's rescaling factor exp(m_w - max) (in place of m_w: computed once, not once per
  // output element) and 1 / the row's sum
  float* warp_factor = wm;
  if (tid < kRows) {
    float m = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, wm[w * kRows + tid]);
    float total = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      const float factor = __expf(wm[w * kRows + tid] - m);
      total += wl[w * kRows + tid] * factor;
      warp_factor[w * kRows + tid] = factor;
    }
    row_inv_l[tid] = total > 0.f ? 1.f / total : 0.f;
  }
  __syncthreads();
  T* out = static_cast<T*>(p.o) + b * p.o_s.b + int64_t(g) * G * p.o_s.h;
  for (int i = tid; i < G * D; i += blockDim.x) {
    const int h = i / D, d = i % D;
    float acc = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      const float* ww = reinterpret_cast<const float*>(smem_raw + L.kv + w * warp_bytes);
      acc += ww[h * D + d] * warp_factor[w * kRows + h];
    }
    out[h * p.o_s.h + d] = TypeOf<T>::from_float(acc * row_inv_l[h]);
  }
}

template <typename T>
__global__ void append_kernel(AppendParams p) {
  const int pieces = p.D / 8;  // 16-byte pieces per row
  const int first = p.length / p.block_size, completed = (p.length + p.T) / p.block_size - first;
  const int64_t copies = int64_t(p.B) * p.Hkv * p.T * pieces;
  const int64_t pools = int64_t(p.B) * p.Hkv * completed * p.D;
  const T* k_new = static_cast<const T*>(p.k_new);
  const T* v_new = static_cast<const T*>(p.v_new);
  T* k_cache = static_cast<T*>(p.k_cache);
  T* v_cache = static_cast<T*>(p.v_cache);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < copies + pools;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (i < copies) {
      const int piece = int(i % pieces);
      int64_t r = i / pieces;
      const int t = int(r % p.T);
      r /= p.T;
      const int h = int(r % p.Hkv), b = int(r / p.Hkv);
      const int64_t at = p.length + t;
      *reinterpret_cast<uint4*>(k_cache + b * p.kc_s.b + h * p.kc_s.h + at * p.kc_s.t + piece * 8) =
          *reinterpret_cast<const uint4*>(k_new + b * p.kn_s.b + h * p.kn_s.h + int64_t(t) * p.kn_s.t + piece * 8);
      *reinterpret_cast<uint4*>(v_cache + b * p.vc_s.b + h * p.vc_s.h + at * p.vc_s.t + piece * 8) =
          *reinterpret_cast<const uint4*>(v_new + b * p.vn_s.b + h * p.vn_s.h + int64_t(t) * p.vn_s.t + piece * 8);
    } else {
      int64_t r = i - copies;
      const int d = int(r % p.D);
      r /= p.D;
      const int blk = first + int(r % completed);
      r /= completed;
      const int h = int(r % p.Hkv), b = int(r / p.Hkv);
      float sum = 0.f;
      for (int u = 0; u < p.block_size; ++u) {
        const int tok = blk * p.block_size + u;
        const T x = tok < p.length ? k_cache[b * p.kc_s.b + h * p.kc_s.h + int64_t(tok) * p.kc_s.t + d]
                                   : k_new[b * p.kn_s.b + h * p.kn_s.h + int64_t(tok - p.length) * p.kn_s.t + d];
        sum += TypeOf<T>::to_float(x);
      }
      const int64_t at = b * p.kb_s.b + h * p.kb_s.h + int64_t(blk) * p.kb_s.t + d;
      const float mean = sum / float(p.block_size);
      if (p.block_keys_bf16)
        static_cast<__nv_bfloat16*>(p.block_keys)[at] = __float2bfloat16_rn(mean);
      else
        static_cast<float*>(p.block_keys)[at] = mean;
    }
  }
}

}  // namespace

std::string append_supported(const AppendParams& p) {
  if (p.B < 1 || p.Hkv < 1 || p.T < 1 || p.block_size < 1) return "append_to_cache: empty shape";
  if (p.D % 8) return "append_to_cache: head dim " + std::to_string(p.D) + " is not a multiple of 8";
  if (p.length < 0 || p.length + p.T > p.capacity)
    return "append_to_cache: " + std::to_string(p.length) + " + " + std::to_string(p.T) + " tokens exceed the capacity " +
           std::to_string(p.capacity);
  for (const Strides4* s : {&p.kn_s, &p.vn_s, &p.kc_s, &p.vc_s})
    if (s->b % 8 || s->h % 8 || s->t % 8) return "append_to_cache: rows of keys and values must be 16-byte aligned";
  return "";
}

std::string append_to_cache(const AppendParams& p, cudaStream_t stream) {
  std::string why = append_supported(p);
  if (!why.empty()) return why;
  if (!p.k_new || !p.v_new || !p.k_cache || !p.v_cache || !p.block_keys)
    return "append_to_cache: a null pointer among the keys, values, cache and pooled keys";
  for (const void* ptr : {p.k_new, p.v_new, static_cast<const void*>(p.k_cache), static_cast<const void*>(p.v_cache)})
    if (reinterpret_cast<uintptr_t>(ptr) % 16) return "append_to_cache: keys and values must be 16-byte aligned";
  const int completed = (p.length + p.T) / p.block_size - p.length / p.block_size;
  const int64_t work = int64_t(p.B) * p.Hkv * (int64_t(p.T) * (p.D / 8) + int64_t(completed) * p.D);
  const int threads = 256, grid = int(std::min<int64_t>((work + threads - 1) / threads, 4096));
  if (p.dtype == DType::bf16)
    append_kernel<__nv_bfloat16><<<grid, threads, 0, stream>>>(p);
  else
    append_kernel<__half><<<grid, threads, 0, stream>>>(p);
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

namespace {

// The most dynamic shared memory a CTA may take on this GPU (asked once).
int shared_memory_optin() {
  static int optin = current_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, 48 << 10);
  return optin;
}

// Whether this GPU has programmatic dependent launch (sm_90 on).
bool has_dependent_launch() {
  static bool has = current_device_attribute(cudaDevAttrComputeCapabilityMajor, 0) >= 9;
  return has;
}

// Launches `kernel` so that it may start while the previous kernel in the
// stream drains (it calls wait_for_previous_kernel() before reading that
// kernel's output): the launch gap between dependent kernels is hidden, which
// counts at batch 1, where each kernel runs for a few microseconds.
template <typename... Args, typename... Passed>
std::string launch_dependent(void (*kernel)(Args...), dim3 grid, int threads, size_t smem, cudaStream_t stream,
                             const Passed&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = has_dependent_launch() ? 1 : 0;
  SSA_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));
  return "";
}

// Multiprocessors of this GPU (asked once).
int multiprocessors() {
  static int sms = current_device_attribute(cudaDevAttrMultiProcessorCount, 132);
  return sms;
}

// CTAs per (sequence, KV group) of decode_attend, each taking G / split of the
// group's heads (they share the selection and read the same blocks): at batch
// 1 one CTA per group left all but 2 SMs idle and each warp a long serial
// chain over 16 heads (H200, 8K: 39 us). Split while the CTAs fit two waves.
int attend_split(const DecodeParams& p) {
  const int G = p.Hq / p.Hkv, groups = p.B * p.Hkv;
  int split = 1;
  while (G % (split * 2) == 0 && int64_t(groups) * split * 2 <= 2 * multiprocessors()) split *= 2;
  return split;
}

// An A/B switch of the decode kernel, read from the environment each call so
// that tests and benchmarks can compare: 0 off, any other number on; unset,
// `otherwise`.
bool decode_switch(const char* name, bool otherwise) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) != 0 : otherwise;
}

// Whether decode_scores reads the pooled keys with L2 evict-first and writes
// the logits with evict-last, for decode_pick to read them from L2
// (evict-first: dead after it) rather than from DRAM. On an H100
// (bench/results/h100-2026-12-07-decode-l2hint-ab.txt) it took 3-8% off every
// d128 shape and was within 2% either way at d64 but for 3% slower at 128K x
// 32 (33 MB of logits) and 2-3% faster at 32K x 32: on at d128 only.
// SSA_DECODE_L2HINT=1 or 0 forces it either way (the tests compare both).
bool decode_l2_hints(const DecodeParams& p) { return decode_switch("SSA_DECODE_L2HINT", p.D == 128); }

// Whether the selection combines each group's normalisers once, in a launch
// of its own (decode_normalise), rather than in every decode_pick CTA. Each of
// a group's CTAs reads all nchunks x G partial (max, sum) pairs, so the
// combine in decode_pick reads B x Hkv x nchunks^2 x G x 8 bytes in all. On an
// H100 (bench/results/h100-2026-12-07-decode-next-ab.txt) the launch apart
// took 6% off the step at 128K x 32 d64 block 16 (34 MB re-read) and 2% at
// d128 (17 MB), and cost 2-7% (its ~1 us) where 2 MB or less was re-read.
// SSA_DECODE_NORMALISE=1 or 0 forces it either way (the tests compare both).
constexpr double kNormaliseApartBytes = 8e6;
bool normalise_apart(const DecodeParams& p) {
  const double nchunks = chunks_of(complete_blocks(p));
  const double reread = double(p.B) * p.Hkv * nchunks * nchunks * (p.Hq / p.Hkv) * 8;
  return decode_switch("SSA_DECODE_NORMALISE", reread >= kNormaliseApartBytes);
}

// decode_scores with or without the L2 hints
template <typename T, int D, int MT, bool KB16>
void launch_scores(const DecodeParams& p, dim3 grid, cudaStream_t stream, bool l2_hints) {
  if (l2_hints) {
    decode_scores<T, D, MT, KB16, true><<<grid, kScoreThreads, 0, stream>>>(p);
  } else {
    decode_scores<T, D, MT, KB16><<<grid, kScoreThreads, 0, stream>>>(p);
  }
}

// The selection's two launches: the chunks' logits and partial sums, then their
// picks (three when normalise_apart).
template <typename T, int D, int MAXG>
std::string launch_selection(const DecodeParams& p, cudaStream_t stream) {
  const int nbc = complete_blocks(p);
  const dim3 grid(chunks_of(nbc), p.Hkv, p.B);  // a CTA per chunk of 128 pooled blocks
  const bool l2_hints = decode_l2_hints(p);      // (the scoring's and the ranking's alike)
  if (nbc > 0) {
    constexpr int MT = (MAXG + 15) / 16;
    if (!p.block_keys_bf16) {
      launch_scores<T, D, MT, false>(p, grid, stream, l2_hints);
    } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {  // decode_supported: bf16 queries only
      launch_scores<T, D, MT, true>(p, grid, stream, l2_hints);
    }
    SSA_CUDA_CHECK(cudaGetLastError());
  }
  if (std::min(p.top_k - 1, nbc) > 0) {
    const PickShape shape = pick_shape(p, l2_hints);
    if (normalise_apart(p)) {
      const std::string why = launch_dependent(decode_normalise<MAXG>, dim3(p.Hkv, p.B), kScoreThreads, 0, stream, p, shape);
      if (!why.empty()) return why;
      return launch_dependent(decode_pick<MAXG, true>, grid, kScoreThreads, 0, stream, p, shape);
    }
    return launch_dependent(decode_pick<MAXG>, grid, kScoreThreads, 0, stream, p, shape);
  }
  return "";
}

// Whether the attend kernels take the step's picks by select_by_radix rather
// than by merging the candidate lists on one warp. The radix select's passes
// read every candidate (nchunks x (k - 1) of them) where the merge's picks
// compare only the lists' heads; on an H100 (k 16;
// bench/results/h100-2026-12-07-decode-next-ab.txt) the radix took 5-12% off
// the step at 1, 4 and 16 chunks of 128 blocks a group and was level to 4%
// slower at 64 (128K tokens at block 16). SSA_DECODE_RADIX=1 or 0 forces it
// either way (the tests compare both).
constexpr int kRadixMaxChunks = 32;
bool picks_by_radix(const DecodeParams& p) {
  return decode_switch("SSA_DECODE_RADIX", chunks_of(complete_blocks(p)) <= kRadixMaxChunks);
}

// An attend kernel with as much dynamic shared memory as the GPU allows (asked
// once per kernel: a template argument, so each kernel has its own flag).
template <auto kernel>
std::string launch_attend(dim3 grid, size_t smem, cudaStream_t stream, const DecodeParams& p) {
  static bool opted_in = false;
  if (!opted_in) {
    SSA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_memory_optin()));
    opted_in = true;
  }
  return launch_dependent(kernel, grid, kWarps * 32, smem, stream, p, picks_by_radix(p));
}

template <typename T, int D, int MAXG, int MAXG_ATTEND>
std::string launch(const DecodeParams& p, cudaStream_t stream, int split) {
  std::string why = launch_selection<T, D, MAXG>(p, stream);
  if (!why.empty()) return why;
  const int nbc = complete_blocks(p), picks = std::min(p.top_k - 1, nbc);
  const AttendSmem L = attend_smem(p.Hq / p.Hkv / split, D, chunks_of(nbc), chunks_of(nbc) * picks, p.top_k);
  return launch_attend<decode_attend<T, D, MAXG_ATTEND>>(dim3(p.Hkv, p.B, split), L.total, stream, p);
}

// Whether the attention step runs on the tensor cores (decode_attend_mma):
// SSA_DECODE_ATTEND_MMA=0 keeps the scalar decode_attend.
bool attend_on_mma() { return decode_switch("SSA_DECODE_ATTEND_MMA", true); }

template <typename T, int D, int MAXG>
std::string launch_mma(const DecodeParams& p, cudaStream_t stream) {
  std::string why = launch_selection<T, D, MAXG>(p, stream);
  if (!why.empty()) return why;
  const int nbc = complete_blocks(p), picks = std::min(p.top_k - 1, nbc);
  const AttendSmem L = attend_mma_smem(p.Hq / p.Hkv, D, chunks_of(nbc), chunks_of(nbc) * picks, p.top_k);
  return launch_attend<decode_attend_mma<T, D, (MAXG + 15) / 16>>(dim3(p.Hkv, p.B), L.total, stream, p);
}

// MAXG bounds the group (scores and pick); the attend kernel's bound follows its share.
template <typename T, int D, int MAXG>
std::string launch_split(const DecodeParams& p, cudaStream_t stream) {
  if (attend_on_mma()) return launch_mma<T, D, MAXG>(p, stream);
  const int split = attend_split(p), share = p.Hq / p.Hkv / split;
  if (share <= 2) return launch<T, D, MAXG, 2>(p, stream, split);
  if (share <= 4) return launch<T, D, MAXG, 4>(p, stream, split);
  if (share <= 8) return launch<T, D, MAXG, 8>(p, stream, split);
  if constexpr (MAXG >= 16) {
    if (share <= 16) return launch<T, D, MAXG, 16>(p, stream, split);
  }
  if constexpr (MAXG >= 32) return launch<T, D, MAXG, 32>(p, stream, split);
  return "unreachable: the share of heads is at most the group";
}

template <typename T, int D>
std::string launch_g(const DecodeParams& p, cudaStream_t stream) {
  const int G = p.Hq / p.Hkv;
  if (G <= 8) return launch_split<T, D, 8>(p, stream);
  if (G <= 16) return launch_split<T, D, 16>(p, stream);
  if constexpr (D == 64) return launch_split<T, D, 32>(p, stream);
  return "unreachable: decode_supported() refuses G x D above 2048";
}

template <typename T>
std::string launch_d(const DecodeParams& p, cudaStream_t stream) {
  return p.D == 64 ? launch_g<T, 64>(p, stream) : launch_g<T, 128>(p, stream);
}

}  // namespace

size_t decode_workspace_bytes(const DecodeParams& p) {
  return (logits_elems(p) + partial_elems(p) + 2 * candidate_elems(p) + normaliser_elems(p)) * sizeof(float);
}

std::string decode_supported(const DecodeParams& p) {
  std::string why = check_common(p.B, p.Hq, p.Hkv, 1, p.Tk, p.Tk - 1, p.D, p.block_size, p.top_k);
  if (!why.empty()) return why;
  const int G = p.Hq / p.Hkv;
  if (G * p.D > 2048) return "the decode kernel keeps G x D <= 2048 accumulators per CTA (GQA ratio " +
                             std::to_string(G) + " at head dim " + std::to_string(p.D) + ")";
  if (p.top_k - 1 > kMaxPicks) return "the decode kernel selects at most " + std::to_string(kMaxPicks + 1) + " blocks";
  if (p.block_keys_bf16 && p.dtype != DType::bf16) return "bf16 pooled keys take bf16 queries";
  const int optin = shared_memory_optin();
  const int nbc = complete_blocks(p);
  const int ncand = chunks_of(nbc) * std::min(p.top_k - 1, nbc);
  const size_t need = std::max(attend_smem(G, p.D, chunks_of(nbc), ncand, p.top_k).total,
                               attend_mma_smem(G, p.D, chunks_of(nbc), ncand, p.top_k).total);
  if (need > size_t(optin))
    return "the decode kernel keeps every chunk's candidate blocks in shared memory: " + std::to_string(need) +
           " bytes at " + std::to_string(p.Tk) + " tokens and block size " + std::to_string(p.block_size) +
           ", more than this GPU's " + std::to_string(optin);
  return "";
}

std::string decode_attention(const DecodeParams& p, cudaStream_t stream) {
  std::string why = decode_supported(p);
  if (!why.empty()) return why;
  if (!p.q || !p.k || !p.v || !p.o || !p.workspace || (!p.block_keys && !p.block_keys_bf16 && p.Tk >= p.block_size))
    return "decode_attention: a null pointer among q, k, v, o, workspace, block_keys";
  return p.dtype == DType::bf16 ? launch_d<__nv_bfloat16>(p, stream) : launch_d<__half>(p, stream);
}

}  // namespace ssa
