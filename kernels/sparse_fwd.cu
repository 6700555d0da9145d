// Sparse attention forward.  See sparse_fwd.cuh for the design.
#include <cmath>
#include <type_traits>

#include "sparse_fwd.cuh"
#include "sparse_tiles.cuh"

namespace ssa {
namespace {

constexpr int kWarps = 4;       // per-token kernel: tokens (warps) per CTA
constexpr int kStages = 3;      // per-token kernel: chunks in flight per warp
constexpr int kTileTokens = 8;  // query-tile kernel: tokens (warps) per CTA
constexpr int kTileStages = 4;  // query-tile kernel: chunks in flight per CTA
// What the query-tile kernel writes into the LSE of the first head of each
// token of a tile it leaves to the per-token kernel (a NaN no arithmetic
// produces).  Should a real LSE ever carry these bits, that token is only
// computed twice, to the same values.
constexpr uint32_t kLeftForPerToken = 0x7fc5a17eu;

// One warp's online softmax over its 16 head rows of one token (lane rows g
// and g + 8), fed 16-key chunks.  Every rounding is explicit (the _rn
// intrinsics are never contracted or reassociated), so the per-token and the
// query-tile kernels, which inline this into different code, produce the same
// bits for the same chunks in the same order.
template <typename T, int D>
struct OnlineSoftmaxRows {
  float o[D / 8][4];
  float m0, m1, l0, l1;  // running max (log2 units) and sum of rows g, g + 8

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    m0 = m1 = -INFINITY;
    l0 = l1 = 0.f;
  }

  // keys key0 .. key0 + 15 from the swizzled tiles tK / tV; keys past pos are
  // masked (every chunk the walks give has at least key0 <= pos)
  __device__ __forceinline__ void chunk(const uint32_t (&qa)[D / 16][4], const T* tK, const T* tV, int key0, int pos,
                                        float scale_log2, int lane) {
    const int c = lane % 4;
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    mma_rows_tile_t<T, D>(s, qa, tK, lane);  // S = Q K^T
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (key0 + n * 8 + 2 * c + (e & 1) > pos) s[n][e] = -INFINITY;
        if (e < 2) mx0 = fmaxf(mx0, s[n][e]); else mx1 = fmaxf(mx1, s[n][e]);
      }
    // scale_log2 > 0 and rounding is monotone: max(round(s * c)) = round(max(s) * c)
    const float n0 = fmaxf(m0, __fmul_rn(quad_max(mx0), scale_log2));
    const float n1 = fmaxf(m1, __fmul_rn(quad_max(mx1), scale_log2));
    const float a0 = fast_exp2(__fsub_rn(m0, n0)), a1 = fast_exp2(__fsub_rn(m1, n1));
    m0 = n0;
    m1 = n1;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] = __fmul_rn(o[n][0], a0); o[n][1] = __fmul_rn(o[n][1], a0);
      o[n][2] = __fmul_rn(o[n][2], a1); o[n][3] = __fmul_rn(o[n][3], a1);
    }
    float add0 = 0.f, add1 = 0.f;
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      s[n][0] = fast_exp2(__fmaf_rn(s[n][0], scale_log2, -m0));
      s[n][1] = fast_exp2(__fmaf_rn(s[n][1], scale_log2, -m0));
      s[n][2] = fast_exp2(__fmaf_rn(s[n][2], scale_log2, -m1));
      s[n][3] = fast_exp2(__fmaf_rn(s[n][3], scale_log2, -m1));
      add0 = __fadd_rn(add0, __fadd_rn(s[n][0], s[n][1]));
      add1 = __fadd_rn(add1, __fadd_rn(s[n][2], s[n][3]));
    }
    l0 = __fmaf_rn(l0, a0, add0);
    l1 = __fmaf_rn(l1, a1, add1);
    uint32_t pa[4] = {TypeOf<T>::pack(s[0][0], s[0][1]), TypeOf<T>::pack(s[0][2], s[0][3]),
                      TypeOf<T>::pack(s[1][0], s[1][1]), TypeOf<T>::pack(s[1][2], s[1][3])};
    mma_p_tile<T, D>(o, pa, tV, lane);  // O += P V
  }

  // O and LSE of head rows h0 + g, h0 + g + 8 (those below G) of token t
  __device__ __forceinline__ void store(const SparseFwdParams& p, int b, int hk, int G, int t, int h0, int lane) {
    const int g = lane / 4, c = lane % 4;
    const float s0 = quad_sum(l0), s1 = quad_sum(l1);
    const float i0 = 1.f / s0, i1 = 1.f / s1;
    T* ob = static_cast<T*>(p.o) + b * p.o_s.b + int64_t(hk * G) * p.o_s.h + int64_t(t) * p.o_s.t;
    const int r0 = h0 + g, r1 = h0 + g + 8;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int d = n * 8 + 2 * c;
      if (r0 < G) *reinterpret_cast<uint32_t*>(ob + r0 * p.o_s.h + d) = TypeOf<T>::pack(o[n][0] * i0, o[n][1] * i0);
      if (r1 < G) *reinterpret_cast<uint32_t*>(ob + r1 * p.o_s.h + d) = TypeOf<T>::pack(o[n][2] * i1, o[n][3] * i1);
    }
    if (c == 0) {
      float* lb = p.lse + (int64_t(b) * p.Hq + hk * G) * p.Tq + t;
      if (r0 < G) lb[int64_t(r0) * p.Tq] = (m0 + log2f(s0)) * kLn2;
      if (r1 < G) lb[int64_t(r1) * p.Tq] = (m1 + log2f(s1)) * kLn2;
    }
  }
};

