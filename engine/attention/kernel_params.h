// LibTorch tensors -> the CUDA kernels' params structs (kernels/*.cuh).
//
// The one place that turns tensors into what a launcher takes: shapes (the
// contract of attention.h: q (B, Hq, Tq, D) at positions q_offset.., k and v
// (B, Hkv, Tk, D)), element strides, dtype and data pointers.  The CUDA
// backend, the GPU analysis and the kernel benchmark all fill their params
// here.  Inputs are CUDA tensors in bf16 or fp16 with the last dim contiguous;
// selections and index lists int32, LSE and statistics fp32 (checked, with
// the tensor's name in the message).  An undefined output tensor leaves its
// pointer null, so the same call also answers a *_supported() question before
// anything is allocated.  Workspaces stay with the caller: their size follows
// from the filled shape (*_workspace_bytes(params)), then the pointer is set.
//
// Only for builds with the CUDA kernels (SSALAB_WITH_CUDA); the kernels'
// headers are plain C++ plus cuda_runtime.h.
#pragma once
#include <torch/torch.h>

#include "kernels/attn_stats.cuh"
#include "kernels/block_mass.cuh"
#include "kernels/decode.cuh"
#include "kernels/experimental/dual_bwd.cuh"
#include "kernels/experimental/dual_fwd.cuh"
#include "kernels/select.cuh"
#include "kernels/sparse_bwd.cuh"
#include "kernels/sparse_fwd.cuh"

namespace ssalab {

ssa::DType kernel_dtype(const torch::Tensor& t);      // bf16 or fp16, else throws
ssa::Strides4 kernel_strides(const torch::Tensor& t);  // (B, H, T, D) with the last dim contiguous, else throws

// The shape fields every params struct has.
struct KernelShape {
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;
  int block_size = 16, top_k = 16;
  ssa::DType dtype = ssa::DType::bf16;
};
// From q (B, Hq, Tq, D) and k (B, Hkv, Tk, D); throws on sizes past int.
KernelShape kernel_shape(const torch::Tensor& q, const torch::Tensor& k, int block_size, int top_k, int64_t q_offset);

template <class Params>
Params& set_shape(Params& p, const KernelShape& s) {
  p.B = s.B; p.Hq = s.Hq; p.Hkv = s.Hkv; p.D = s.D;
  p.Tq = s.Tq; p.Tk = s.Tk; p.q_offset = s.q_offset;
  p.block_size = s.block_size; p.top_k = s.top_k; p.dtype = s.dtype;
  return p;
}

// Selection: blocks (B, Hkv, Tq, K) and counts (B, Hkv, Tq) int32; kbar is the workspace.
ssa::SelectParams select_params(const torch::Tensor& q, const torch::Tensor& k, int block_size, int top_k,
                                int64_t q_offset, const torch::Tensor& blocks = {}, const torch::Tensor& counts = {});

// Transposed index of a selection (B, Hkv, Tq, K) over Tk keys: offsets
// (B, Hkv, nb + 1) and tokens (B, Hkv, Tq * K) int32; work is the workspace.
ssa::BlockIndexParams block_index_params(const torch::Tensor& blocks, int64_t Tk, int block_size,
                                         const torch::Tensor& offsets = {}, const torch::Tensor& tokens = {});

// Sparse forward: o like q, lse (B, Hq, Tq) fp32; top_k from blocks (B, Hkv, Tq, K).
ssa::SparseFwdParams sparse_fwd_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& blocks, int block_size, int64_t q_offset,
                                       const torch::Tensor& o = {}, const torch::Tensor& lse = {});

// Decoding (Tq = 1 at position Tk - 1): block_keys (B, Hkv, >= Tk / bs, D)
// fp32 with the last dim contiguous; o like q; blocks (B, Hkv, K) int32 or
// undefined. The workspace pointer is the caller's (decode_workspace_bytes).
// nsa_chunked: the released checkpoints' rule instead of the exact top-k.
ssa::DecodeParams decode_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& block_keys, int block_size, int top_k, bool nsa_chunked,
                                const torch::Tensor& o = {}, const torch::Tensor& blocks = {});
// The cache update: k, v (B, Hkv, T, D) into k_cache, v_cache (B, Hkv, capacity, D) at `length`.
ssa::AppendParams append_params(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& k_cache,
                                const torch::Tensor& v_cache, const torch::Tensor& block_keys, int64_t length,
                                int block_size);

// Sparse backward: the forward's tensors, the upstream gradient (like o), the
// transposed index and the three gradients; workspace is the caller's.
struct SparseBwdTensors {
  torch::Tensor q, k, v, o, lse, blocks;  // as for sparse_fwd_params
  torch::Tensor dout;                     // like o
  torch::Tensor index_offsets, index_tokens;
  torch::Tensor dq, dk, dv;  // like q, k, v
};
ssa::SparseBwdParams sparse_bwd_params(const SparseBwdTensors& t, int block_size, int64_t q_offset);

// Full-attention statistics: blocks may be undefined (no selected mass); stats
// (B, Hq, Tq, kStatCount) fp32; the maps (flat fp32, stats_map_elems) are set
// by the caller, who also chooses their pooling.
ssa::StatsParams stats_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& blocks,
                              int block_size, int top_k, int64_t q_offset, const torch::Tensor& stats = {});

// Per-block masses of a selection from the full rows' LSE: blocks (B, Hkv,
// Tq, K) int32, lse (B, Hq, Tq) fp32, mass (B, Hq, Tq, K + 1) fp32.
ssa::BlockMassParams block_mass_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& blocks,
                                       const torch::Tensor& lse, int block_size, int64_t q_offset,
                                       const torch::Tensor& mass = {});

// The experimental fused dual stream (whole sequences): outputs like q, LSEs (B, Hq, T) fp32.
struct DualTensors {
  torch::Tensor q, k, v, blocks;
  torch::Tensor o_full, o_sparse, lse_full, lse_sparse;
  torch::Tensor do_full, do_sparse;  // backward only: the two outputs' gradients
  torch::Tensor dq, dk, dv;          // backward only
};
ssa::DualFwdParams dual_fwd_params(const DualTensors& t, int block_size);
ssa::DualBwdParams dual_bwd_params(const DualTensors& t, int block_size);

}  // namespace ssalab
