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
};

std::string sparse_fwd_supported(const SparseFwdParams& p);
std::string sparse_fwd(const SparseFwdParams& p, cudaStream_t stream);

}  // namespace ssa
