// Full-attention statistics per query row, and a block-pooled attention map,
// without ever holding a Tq x Tk matrix (docs/method.md "The quantities the
// app shows").
//
// Design: a FlashAttention-style pass over Q K^T only (no V).  One CTA holds 128
// query tokens of one head (16 per warp; at d64 on sm_90a the two warpgroups
// each take 64 rows with one wgmma, see wgmma.cuh), key chunks stream through
// shared memory.  Pass 1 keeps, per row, the softmax sum, sum(p*x) (entropy =
// lse - E[x]), the mass on block 0, the mass on the row's selected blocks (a
// per-token bitmask in shared memory) and the score of token 0; each thread
// weighs its quarter of the row against its own reference, raised only when a
// chunk's weights grow past 2^32, and the quarters merge at the end.  Pass 2
// (only when a map is asked for) recomputes the scores with the now known LSE
// and adds each 16-key group's probability, summed over the warp's rows, into
// its (pooled row, key block) cell with L2 reductions; with the selection it
// also splits that mass into the kept part, renormalised per row by the
// selected mass from pass 1 (the sparse map), and the dropped part.  Entropies
// are in nats.  Query row i sits at position q_offset + i of the Tk keys
// (api_types.cuh), so a window of queries against a longer key prefix gives
// the same rows as the whole sequence.
#pragma once
#include "api_types.cuh"

namespace ssa {

enum StatIndex : int {
  kStatLse = 0,        // natural-log sum-exp of the scaled scores
  kStatEntropy = 1,    // -sum p ln p (nats)
  kStatSinkToken = 2,  // p(token 0)
  kStatSinkBlock = 3,  // mass on block 0 (tokens 0 .. bs-1)
  kStatSelected = 4,   // mass inside the row's selected blocks (AttnSparsity)
  kStatCount = 5
};

struct StatsParams {
  const void* q;  // (B, Hq, Tq, D), strides q_s
  const void* k;  // (B, Hkv, Tk, D), strides k_s
  const int32_t* blocks;  // (B, Hkv, Tq, K) selection; may be null (kStatSelected then 0)
  Strides4 q_s, k_s;
  float* stats;  // out (B, Hq, Tq, kStatCount) contiguous
  float* map;    // out (B, Hmap, ceil(Tq / map_row_pool), nb) contiguous, nb = ceil(Tk/bs),
                 // Hmap = map_mean_heads ? 1 : Hq; each cell = mean over its rows (and heads)
                 // of the attention mass on that key block.  May be null (no pass 2).
  float* map_sparse = nullptr;   // optional, same layout: the sparse-attention row (the full row
                                 // restricted to the row's selected blocks and renormalised by its
                                 // selected mass), pooled the same way.  Needs map and blocks.
  float* map_dropped = nullptr;  // optional, same layout: full-attention mass on blocks the row did
                                 // not select (map - dropped = the kept mass).  Needs map and blocks.
  int map_row_pool = 64;  // query rows per map row: a multiple of 16
  bool map_mean_heads = false;
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // queries, keys, position of query 0 (api_types.cuh)
  int block_size = 16, top_k = 16;
  float scale = 0.f;  // 0 means 1/sqrt(D)
  DType dtype = DType::bf16;
};

size_t stats_map_elems(const StatsParams& p);
std::string attn_stats_supported(const StatsParams& p);
std::string attn_stats(const StatsParams& p, cudaStream_t stream);

}  // namespace ssa
