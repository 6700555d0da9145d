// Sparse (block top-k) attention backward: dQ, dK, dV, deterministic, no atomics.
//
// Design: two kernels (plus the transposed index from select.cuh).
//  1. dQ: the forward's walk (one warp per token and up to 16 heads of its
//     group) recomputing P from the saved LSE: dP = dO V^T, dS = P (dP - delta),
//     dQ = scale * dS K.  It first computes delta = rowsum(dO * O) for its rows
//     and stores it for kernel 2.  Each token owns its dQ rows: no atomics.
//  2. dK/dV: one CTA per key block, walking the transposed index (the tokens
//     that selected the block, from build_block_index).  Rows = (token, head)
//     pairs of the group, gathered 64 per stage into shared memory with
//     cp.async (lse/delta too, so no thread stalls on the scattered reads);
//     the block's keys are the MMA M dimension (bs/16 warps, K/V fragments in
//     registers at d64), and for bs < 64 the rows are split over 4/(bs/16)
//     warps whose partial sums are added in a fixed order.  A block selected by
//     more than seg_tokens tokens is split into several work items (a CTA
//     each) whose fp32 partials a small kernel adds in item order.  No atomics:
//     bitwise reproducible.
// Queries follow the contract of api_types.cuh (query i at position q_offset
// + i of the Tk keys): dQ has the queries' shape, dK and dV the keys', and
// keys no query attended get zero gradients.  Training runs Tq = Tk, q_offset 0.
#pragma once
#include "api_types.cuh"

namespace ssa {

struct SparseBwdParams {
  const void* q;     // (B, Hq, Tq, D), strides q_s
  const void* k;     // (B, Hkv, Tk, D), strides k_s
  const void* v;     // (B, Hkv, Tk, D), strides v_s
  const void* o;     // (B, Hq, Tq, D) forward output, strides o_s
  const void* dout;  // (B, Hq, Tq, D) upstream gradient, strides do_s
  const float* lse;  // (B, Hq, Tq) contiguous, from sparse_fwd
  const int32_t* blocks;          // (B, Hkv, Tq, K) contiguous selection
  const int32_t* index_offsets;   // (B, Hkv, nb+1) from build_block_index, nb = ceil(Tk/bs)
  const int32_t* index_tokens;    // (B, Hkv, Tq*K) from build_block_index
  void* dq;  // out (B, Hq, Tq, D), strides dq_s
  void* dk;  // out (B, Hkv, Tk, D), strides dk_s
  void* dv;  // out (B, Hkv, Tk, D), strides dv_s
  void* workspace = nullptr;  // sparse_bwd_workspace_bytes(): delta, segment table, partial dK/dV
  int seg_tokens = 512;  // dK/dV work item = one key block x at most this many selecting tokens;
                         // blocks selected by more tokens are split and their partial sums
                         // added in a fixed order (load balance for popular/sink blocks)
  Strides4 q_s, k_s, v_s, o_s, do_s, dq_s, dk_s, dv_s;
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // queries, keys, position of query 0 (api_types.cuh)
  int block_size = 16, top_k = 16;
  float scale = 0.f;  // 0 means 1/sqrt(D)
  DType dtype = DType::bf16;
};

size_t sparse_bwd_workspace_bytes(const SparseBwdParams& p);
std::string sparse_bwd_supported(const SparseBwdParams& p);
std::string sparse_bwd(const SparseBwdParams& p, cudaStream_t stream);

}  // namespace ssa
