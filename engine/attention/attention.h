// Attention behind one interface.
//
// The model hands post-RoPE q, k, v to an AttentionBackend and never touches
// scores itself, so a CUDA backend (kernels/) can replace the reference one
// per call: pick_backend() returns the fastest backend that supports the call,
// and the same `supports()` answers the UI when it greys out settings.
//
// The contract (docs/method.md "Attention with a cache"):
//   q (B, Hq, Tq, D)   k, v (B, Hkv, Tk, D)   out (B, Hq, Tq, D)
// Query i sits at position q_offset + i; keys hold positions [0, Tk), so a
// KV cache, a chunked prefill and a window of a long text are the same call,
// and q_offset + Tq <= Tk. Causal: a query at position p sees keys 0..p. The
// query's own block is the one holding p (p / block_size); block j can be
// selected once it is complete at p ((j+1)*block_size - 1 <= p). With
// q_offset = 0 and Tq = Tk this is ordinary causal self-attention.
// Query head h belongs to KV group h / (Hq / Hkv) (HF Llama's repeat_kv order).
#pragma once
#include <string>
#include <utility>

#include <torch/torch.h>

#include "engine/config.h"

namespace ssalab {

// How the blocks of a token are chosen (docs/method.md "Selection rules").
enum class SelectionRule {
  TopK,         // exact top-k of the group-summed block probabilities (the paper's text)
  NsaChunked,   // what the released checkpoints' kernel computes: the completed 16-block
                // chunks and the chunk holding the query take k/2 slots each (exact
                // top-k while the own block is in the first chunk, and whenever k < 16)
};
const char* to_string(SelectionRule r);
SelectionRule selection_rule_from_string(const std::string& s);  // "topk" | "nsa-chunked"

// The precision of the mean-pooled block keys selection scores against
// (docs/method.md "Selection rules"): the fp32 mean (what ssalab trains
// with), or that mean rounded to bf16, as the released checkpoints' kernel
// pools. Decoding's cache then stores them in bf16, half the bytes a step reads.
enum class PooledKeys { Fp32, Bf16 };
const char* to_string(PooledKeys p);
PooledKeys pooled_keys_from_string(const std::string& s);  // "fp32" | "bf16"
torch::ScalarType pooled_keys_dtype(PooledKeys p);           // kFloat | kBFloat16

struct SparseSpec {
  int block_size = 16;
  int top_k = 16;  // blocks per token, the forced local block included
  SelectionRule rule = SelectionRule::TopK;
  PooledKeys pooled_keys = PooledKeys::Fp32;
};

// The selection a model runs with unless told otherwise: its block_size,
// block_counts, the rule it was trained with (ModelConfig::selection_rule)
// and its key pooling (ModelConfig::pooled_keys).
SparseSpec model_sparse_spec(const ModelConfig& c);

// Result of block top-k selection (docs/method.md "Selection rules").
struct Selection {
  torch::Tensor blocks;  // (B, Hkv, Tq, K) int64; slot 0 = the query's own block;
                         // slots 1.. = past blocks by falling score (ties: lower index first);
                         // -1 = empty slot (fewer past blocks than K-1, or a chunk of the
                         // nsa-chunked rule with fewer candidates than its slots)
  int block_size = 16;
  int64_t q_offset = 0;  // position of query row 0 (the contract above)
};

// Empty string when `spec` can run on keys of length T (the positions the
// queries can see), else the reason. The one rule every caller asks: the
// backends' supports(), the config, the session and the UI.
std::string check_sparse_spec(const SparseSpec& spec, int64_t T);
// check_sparse_spec plus the shapes of the contract above; "" or the reason.
std::string check_attention_call(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                                 int64_t q_offset);
// What the attention backends say (supports()) about a call of this shape,
// asked without tensors of that size: the config, the session and the UI
// use it to refuse or grey out settings. The reference backend runs every
// device, so its answer is the rule; the CUDA backend only changes speed.
std::string attention_problem(int64_t Tq, int64_t Tk, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                              const SparseSpec& spec);

// Reference selection (no gradient): mean-pooled keys per complete block,
// softmax over the blocks complete at the query's position, summed over each
// KV group's heads, own block forced, the rest by `spec.rule`.
Selection select_blocks(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                        int64_t q_offset = 0);

// select_blocks from keys already pooled: block_keys (B, Hkv, Tk / block_size,
// D) holds the mean of each complete block of the Tk keys (a KV cache keeps
// them as blocks complete, so a decoding step does not pool the whole cache).
Selection select_blocks_pooled(const torch::Tensor& q, const torch::Tensor& block_keys, int64_t Tk,
                               const SparseSpec& spec, int64_t q_offset);

// Group-summed selection probabilities (B, Hkv, Tq, nblocks_complete); what the
// ranking uses. Exposed for the "selected blocks" view.
torch::Tensor selection_scores(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                               int64_t q_offset = 0);
// The same from pooled block keys (B, Hkv, nbc, D), as select_blocks_pooled.
torch::Tensor pooled_selection_scores(const torch::Tensor& q, const torch::Tensor& block_keys, int block_size,
                                      int64_t q_offset);

// (B, Hkv, Tq, Tk) bool: key s is attended by query i under `sel` (and s <= its position).
torch::Tensor selection_token_mask(const Selection& sel, int64_t Tk);
// (B, Hkv, Tq, nblocks of Tk) bool: block j is selected by query i.
torch::Tensor selection_block_mask(const Selection& sel, int64_t Tk);
// "" when Tq queries at positions q_offset.. fit in Tk keys (the contract
// above), else why not.
std::string offset_problem(int64_t q_offset, int64_t Tq, int64_t Tk);
// The fp32 mean of each block of `keys` (B, Hkv, capacity, D) that tokens
// [from_token, to_token) complete, written into block_keys (B, Hkv,
// capacity / block_size, D): a KV cache's pooled keys, pooled as selection
// pools them (rounded to bf16 when block_keys is bf16: PooledKeys::Bf16).
void pool_completed_blocks(const torch::Tensor& keys, torch::Tensor& block_keys, int64_t from_token, int64_t to_token,
                           int block_size);

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual const char* name() const = 0;
  // Empty when this backend can run the call, else why not.
  // Default arguments live here only: callers hold an AttentionBackend&.
  virtual std::string supports(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                               int64_t q_offset = 0) const = 0;

