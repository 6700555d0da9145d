// Model and training configuration. ModelConfig mirrors an HF config.json:
// the released SSA checkpoints' (LlamaNSAForCausalLM: Llama plus the g_proj
// gate and block_size, block_counts, window_size, inference_mode) and the
// Llama-family models ssalab loads (Llama, Mistral, Qwen2, Qwen3). The
// differences between families are data: one row of kArchitectures (config.cpp)
// and a few flags here, read by one model builder (engine/model). TrainConfig
// holds the paper's recipe as defaults.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssalab {

// The model families ssalab can build (one row each in kArchitectures).
enum class Arch { Llama, LlamaNSA, Mistral, Qwen2, Qwen3 };
const char* architecture_name(Arch a);  // "LlamaForCausalLM", ...
const char* model_type_name(Arch a);    // "llama", "llama-nsa", ...
// "LlamaForCausalLM, LlamaNSAForCausalLM, ..." for error messages.
std::string supported_architectures();

// How RoPE frequencies are scaled (HF rope_type). Others (dynamic, yarn,
// longrope) are refused by model_config_from_json.
enum class RopeType { Default, Linear, Llama3 };
const char* to_string(RopeType r);

struct ModelConfig {
  Arch arch = Arch::LlamaNSA;   // what ssalab trains: Llama + g_proj gate (docs/method.md "Model")
  int vocab_size = 4096;
  int hidden_size = 128;
  int intermediate_size = 384;  // SwiGLU width
  int num_layers = 4;
  int num_heads = 4;            // query heads
  int num_kv_heads = 1;         // GQA: num_heads % num_kv_heads == 0
  int head_dim = 32;
  int max_position = 512;       // training context length
  double rope_theta = 500000.0;
  double rope_scaling = 1.0;    // the RoPE scaling factor; 1 = none
  RopeType rope_type = RopeType::Llama3;  // how a factor > 1 scales (our presets: llama3)
  double rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;  // llama3 only
  int rope_original_max_position = 0;  // context the scaling is relative to (0: max_position)
  double norm_eps = 1e-5;
  // family flags (the architecture's row, some set by config keys)
  bool qkv_bias = false;        // q/k/v projections have biases (Qwen2; Llama/Qwen3 attention_bias)
  bool o_bias = false;          // o_proj has a bias (Llama/Qwen3 attention_bias)
  bool mlp_bias = false;        // gate/up/down have biases (Llama mlp_bias)
  bool qk_norm = false;         // per-head RMSNorm of q and k before RoPE (Qwen3)
  bool gate = true;             // g_proj: per-head sigmoid gate g_slc (llama-nsa)
  bool tied_embeddings = true;  // lm_head shares embed_tokens' weight
  // Sliding-window attention: layers >= sliding_window_from attend to the
  // last sliding_window keys only (0: none). ssalab runs such a model only
  // on sequences the window covers (where it changes nothing).
  int sliding_window = 0;
  int sliding_window_from = 0;
  // sparse attention (names as in the released config.json)
  int block_size = 16;
  int block_counts = 4;         // top-k blocks per token, local block included
  int window_size = 0;          // NSA's sliding-window branch; 0 for SSA, MoBA, FullAttn
  std::string inference_mode = "sparse";  // released llama-nsa key: "sparse" | "full"
  // The block selection the model was trained with (docs/method.md "Selection
  // rules"): "topk" (what ssalab trains; written into our config.json) or
  // "nsa-chunked" (the released kernel's rule: the default for a llama-nsa
  // config.json that does not say, i.e. the paper's checkpoints).
  std::string selection_rule = "topk";
  // The precision of the pooled block keys selection scores against: "fp32"
  // (what ssalab trains with; written into our config.json) or "bf16" (the
  // released kernel pools in bf16: the default for a llama-nsa config.json
  // that names no selection_rule, i.e. the paper's checkpoints).
  std::string pooled_keys = "fp32";
  // Tokens that end a generation (config.json's eos_token_id, an id or a
  // list; generation_config.json's when the folder has one). Empty: the
  // tokenizer's end-of-sequence token, if any.
  std::vector<int> eos_token_ids;

  int64_t num_parameters() const;
  void validate() const;        // throws Error on impossible combinations
};

// Built-in sizes. tiny: trains on 2 CPU cores in minutes. small/base: GPU.
ModelConfig model_preset(const std::string& name);

// HF-style config.json (transformers 4.x keys: rope_theta, rope_scaling).
nlohmann::json to_json(const ModelConfig& c);
// Reads config.json as transformers 4.x or 5.x (rope_parameters) writes it.
// Throws Error naming the bad key, an unsupported architecture (listing the
// supported ones), rope type or activation, or a quantized model.
ModelConfig model_config_from_json(const nlohmann::json& j);
// eos_token_id of a config.json or generation_config.json (`file` names it
// in errors): an id, a list of ids, or absent / null (empty).
std::vector<int> eos_token_ids_from_json(const nlohmann::json& j, const std::string& file);

// How attention runs in one forward pass.
enum class AttnMode { Full, Sparse };
// What a training run optimises (docs/method.md "Training").
enum class Method { Full, Moba, Ssa };

const char* to_string(AttnMode m);
const char* to_string(Method m);
AttnMode attn_mode_from_string(const std::string& s);
Method method_from_string(const std::string& s);

struct TrainConfig {
  Method method = Method::Ssa;
  double p_full = 0.5;          // SSA: probability the drawn stream is full
  double alpha = 10.0;          // SSA: alignment loss weight
  int batch_size = 8;           // sequences per micro-batch
  int seq_len = 256;
  int grad_accum = 1;
  int64_t steps = 300;
  double lr = 1e-3;
  double min_lr_ratio = 0.1;    // cosine decays to lr * min_lr_ratio
  double warmup_frac = 0.01;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double grad_clip = 1.0;
  uint64_t seed = 1234;
  int eval_every = 50;          // steps between validation runs (0: only at the end)
  int eval_batches = 8;
  int save_every = 0;           // steps between checkpoints (0: only at the end)
  int log_every = 1;
  int threads = 0;              // 0: leave LibTorch's default
  std::string device = "auto";  // auto | cpu | cuda
  bool bf16 = true;             // autocast on CUDA
  bool shard_optimizer = false; // data parallelism: ZeRO-1, each process keeps AdamW's moments of its share only
};

nlohmann::json to_json(const TrainConfig& c);
TrainConfig train_config_from_json(const nlohmann::json& j);

}  // namespace ssalab