// Per-token forward: one warp per (token, 16 heads of its group), each streaming
// its own chunks through a per-warp ring.  Sorted (top_k <= 32): the chunks in
// ascending block order (sorted_selection), as the query-tile kernel adds them;
// otherwise in slot order.  Remainder: only the tokens the query-tile kernel
// marked as left to it.
template <typename T, int D, bool Sorted, bool Remainder>
__global__ void __launch_bounds__(kWarps * 32, D == 64 ? 4 : 3) sparse_fwd_kernel(SparseFwdParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int G = p.Hq / p.Hkv, RT = (G + 15) / 16;
  const int wid = blockIdx.x * kWarps + warp;
  const int t = wid / RT, h0 = (wid % RT) * 16;  // query row t, at position pos
  if (t >= p.Tq) return;
  const int pos = p.q_offset + t;
  const int b = blockIdx.z, hk = blockIdx.y;
  if (Remainder) {
    if (__float_as_uint(p.lse[(int64_t(b) * p.Hq + hk * G) * p.Tq + t]) != kLeftForPerToken) return;
  }
  T* sK = reinterpret_cast<T*>(smem_raw) + warp * kStages * 2 * 16 * D;
  T* sV = sK + kStages * 16 * D;

  // Q fragments of rows h0..h0+15 (heads of this token), zero beyond G
  uint32_t qa[D / 16][4];
  load_rows_frag<T, D>(qa, static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk * G) * p.q_s.h + int64_t(t) * p.q_s.t,
                       p.q_s.h, G, h0 + g, h0 + g + 8, c);
  const float scale_log2 = p.scale * kLog2e;
  const int32_t* sel = p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq + t) * p.top_k;
  using Iter = typename std::conditional<Sorted, SortedChunkIter, ChunkIter>::type;
  KvRing<T, D, kStages, Iter> ring{sK, sV, static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h,
                                   static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h, p.k_s.t, p.v_s.t, p.Tk,
                                   lane};
  if constexpr (Sorted) ring.prod.init(sorted_selection(sel, p.top_k, p.block_size, pos, lane), p.block_size, pos);
  else ring.prod.init(sel, p.top_k, p.block_size, pos);
  Iter cons = ring.prod;
  ring.prime();

  OnlineSoftmaxRows<T, D> rows;
  rows.init();
  for (int it = 0; cons.valid(); ++it) {
    ring.refill(it);
    cp_async_wait<kStages - 1>();
    __syncwarp();
    rows.chunk(qa, ring.k_tile(it), ring.v_tile(it), cons.key0(), pos, scale_log2, lane);
    __syncwarp();
    cons.next();
  }
  cp_async_wait<0>();
  rows.store(p, b, hk, G, t, h0, lane);
}

