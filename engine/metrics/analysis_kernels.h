// The attention analysis of one layer on the GPU kernels (kernels/select.cuh,
// kernels/attn_stats.cuh): what analysis.cpp computes with chunked LibTorch
// ops, in two passes over Q K^T that never hold more than O(T * blocks).
// Used for CUDA tensors when no token-level map is wanted; q and k are cast to
// bf16 (fp16 stays fp16), so figures can differ from the fp32 path in the
// third or fourth digit and near-tied selections may pick the other block.
#pragma once
#include <torch/torch.h>

#include "engine/attention/attention.h"

namespace ssalab {

// The dtype the kernels read q and k in: fp16 stays fp16, anything else is
// cast to bf16 (so a reuse of their figures must round the same way).
torch::ScalarType kernel_input_dtype(const torch::Tensor& q);

// Queries q (1, H, Tq, D) at positions q_offset.. against keys k (1, Hkv, Tk, D)
// (attention.h's contract; the whole sequence: Tq = Tk, q_offset 0).
struct KernelLayerRows {
  torch::Tensor blocks;  // (1, Hkv, Tq, K) int64 selection
  // (H, Tq) float per query row
  torch::Tensor sparsity, entropy, sink_token, sink_block, lse;
  // (H, n_rows, nb) float: mean over each cell's query rows of the mass per key
  // block (n_rows = ceil(Tq / cell_size), nb = ceil(Tk / block_size))
  torch::Tensor map_full, map_sparse, map_dropped;
};

// Fills `out` and returns true when the CUDA kernels can run this layer
// (CUDA build, CUDA tensors, a supported shape and selection rule); returns
// false otherwise so the caller falls back to the LibTorch path. Errors of a
// launch throw.
bool analyze_layer_kernels(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec, int cell_size,
                           KernelLayerRows& out, int64_t q_offset = 0);

// A new selection of q and k on the GPU and the full-attention mass of each
// selected block, from the full rows' log-sum-exp `row_lse` (H, Tq) that an
// analysis of the same q and k measured (kernels/block_mass.cuh): what a k or
// block-size change needs when the rest of the rows is known.
struct KernelSelectionMass {
  torch::Tensor blocks;  // (1, Hkv, Tq, K) int64 selection
  torch::Tensor mass;    // (H, Tq, K + 1) float: each slot's mass (0 when empty), then block 0's
};
// Fills `out` and returns true when the kernels can run it; false otherwise
// (the caller falls back to LibTorch ops).
bool selection_mass_kernels(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                            const torch::Tensor& row_lse, KernelSelectionMass& out);

}  // namespace ssalab

namespace ssalab {
// `t` copied to the host; a CUDA tensor through a side stream of its device
// (so the copy does not queue behind the work on the current stream; `t`
// must be complete, as an analysis's results are once it returns).
torch::Tensor to_host_off_stream(const torch::Tensor& t);
}  // namespace ssalab
