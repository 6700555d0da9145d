// One decoder builder for every supported family (config.h's Arch table):
// RMSNorm, RoPE (default, linear or llama3 scaling), SwiGLU, GQA, and the
// family flags of ModelConfig: q/k/v (and o) biases, MLP biases, per-head
// q/k RMSNorm before RoPE (Qwen3), the per-head sigmoid gate g_proj
// (hidden -> heads*3; only g_slc, row 3h+1, is used; docs/method.md "Model"),
// applied to both the full and the sparse per-head outputs, and a tied or
// separate lm_head. Adding a family is a table row and, at most, a flag.
// NSA models (llama-nsa with window_size > 0) also add g_cmp x compressed
// attention and g_swa x sliding-window attention (engine/attention/
// nsa_branches.h; docs/method.md "The NSA baseline").
//
// Module names follow HF once prefixed with "model." (lm_head stays
// "lm_head"; see hf_tensors()), so checkpoints load in HF-style tooling.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/config.h"

namespace ssalab {

class KVCache;

struct ForwardOptions {
  AttnMode mode = AttnMode::Full;  // the stream that feeds the next layer
  bool dual = false;               // SSA training: both streams + alignment losses at every layer
  SparseSpec spec;                 // selection settings for sparse / dual
  bool capture = false;            // keep each layer's post-RoPE q and k (analysis)
  // RoPE position of tokens[:, 0]: token i is rotated as position
  // position_offset + i. Attention still runs over the given tokens only
  // (they are the keys), so without a cache only RoPE sees the offset.
  int64_t position_offset = 0;
  // Generation (engine/generate): the tokens continue the ones in the cache.
  // Their keys and values are appended to it, they attend to all of it, and
  // RoPE places them at cache->length() onwards (position_offset must be 0).
  // With capture, q holds the new tokens' queries and k every cached key.
  KVCache* cache = nullptr;
  // Logits of the last token only, (B, 1, V): what decoding needs, without
  // a (T, V) tensor for a long prompt.
  bool last_logits_only = false;
  // No logits: ForwardOutput::hidden instead, for callers that turn a long
  // input's rows into logits a chunk at a time (Transformer::logits), since
  // (T, V) logits of 32K tokens and a 128K vocabulary are 16 GB in fp32.
  bool hidden_only = false;
};

struct ForwardOutput {
  torch::Tensor logits;            // (B, T, V); undefined with hidden_only
  torch::Tensor hidden;            // hidden_only: (B, T, hidden) after the final norm
  // dual only: the mean over layers of alignment_loss (attention.h). In value
  // it is the paper's sparsity loss and its commitment loss alike; the
  // training objective ce + alpha * (sparsity + commitment) is ce + alpha *
  // (alignment + sg(alignment)): the gradient of alpha * alignment, the value
  // of 2 * alpha * alignment.
  torch::Tensor alignment_loss;
  std::vector<torch::Tensor> q, k; // capture only: per layer (B, Hq, T, D), (B, Hkv, T, D)
};

// (D/2) inverse frequencies, fp32, scaled as c.rope_type says when
// c.rope_scaling > 1 (HF's default / linear / llama3 rules).
torch::Tensor rope_inv_freq(const ModelConfig& c);
struct RopeTables {
  torch::Tensor cos, sin;  // (1, 1, T, D)
};
// Tables for explicit positions (T) (any integer or float dtype), on
// positions' device, cast to `dtype`.
RopeTables rope_tables(const ModelConfig& c, const torch::Tensor& positions, torch::ScalarType dtype);
// Positions start, start+1, ..., start+T-1.
RopeTables rope_tables(const ModelConfig& c, int64_t start, int64_t T, torch::Device device, torch::ScalarType dtype);
// x (B, H, T, D) rotated by the tables' positions (HF rotate_half convention).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Every tensor the builder makes for `c`, in parameter order: its HF name
// and shape. model_tensor_count(c) is its length, computed without building
// it (a config with 400M layers must not allocate a list to be refused).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<TensorSpec> model_tensors(const ModelConfig& c);
int64_t model_tensor_count(const ModelConfig& c);
// "" when the builder can run `c`, else why not (asked before loading).
std::string model_support_problem(const ModelConfig& c);

// Where a parameter's tensor comes from while the model is built: given its
// HF name and shape, returns the tensor to use as it is (no copy is made).
using ParamSource = std::function<torch::Tensor(const std::string& hf_name, const std::vector<int64_t>& shape)>;

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const std::string& name, const ParamSource& src);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;  // (out, in), (out) or undefined
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab, int64_t dim, const std::string& name, const ParamSource& src);
  torch::Tensor forward(const torch::Tensor& tokens);
  torch::Tensor weight;  // (V, C)
};
TORCH_MODULE(Embedding);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);  // weight = ones (tests, tools)
  RMSNormImpl(int64_t dim, double eps, const std::string& name, const ParamSource& src);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& c, int layer, const std::string& prefix, const ParamSource& src);
  // x (B, T, C) -> (B, T, C); appends its alignment loss (dual) to
  // `alignment` and its captures to `out`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const ForwardOptions& opt, std::vector<torch::Tensor>& alignment, ForwardOutput& out);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  Linear g_proj{nullptr};              // gate only
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // qk_norm only
  int layer, num_heads, num_kv_heads, head_dim;
  // NSA baseline (llama-nsa, window_size > 0): the compression branch's block
  // size (the model's own block_size, whatever the selection spec of a call)
  // and the sliding window in tokens; nsa_window 0 = not an NSA model.
  int nsa_block_size = 0, nsa_window = 0;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const ModelConfig& c, const std::string& prefix, const ParamSource& src);
  torch::Tensor forward(const torch::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& c, int index, const ParamSource& src);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

class Transformer : public torch::nn::Module {
 public:
  // A fresh model: init_weights(0).
  explicit Transformer(const ModelConfig& c);
  // Every parameter from `src` (see ParamSource); nothing else is allocated.
  Transformer(const ModelConfig& c, const ParamSource& src);
  // tokens (B, T) int64
  ForwardOutput forward(const torch::Tensor& tokens, const ForwardOptions& opt = {});
  // The output head: final-norm hidden states (..., hidden) -> logits (..., V).
  torch::Tensor logits(const torch::Tensor& hidden);

  const ModelConfig& config() const { return config_; }
  // The selection settings saved with the model (block_size, block_counts, rule, pooling).
  void set_sparse_spec(const SparseSpec& s) {
    config_.block_size = s.block_size;
    config_.block_counts = s.top_k;
    config_.selection_rule = to_string(s.rule);
    config_.pooled_keys = to_string(s.pooled_keys);
  }
  // Weights under HF names ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight", ...).
  std::vector<std::pair<std::string, torch::Tensor>> hf_tensors();
  // Copies HF-named tensors in; throws Error on a missing, extra or misshapen tensor.
  void load_hf_tensors(const std::map<std::string, torch::Tensor>& tensors);
  void init_weights(uint64_t seed);

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers;
  RMSNorm norm{nullptr};
  Linear lm_head{nullptr};  // untied models only

 private:
  void build(const ParamSource& src);
  ModelConfig config_;
};

// Mean next-token cross-entropy of logits (B, T, V) against targets (B, T).
torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace ssalab
