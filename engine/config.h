// Model and training configuration. ModelConfig mirrors the HF Llama
// config.json of the released SSA checkpoints (plus block_size, block_counts,
// window_size); TrainConfig holds the paper's recipe as defaults.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace ssalab {

struct ModelConfig {
  int vocab_size = 4096;
  int hidden_size = 128;
  int intermediate_size = 384;  // SwiGLU width
  int num_layers = 4;
  int num_heads = 4;            // query heads
  int num_kv_heads = 1;         // GQA: num_heads % num_kv_heads == 0
  int head_dim = 32;
  int max_position = 512;       // training context length
  double rope_theta = 500000.0;
  double rope_scaling = 1.0;    // llama3-style factor; 1 = none
  int rope_original_max_position = 0;  // context the scaling is relative to (0: max_position)
  double norm_eps = 1e-5;
  // sparse attention (names as in the released config.json)
  int block_size = 16;
  int block_counts = 4;         // top-k blocks per token, local block included
  int window_size = 0;          // unused by SSA; kept for the file format

  int64_t num_parameters() const;
  void validate() const;        // throws Error on impossible combinations
};

// Built-in sizes. tiny: trains on 2 CPU cores in minutes. small/base: GPU.
ModelConfig model_preset(const std::string& name);

nlohmann::json to_json(const ModelConfig& c);          // HF-style keys
ModelConfig model_config_from_json(const nlohmann::json& j);  // throws Error naming bad keys

// How attention runs in one forward pass.
enum class AttnMode { Full, Sparse };
// What a training run optimises (SSA.md "Training").
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
};

nlohmann::json to_json(const TrainConfig& c);
TrainConfig train_config_from_json(const nlohmann::json& j);
void validate(const TrainConfig& t, const ModelConfig& m);

}  // namespace ssalab
