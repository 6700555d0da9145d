// Attention behind one interface.
//
// The model hands post-RoPE q, k, v to an AttentionBackend and never touches
// scores itself, so a CUDA backend (kernels/) can replace the reference one
// per call: pick_backend() returns the fastest backend that supports the call,
// and the same `supports()` answers the UI when it greys out settings.
//
// Shapes throughout:  q (B, Hq, T, D)   k, v (B, Hkv, T, D)   out (B, Hq, T, D)
// Query head h belongs to KV group h / (Hq / Hkv) (HF Llama's repeat_kv order).
#pragma once
#include <string>
#include <utility>

#include <torch/torch.h>

namespace ssalab {

struct SparseSpec {
  int block_size = 16;
  int top_k = 16;  // blocks per token, the forced local block included
};

// Result of block top-k selection (SSA.md "Sparse attention").
struct Selection {
  torch::Tensor blocks;  // (B, Hkv, T, K) int64; slot 0 = the query's own block;
                         // slots 1.. = past blocks by falling score (ties: lower index first);
                         // -1 = empty slot (fewer past blocks than K-1)
  int block_size = 16;
};

// Empty string when `spec` can run on a sequence of length T, else the reason.
std::string check_sparse_spec(const SparseSpec& spec, int64_t T);

// Reference selection (no gradient): mean-pooled keys per complete block,
// softmax over the blocks complete at t, summed over each KV group's heads,
// local block forced, top-(K-1) of the past blocks.
Selection select_blocks(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec);

// Group-summed selection probabilities (B, Hkv, T, nblocks_complete); what the
// ranking uses. Exposed for the "selected blocks" view.
torch::Tensor selection_scores(const torch::Tensor& q, const torch::Tensor& k, int block_size);

// (B, Hkv, T, T) bool: key s is attended by query t under `sel` (and s <= t).
torch::Tensor selection_token_mask(const Selection& sel, int64_t T);
// (B, Hkv, T, nblocks) bool: block j is selected by query t.
torch::Tensor selection_block_mask(const Selection& sel, int64_t T);

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual const char* name() const = 0;
  // Empty when this backend can run the call, else why not.
  virtual std::string supports(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec) const = 0;

  virtual Selection select(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec) = 0;
  virtual torch::Tensor full(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) = 0;
  virtual torch::Tensor sparse(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const Selection& sel) = 0;
  // Both outputs for the same q, k, v (SSA training). Returns {full, sparse}.
  virtual std::pair<torch::Tensor, torch::Tensor> dual(const torch::Tensor& q, const torch::Tensor& k,
                                                       const torch::Tensor& v, const Selection& sel) {
    return {full(q, k, v), sparse(q, k, v, sel)};
  }
};

// Dense masked attention in LibTorch ops: exact, differentiable, any device.
AttentionBackend& reference_backend();
// The CUDA kernel backend when built with SSALAB_WITH_CUDA, else nullptr.
AttentionBackend* cuda_backend();
// Scores per row chunk in the LibTorch attention paths (the reference backend
// and the analysis): about 4 MB in fp32, a size malloc recycles, while bigger
// temporaries are fresh mmap()s whose page faults cost more than the math.
constexpr int64_t kScoreChunkElements = int64_t(1) << 20;

// Best backend for this call: CUDA when it supports it, else the reference.
AttentionBackend& pick_backend(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec);

// Naive per-token loops (double precision, CPU). Only for tests.
torch::Tensor naive_full_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
torch::Tensor naive_sparse_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     const SparseSpec& spec, torch::Tensor* blocks_out = nullptr);

// SSA alignment losses on gated per-head outputs (B, T, H, D) of one layer.
struct AlignmentLoss {
  torch::Tensor sparsity;    // SmoothL1(h_full, stopgrad(h_sparse)): full imitates sparse
  torch::Tensor commitment;  // SmoothL1(stopgrad(h_full), h_sparse): sparse stays near full
};
AlignmentLoss alignment_losses(const torch::Tensor& h_full, const torch::Tensor& h_sparse);

}  // namespace ssalab
