// Llama-style decoder with SSA's gated attention (SSA.md "Model"):
// RMSNorm, RoPE (optionally llama3-scaled), SwiGLU, GQA, tied embeddings, no
// biases, and a per-head sigmoid gate g_proj (hidden -> heads*3; only g_slc is
// used) applied to both the full and the sparse per-head outputs.
//
// Module names follow HF Llama once prefixed with "model." (see hf_tensors()),
// so checkpoints load in HF-style tooling.
#pragma once
#include <vector>

#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/config.h"

namespace ssalab {

struct ForwardOptions {
  AttnMode mode = AttnMode::Full;  // the stream that feeds the next layer
  bool dual = false;               // SSA training: both streams + alignment losses at every layer
  SparseSpec spec;                 // selection settings for sparse / dual
  bool capture = false;            // keep each layer's post-RoPE q and k (analysis)
};

struct ForwardOutput {
  torch::Tensor logits;            // (B, T, V)
  torch::Tensor sparsity_loss;     // dual only: mean over layers of SmoothL1(h_full, sg(h_sparse))
  torch::Tensor commitment_loss;   // dual only: mean over layers of SmoothL1(sg(h_full), h_sparse)
  std::vector<torch::Tensor> q, k; // capture only: per layer (B, Hq, T, D), (B, Hkv, T, D)
};

// (T, D/2) inverse frequencies -> cos, sin tables; llama3 scaling when factor > 1.
torch::Tensor rope_inv_freq(const ModelConfig& c);
// x (B, H, T, D) rotated by position (HF rotate_half convention).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& c);
  // x (B, T, C) -> (B, T, C); appends alignment losses / captures to `out`.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const ForwardOptions& opt, std::vector<torch::Tensor>& sparsity,
                        std::vector<torch::Tensor>& commitment, ForwardOutput& out);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr}, g_proj{nullptr};
  int num_heads, num_kv_heads, head_dim;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& c);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

class Transformer : public torch::nn::Module {
 public:
  explicit Transformer(const ModelConfig& c);
  // tokens (B, T) int64
  ForwardOutput forward(const torch::Tensor& tokens, const ForwardOptions& opt = {});

  const ModelConfig& config() const { return config_; }
  // The selection settings saved with the model (block_size, block_counts).
  void set_sparse_spec(const SparseSpec& s) { config_.block_size = s.block_size; config_.block_counts = s.top_k; }
  // Weights under HF Llama names ("model.layers.0.self_attn.q_proj.weight", ...).
  std::vector<std::pair<std::string, torch::Tensor>> hf_tensors();
  // Copies HF-named tensors in; throws Error on a missing, extra or misshapen tensor.
  void load_hf_tensors(const std::map<std::string, torch::Tensor>& tensors);
  void init_weights(uint64_t seed);

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers;
  RMSNorm norm{nullptr};

 private:
  ModelConfig config_;
};

// Mean next-token cross-entropy of logits (B, T, V) against targets (B, T).
torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace ssalab
