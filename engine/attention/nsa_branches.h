// NSA's compression and sliding-window branches (docs/method.md "The NSA baseline").
//
// The NSA baseline of the SSA code adds two gated branches to the block
// selection every model runs:
//   out = g_slc * selection + g_cmp * compressed + g_swa * window
// Both branches are plain LibTorch ops (exact, differentiable, any device);
// the CUDA kernels do not have them, so on a GPU they run as LibTorch ops
// next to whatever backend runs the selection branch. Semantics follow
// fla-org/flash-linear-attention's NSA (fla/ops/nsa/compression.py,
// fla/ops/nsa/parallel.py), which the authors' code builds on.
//
// Both follow the attention contract of attention.h:
//   q (B, Hq, Tq, D) at positions [q_offset, q_offset + Tq)
//   k, v (B, Hkv, Tk, D), positions [0, Tk), q_offset + Tq <= Tk
//   out (B, Hq, Tq, D); query head h reads KV head h / (Hq / Hkv).
// q and k are post-RoPE, so the compressed keys are pooled rotated keys.
#pragma once
#include <torch/torch.h>

namespace ssalab {

// Compression: attention over mean-pooled keys and values of the complete
// blocks of `block_size` tokens. The query at p sees block j iff
// (j+1)*block_size - 1 <= p (its own block once p is its last token); with
// no such block its output is 0. Scale 1/sqrt(D).
torch::Tensor compressed_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   int block_size, int64_t q_offset = 0);

// Sliding window: causal attention of the query at p over keys
// s with p - window < s <= p (`window` tokens, itself included). Scale 1/sqrt(D).
torch::Tensor window_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int window,
                               int64_t q_offset = 0);

// Naive per-query loops in double precision on the CPU, same contract. Only for tests.
torch::Tensor naive_compressed_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         int block_size, int64_t q_offset = 0);
torch::Tensor naive_window_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     int window, int64_t q_offset = 0);

}  // namespace ssalab
