// Device helpers shared by the attention kernels: walking one token's selected
// blocks in 16-key chunks (in slot order, or ascending), the per-warp cp.async
// ring that streams those chunks of K and V, the A fragments of a token's head
// rows, and the per-row bitmask of selected blocks that the full-attention
// passes (statistics, dual stream) test.
#pragma once
#include <climits>

#include "common.cuh"

namespace ssa {

// The 16-key chunks a query attends: its own block first (only the chunks that
// start at or before its position `pos`), then each selected past block, until
// slot K or a -1.
struct ChunkIter {
  const int32_t* sel;  // this token's K slots
  int K, bs;
  int slot, sub, nsub, j;
  __device__ __forceinline__ void init(const int32_t* s, int k, int block, int pos) {
    sel = s;
    K = k;
    bs = block;
    slot = 0;
    sub = 0;
    j = pos / bs;
    nsub = (pos - j * bs) / 16 + 1;
  }
  __device__ __forceinline__ bool valid() const { return slot < K; }
  __device__ __forceinline__ int key0() const { return j * bs + sub * 16; }
  __device__ __forceinline__ void next() {
    if (++sub == nsub) {
      sub = 0;
      if (++slot < K) {
        j = sel[slot];
        if (j < 0) slot = K;
        nsub = bs / 16;
      }
    }
  }
};

// A token's selected blocks in ascending order, one per lane (lane i holds the
// i-th; lanes past the count hold INT_MAX), for top_k <= 32: slot 0 is the own
// block pos / bs, then the past blocks until the first -1.  Blocks after the
// own one (all their keys are masked: they add nothing) and repeats are
// dropped.  The query-tile forward walks the union of a tile's lists in this
// order and the per-token forward walks the list itself, so both add a token's
// chunks in the same order: their outputs are bitwise equal, whichever path a
// tile takes.
__device__ __forceinline__ int warp_sort_ascending(int x, int lane) {
#pragma unroll
  for (int k = 2; k <= 32; k <<= 1)
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1) {
      const int y = __shfl_xor_sync(0xffffffffu, x, j);
      x = (((lane & j) == 0) == ((lane & k) == 0)) ? min(x, y) : max(x, y);
    }
  return x;
}
__device__ __forceinline__ int sorted_selection(const int32_t* sel, int K, int bs, int pos, int lane) {
  const int own = pos / bs;
  int j = lane == 0 ? own : lane < K ? sel[lane] : INT_MAX;
  const unsigned ended = __ballot_sync(0xffffffffu, lane > 0 && lane < K && j < 0);
  if (ended && lane >= __ffs(ended) - 1) j = INT_MAX;  // -1 ends the list
  if (j > own) j = INT_MAX;
  j = warp_sort_ascending(j, lane);
  const int before = __shfl_up_sync(0xffffffffu, j, 1);
  if (lane > 0 && j == before) j = INT_MAX;
  return warp_sort_ascending(j, lane);
}

// The same walk as ChunkIter over a sorted_selection list (all lanes of the
// warp step it together: the next block comes by shuffle).
struct SortedChunkIter {
  int list;  // this lane's entry of the ascending list
  int n, bs, pos;
  int i, sub, nsub, j;
  __device__ __forceinline__ void set_block() {
    j = __shfl_sync(0xffffffffu, list, i);
    nsub = j == pos / bs ? (pos - j * bs) / 16 + 1 : bs / 16;
  }
  __device__ __forceinline__ void init(int lane_list, int block, int position) {
    list = lane_list;
    n = __popc(__ballot_sync(0xffffffffu, lane_list != INT_MAX));
    bs = block;
    pos = position;
    i = 0;
    sub = 0;
    set_block();
  }
  __device__ __forceinline__ bool valid() const { return i < n; }
  __device__ __forceinline__ int key0() const { return j * bs + sub * 16; }
  __device__ __forceinline__ void next() {
    if (++sub == nsub) {
      sub = 0;
      if (++i < n) set_block();
    }
  }
};

// One warp copies rows key0..key0+15 of a (T_len, D) slice into a swizzled 16 x D
// tile; rows at or past T_len are zero-filled.
template <typename T, int D>
__device__ __forceinline__ void load_chunk16(T* dst, const T* src, int64_t stride_t, int key0, int T_len, int lane) {
  constexpr int CH = D / 8;
#pragma unroll
  for (int u = 0; u < 16 * CH / 32; ++u) {
    int i = lane + 32 * u, row = i / CH, ch = i % CH;
    int key = key0 + row;
    bool ok = key < T_len;
    cp_async16(dst + swz<D>(row, ch), src + int64_t(ok ? key : 0) * stride_t + ch * 8, ok);
  }
}