// Query-tile forward (G <= 16, top_k <= 32): a CTA of kTileTokens consecutive
// tokens (a warp each) builds the union of their selected blocks (a bitmask
// over the blocks, compacted in ascending order) and, if the tokens use each
// union block at least min_block_reuse times on average, streams the union's
// chunks through one CTA-wide ring; each warp attends the chunks of its own
// list as they pass.  Otherwise it marks its tokens for the per-token kernel.
template <typename T, int D>
__global__ void __launch_bounds__(kTileTokens * 32, D == 64 ? 2 : 1) sparse_fwd_tile_kernel(SparseFwdParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int kThreads = kTileTokens * 32, kChunkElems = 16 * D;
  T* sKV = reinterpret_cast<T*>(smem_raw);  // [kTileStages][K, V][16][D]
  int* ulist = reinterpret_cast<int*>(sKV + kTileStages * 2 * kChunkElems);  // [kTileTokens * 32]
  int* warp_sums = ulist + kTileTokens * 32;                                 // [kTileTokens]
  int* slots = warp_sums + kTileTokens;                                      // [1]
  uint32_t* bits = reinterpret_cast<uint32_t*>(slots + 1);                   // [block words of the tile]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int G = p.Hq / p.Hkv, bs = p.block_size, b = blockIdx.z, hk = blockIdx.y;
  const int t0 = blockIdx.x * kTileTokens, t = t0 + warp;
  const bool active = t < p.Tq;
  const int pos = p.q_offset + (active ? t : t0);
  const int pos_last = p.q_offset + min(p.Tq - 1, t0 + kTileTokens - 1);
  const int words = pos_last / bs / 32 + 1;  // the bitmask covers blocks 0 .. pos_last / bs

  for (int i = tid; i < words; i += kThreads) bits[i] = 0u;
  if (tid == 0) *slots = 0;
  __syncthreads();
  const int32_t* sel = p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq + (active ? t : t0)) * p.top_k;
  const int list = active ? sorted_selection(sel, p.top_k, bs, pos, lane) : INT_MAX;
  if (list != INT_MAX) atomicOr(&bits[list / 32], 1u << (list % 32));
  const int n = __popc(__ballot_sync(0xffffffffu, list != INT_MAX));
  if (lane == 0) atomicAdd(slots, n);
  __syncthreads();

  // compact the bitmask into the ascending union list
  int U = 0;
  for (int w0 = 0; w0 < words; w0 += kThreads) {
    const int wi = w0 + tid;
    uint32_t word = wi < words ? bits[wi] : 0u;
    const int cnt = __popc(word);
    int incl = cnt;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += y;
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kTileTokens; ++w) {
      before += w < warp ? warp_sums[w] : 0;
      total += warp_sums[w];
    }
    for (int at = U + before + incl - cnt; word; word &= word - 1) ulist[at++] = wi * 32 + __ffs(word) - 1;
    U += total;
    __syncthreads();  // warp_sums is reused
  }
  const bool tiled = p.min_block_reuse >= 0.f && float(*slots) >= p.min_block_reuse * float(U);
  if (p.tile_counts && tid == 0) atomicAdd(&p.tile_counts[tiled ? 0 : 1], 1);
  if (!tiled) {
    if (active && lane == 0) p.lse[(int64_t(b) * p.Hq + hk * G) * p.Tq + t] = __uint_as_float(kLeftForPerToken);
    return;
  }

  uint32_t qa[D / 16][4];
  load_rows_frag<T, D>(qa, static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk * G) * p.q_s.h + int64_t(active ? t : t0) * p.q_s.t,
                       p.q_s.h, G, g, g + 8, c);
  const float scale_log2 = p.scale * kLog2e;
  const T* kbase = static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_s.b + hk * p.v_s.h;
  const int nsub = bs / 16, nchunks = U * nsub;
  // every thread copies the same pieces of each chunk: K rows then V rows, 16-byte pieces
  constexpr int CH = D / 8, kPieces = 2 * 16 * CH, NL = (kPieces + kThreads - 1) / kThreads;
  auto issue = [&](int ci) {
    if (ci < nchunks) {
      const int key0 = ulist[ci / nsub] * bs + (ci % nsub) * 16;
      if (key0 <= pos_last) {  // own blocks' chunks past the tile's last token are never read
        T* dst = sKV + (ci % kTileStages) * 2 * kChunkElems;
#pragma unroll
        for (int u = 0; u < NL; ++u) {
          const int i = tid + u * kThreads;
          if (kPieces % kThreads != 0 && i >= kPieces) break;
          const int part = i / (16 * CH), row = (i / CH) % 16, ch = i % CH, key = key0 + row;
          const bool ok = key < p.Tk;
          const T* src = part ? vbase + int64_t(ok ? key : 0) * p.v_s.t : kbase + int64_t(ok ? key : 0) * p.k_s.t;
          cp_async16(dst + part * kChunkElems + swz<D>(row, ch), src + ch * 8, ok);
        }
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int st = 0; st < kTileStages - 1; ++st) issue(st);

  OnlineSoftmaxRows<T, D> rows;
  rows.init();
  int at = 0;  // this warp's next list entry
  int want = __shfl_sync(0xffffffffu, list, 0);
  const int own = pos / bs;
  for (int ci = 0; ci < nchunks; ++ci) {
    cp_async_wait<kTileStages - 2>();
    __syncthreads();  // chunk ci has landed for all; every warp is done with chunk ci - 1
    issue(ci + kTileStages - 1);  // into the slot chunk ci - 1 used
    const int j = ulist[ci / nsub], sub = ci % nsub;
    if (j == want) {  // warp-uniform
      const int key0 = j * bs + sub * 16;
      const T* tile = sKV + (ci % kTileStages) * 2 * kChunkElems;
      if (key0 <= pos) rows.chunk(qa, tile, tile + kChunkElems, key0, pos, scale_log2, lane);
      if (sub == nsub - 1 || (j == own && key0 + 16 > pos)) {
        ++at;
        want = at < n ? __shfl_sync(0xffffffffu, list, at) : INT_MAX;
      }
    }
  }
  cp_async_wait<0>();
  if (active) rows.store(p, b, hk, G, t, 0, lane);
}

int tile_bitmask_words(const SparseFwdParams& p) {
  return (p.q_offset + p.Tq - 1) / p.block_size / 32 + 1;
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
  const bool sorted = p.top_k <= 32;
  // the tile kernel's shared memory grows with the bitmask over the key blocks
  // (1 KB per 8,192 blocks); past 48 KB of it every tile runs per token
  const size_t bitmask_bytes = size_t(tile_bitmask_words(p)) * 4;
  const bool tiles = RT == 1 && sorted && p.min_block_reuse >= 0.f && bitmask_bytes <= 48 * 1024;
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      if (tiles) {
        const size_t smem = size_t(kTileStages) * 2 * 16 * D * sizeof(T) +
                            (kTileTokens * 32 + kTileTokens + 1) * sizeof(int) + bitmask_bytes;
        auto kern = sparse_fwd_tile_kernel<T, D>;
        SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        dim3 grid((p.Tq + kTileTokens - 1) / kTileTokens, p.Hkv, p.B);
        kern<<<grid, kTileTokens * 32, smem, stream>>>(p);
        SSA_CUDA_CHECK(cudaGetLastError());
      }
      const int smem = kWarps * kStages * 2 * 16 * D * 2;
      auto kern = tiles ? sparse_fwd_kernel<T, D, true, true>
                        : sorted ? sparse_fwd_kernel<T, D, true, false> : sparse_fwd_kernel<T, D, false, false>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      dim3 grid((int)((int64_t(p.Tq) * RT + kWarps - 1) / kWarps), p.Hkv, p.B);
      kern<<<grid, kWarps * 32, smem, stream>>>(p);
    });
  });
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

}  // namespace ssa
