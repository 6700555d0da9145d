// Device helpers shared by the sparse forward and dQ kernels: walking one
// token's selected blocks in 16-key chunks, and loading a chunk of K and V.
#pragma once
#include "common.cuh"

namespace ssa {

// The 16-key chunks a token attends: its own block first (only the chunks that
// start at or before t), then each selected past block, until slot K or a -1.
struct ChunkIter {
  const int32_t* sel;  // this token's K slots
  int K, bs;
  int slot, sub, nsub, j;
  __device__ __forceinline__ void init(const int32_t* s, int k, int block, int t) {
    sel = s;
    K = k;
    bs = block;
    slot = 0;
    sub = 0;
    j = t / bs;
    nsub = (t - j * bs) / 16 + 1;
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

// One warp copies rows key0..key0+15 of a (T, D) slice into a swizzled 16 x D tile.
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

}  // namespace ssa