// The producer side of one warp's K/V ring: `Stages` slots of a 16 x D K tile
// and a V tile; slot st holds chunk st, st + Stages, ...  prime() issues the
// first Stages - 1 chunks, refill(it) the chunk that slot of iteration it
// frees; each issue is one cp.async group (empty past the walk's end, so the
// consumer's cp_async_wait<Stages - 1> count stays right).  Kernels build it in
// place: a helper that returned a primed ring by value made nvcc 13 read the
// selection through shared-memory loads (an illegal-instruction fault).
template <typename T, int D, int Stages, typename Iter = ChunkIter>
struct KvRing {
  T* sK;  // [Stages][16][D]
  T* sV;  // [Stages][16][D]
  const T *k, *v;  // this (batch, kv head)'s (Tk, D) slices
  int64_t k_stride_t, v_stride_t;
  int T_len, lane;  // T_len: the number of keys (Tk)
  Iter prod;
  __device__ __forceinline__ void issue(int st) {
    if (prod.valid()) {
      load_chunk16<T, D>(sK + st * 16 * D, k, k_stride_t, prod.key0(), T_len, lane);
      load_chunk16<T, D>(sV + st * 16 * D, v, v_stride_t, prod.key0(), T_len, lane);
      prod.next();
    }
    cp_async_commit();
  }
  __device__ __forceinline__ void prime() {
#pragma unroll
    for (int st = 0; st < Stages - 1; ++st) issue(st);
  }
  __device__ __forceinline__ void refill(int it) { issue((it + Stages - 1) % Stages); }
  __device__ __forceinline__ const T* k_tile(int it) const { return sK + (it % Stages) * 16 * D; }
  __device__ __forceinline__ const T* v_tile(int it) const { return sV + (it % Stages) * 16 * D; }
};

// acc (16 rows x 16 keys: two n8 tiles) += A (16 rows x D, fragments a) times
// tile^T, where tile is a swizzled 16-key x D chunk: S = Q K^T, dP = dO V^T.
template <typename T, int D>
__device__ __forceinline__ void mma_rows_tile_t(float (&acc)[2][4], const uint32_t (&a)[D / 16][4], const T* tile,
                                                int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t b0, b1, b2, b3;
    ldsm_x4(b0, b1, b2, b3, smem_u32(tile + swz<D>((lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1))));
    mma16816<T>(acc[0], a[ks], b0, b1);
    mma16816<T>(acc[1], a[ks], b2, b3);
  }
}

// acc (16 rows x D: D/8 n8 tiles) += P (16 rows x 16 keys, fragment pa) times
// the swizzled 16-key x D tile: O += P V, dQ += dS K.
template <typename T, int D>
__device__ __forceinline__ void mma_p_tile(float (&acc)[D / 8][4], const uint32_t (&pa)[4], const T* tile, int lane) {
#pragma unroll
  for (int dn = 0; dn < D / 16; ++dn) {
    uint32_t b0, b1, b2, b3;
    ldsm_x4_t(b0, b1, b2, b3, smem_u32(tile + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, dn * 2 + (lane >> 4))));
    mma16816<T>(acc[2 * dn], pa, b0, b1);
    mma16816<T>(acc[2 * dn + 1], pa, b2, b3);
  }
}

// mma A fragments (m16 x k16 per ks) of head rows r0 / r1 (= g, g + 8 of the
// tile) of one token; rows at or beyond G are zero.  base: row 0 of the group.
template <typename T, int D>
__device__ __forceinline__ void load_rows_frag(uint32_t (&a)[D / 16][4], const T* base, int64_t stride_h, int G,
                                               int r0, int r1, int c) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    int d0 = ks * 16 + 2 * c;
    a[ks][0] = r0 < G ? *reinterpret_cast<const uint32_t*>(base + r0 * stride_h + d0) : 0u;
    a[ks][1] = r1 < G ? *reinterpret_cast<const uint32_t*>(base + r1 * stride_h + d0) : 0u;
    a[ks][2] = r0 < G ? *reinterpret_cast<const uint32_t*>(base + r0 * stride_h + d0 + 8) : 0u;
    a[ks][3] = r1 < G ? *reinterpret_cast<const uint32_t*>(base + r1 * stride_h + d0 + 8) : 0u;
  }
}

// All THREADS threads of a CTA copy rows r0 .. r0 + ROWS - 1 of N (T, D) slices
// (src[x], row stride stride[x]) into swizzled ROWS x D tiles dst[x]; rows at or
// past T_len are zero-filled.  A fixed trip count per thread.
template <typename T, int D, int ROWS, int THREADS, int N>
__device__ __forceinline__ void load_row_tiles(T* const (&dst)[N], const T* const (&src)[N],
                                               const int64_t (&stride)[N], int r0, int T_len, int tid) {
  constexpr int CH = D / 8, NL = ROWS * CH / THREADS;
  static_assert(NL * THREADS == ROWS * CH, "tile pieces divide among the threads");
#pragma unroll
  for (int u = 0; u < NL; ++u) {
    const int i = tid + u * THREADS, row = i / CH, ch = i % CH, r = r0 + row;
    const bool ok = r < T_len;
#pragma unroll
    for (int x = 0; x < N; ++x)
      cp_async16(dst[x] + swz<D>(row, ch), src[x] + int64_t(ok ? r : 0) * stride[x] + ch * 8, ok);
  }
}

// bits[r * words + j / 32] bit j % 32: query row q0 + r selected block j, for
// the `rows` rows from q0 (the selection `sel` is this (batch, kv head)'s
// (Tq, K) slice).  Called by all `nthreads` threads of the CTA; ends with a
// barrier.
__device__ __forceinline__ void build_selection_bits(uint32_t* bits, const int32_t* sel, int q0, int rows, int words,
                                                     int Tq, int K, int tid, int nthreads) {
  for (int i = tid; i < rows * words; i += nthreads) bits[i] = 0u;
  __syncthreads();
  for (int i = tid; i < rows * K; i += nthreads) {
    const int r = i / K, t = q0 + r;
    if (t < Tq) {
      const int j = sel[int64_t(t) * K + i % K];
      if (j >= 0) atomicOr(&bits[r * words + j / 32], 1u << (j % 32));
    }
  }
  __syncthreads();
}

}  // namespace ssa
