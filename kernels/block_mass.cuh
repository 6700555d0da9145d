// Full-attention mass of each selected block of every query row, from the
// row's known log-sum-exp: mass(h, t, slot) = sum over the visible keys s of
// block blocks[slot] of exp(q_h . k_s * scale - lse(h, t)); and, in one more
// column, the mass of block 0 (keys 0 .. bs-1 that the row sees).
//
// What a new selection needs once an analysis of the same q and k has the
// full rows' LSE (attn_stats.cuh kStatLse): the selected mass (AttnSparsity),
// the block-0 mass under a new block size, and per-block masses to pool into
// the kept, sparse and dropped maps. It reads only k * block_size keys per
// row, where a fresh analysis scores all of them twice.
//
// Design: one warp per query token and KV group; the group's heads' q rows
// (scaled to log2 units, fp32) sit in shared memory. A pass covers min(bs, 32)
// keys of a block, one per lane, each lane holding its key in registers; when
// bs < 32 the lanes split into 32 / bs sets that take every (32 / bs)-th head,
// so no lane idles. A lane's partial sums meet over its set by shuffles.
#pragma once
#include "api_types.cuh"

namespace ssa {

struct BlockMassParams {
  const void* q;  // (B, Hq, Tq, D), strides q_s
  const void* k;  // (B, Hkv, Tk, D), strides k_s
  Strides4 q_s, k_s;
  const int32_t* blocks;  // (B, Hkv, Tq, K) contiguous selection; -1 = empty slot (mass 0)
  const float* lse;       // (B, Hq, Tq) contiguous: natural-log sum-exp of each full row's scaled scores
  float* mass;            // out (B, Hq, Tq, K + 1) contiguous: slots 0 .. K-1, then block 0
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // queries, keys, position of query 0 (api_types.cuh)
  int block_size = 16, top_k = 16;
  float scale = 0.f;  // 0 means 1/sqrt(D)
  DType dtype = DType::bf16;
};

std::string block_mass_supported(const BlockMassParams& p);
std::string block_mass(const BlockMassParams& p, cudaStream_t stream);

}  // namespace ssa
