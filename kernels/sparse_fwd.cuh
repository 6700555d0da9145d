// Sparse (block top-k) attention forward: O and LSE.
//
// Design: one warp per (query token, up to 16 query heads of its KV group).
// The group's heads fill the M=16 rows of the tensor-core MMA, so every key
// chunk of a selected block is loaded once per group, and the causal mask is
// a per-column mask (all rows are the same token).  Keys stream through shared
// memory in 16-key chunks (cp.async, 3 stages per warp) with an online softmax
// in registers; the own block comes first so the running max is finite from
// the first chunk.  G > 16 uses ceil(G/16) warps per token; G < 16 pads rows.
// Query i sits at position q_offset + i of the Tk keys (api_types.cuh), so the
// same kernel serves training, a chunked prefill and decoding with a KV cache.
//
// Query tiles (G <= 16, top_k <= 32): neighbouring tokens of trained models
// select mostly the same blocks (engine/metrics/selection_locality: a block
// picked by one of 64 consecutive queries is picked by about 28 of them), yet
// the per-token walk loads each (token, block) pair's keys anew.  A first
// kernel takes 8 consecutive tokens per CTA, builds the union of their blocks
// and, when the tokens use each union block min_block_reuse times or more on
// average, streams the union's chunks once through a CTA-wide ring while each
// warp attends the chunks of its own token's list; tiles below that (random
// selections share almost nothing) are marked and left to the per-token kernel,
// launched second.  Measured slower than the per-token kernel alone (one
// barrier per chunk: each warp waits out the softmax chains of the warps that
// use the chunk), so it runs only when asked for (min_block_reuse >= 0).  With top_k <= 32 both walk a token's blocks in ascending
// order with the same arithmetic, so which kernel ran a tile never changes a
// bit of the output (and a chunk of queries still equals the same rows of the
// whole call).
#pragma once
#include "api_types.cuh"

namespace ssa {

struct SparseFwdParams {
  const void* q;  // (B, Hq, Tq, D) bf16/fp16, strides q_s
  const void* k;  // (B, Hkv, Tk, D), strides k_s
  const void* v;  // (B, Hkv, Tk, D), strides v_s
  void* o;        // out (B, Hq, Tq, D), strides o_s
  float* lse;     // out (B, Hq, Tq) contiguous: natural-log sum-exp of the scaled scores
  const int32_t* blocks;  // (B, Hkv, Tq, K) contiguous, from select_blocks (or any valid selection:
                          // slot 0 = own block, then distinct past blocks, -1 terminates)
  Strides4 q_s, k_s, v_s, o_s;
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // queries, keys, position of query 0 (api_types.cuh)
  int block_size = 16, top_k = 16;
  float scale = 0.f;  // softmax scale; 0 means 1/sqrt(D)
  DType dtype = DType::bf16;
  // a tile of tokens runs as a query tile when its selections use each block of
  // their union at least this many times on average; 0: every tile (when
  // G <= 16 and top_k <= 32), negative: none (the per-token kernel alone).
  // Off by default: on the H200 the query tiles ran slower than the per-token
  // kernel even on the shipped model's selection, where every tile qualifies
  // (32K, 32q/2kv d64: 0.788 against 0.577 ms; kernels/README.md)
  float min_block_reuse = -1.f;
  int* tile_counts = nullptr;  // optional, 2 ints the caller zeroes: tiles run as query tiles, tiles left per token
};

std::string sparse_fwd_supported(const SparseFwdParams& p);
std::string sparse_fwd(const SparseFwdParams& p, cudaStream_t stream);

}  // namespace ssa