  virtual Selection select(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                           int64_t q_offset = 0) = 0;
  virtual torch::Tensor full(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             int64_t q_offset = 0) = 0;
  // The query positions come from sel.q_offset.
  virtual torch::Tensor sparse(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const Selection& sel) = 0;
  // Decoding: one query per sequence, q (B, Hq, 1, D) at position Tk - 1 of
  // the cache's keys k, v (B, Hkv, Tk, D), selecting by `spec` (top-k rule
  // or nsa-chunked) from the cache's pooled block keys (B, Hkv, Tk / bs, D).
  // Returns (B, Hq, 1, D); the selection (B, Hkv, 1, K) in *blocks_out when
  // given. The default (reference.cpp) selects with select_blocks_pooled()
  // and attends over the gathered keys of the selected blocks only, so a step
  // reads k blocks of the cache; the CUDA backend runs its decode kernel.
  virtual torch::Tensor decode(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& block_keys, const SparseSpec& spec,
                               torch::Tensor* blocks_out = nullptr);
  // Decoding's cache update: keys and values k, v (B, Hkv, T, D) stored at
  // positions [length, length + T) of k_cache, v_cache (B, Hkv, capacity, D),
  // and the fp32 mean of each block they complete into block_keys
  // (B, Hkv, capacity / block_size, D), fp32 or bf16 (the mean rounded:
  // PooledKeys::Bf16). The default runs LibTorch ops (two
  // copies, and a mean when a block completes); the CUDA backend one kernel.
  virtual void append_to_cache(const torch::Tensor& k, const torch::Tensor& v, torch::Tensor& k_cache,
                               torch::Tensor& v_cache, torch::Tensor& block_keys, int64_t length, int block_size);
  // Both outputs for the same q, k, v (SSA training). Returns {full, sparse}.
  virtual std::pair<torch::Tensor, torch::Tensor> dual(const torch::Tensor& q, const torch::Tensor& k,
                                                       const torch::Tensor& v, const Selection& sel) {
    return {full(q, k, v, sel.q_offset), sparse(q, k, v, sel)};
  }
  // SSA training's layer on whole sequences: the selection by `spec`, then
  // dual(). A backend may keep the selection in its own form between the two
  // (the CUDA one: the kernels' int32, with no conversion to int64 and back).
  virtual std::pair<torch::Tensor, torch::Tensor> select_and_dual(const torch::Tensor& q, const torch::Tensor& k,
                                                                  const torch::Tensor& v, const SparseSpec& spec) {
    return dual(q, k, v, select(q, k, spec));
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
// A CUDA tensor that falls back is logged once per reason (stderr) and the
// reason is kept for the app's status line (last_fallback()).
AttentionBackend& pick_backend(const torch::Tensor& q, const torch::Tensor& k, const SparseSpec& spec,
                               int64_t q_offset = 0);
// Why the latest CUDA call ran on the reference path ("" when none did).
std::string last_fallback();

// Naive per-token loops (double precision, CPU), with the same contract. Only for tests.
torch::Tensor naive_full_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   int64_t q_offset = 0);
torch::Tensor naive_sparse_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     const SparseSpec& spec, torch::Tensor* blocks_out = nullptr,
                                     int64_t q_offset = 0);

// SSA's alignment of one layer's gated per-head outputs (B, T, H, D):
// SmoothL1(h_full, h_sparse) (beta 1, mean), its gradient reaching both.
// The paper's two losses, sparsity = SmoothL1(h_full, sg(h_sparse)) (full
// imitates sparse) and commitment = SmoothL1(sg(h_full), h_sparse) (sparse
// stays near full), each have this value, and the gradient of their sum is
// this loss's gradient, bit for bit: the same training from one loss a layer
// instead of two, half the operators (a step's cost is mostly launches).
torch::Tensor alignment_loss(const torch::Tensor& h_full, const torch::Tensor& h_sparse);

}  // namespace ssalab
