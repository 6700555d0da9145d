// Checkpoints: a directory holding
//   model.safetensors   weights, HF Llama tensor names (fp32 for training
//                       checkpoints; fp16/bf16 for shipped models)
//   config.json         HF-style model config, LlamaNSAForCausalLM /
//                       model_type "llama-nsa" like the released SSA
//                       checkpoints (block_size, block_counts, window_size,
//                       inference_mode), so HF tooling cannot load the gated
//                       model as a plain Llama and drop g_proj
//   tokenizer.model     the sentencepiece model the weights were trained with
//   trainer_state.json  step, train config, metrics position (training only)
//   optimizer.pt        AdamW state (training only)
// The directory is written next to its final place and renamed into it, so a
// failed save leaves the previous checkpoint whole.
//
// load_checkpoint() also opens Hugging Face model folders and hub ids from
// the local cache (engine/hub): config.json plus model.safetensors or shards
// listed in model.safetensors.index.json, for the families in config.h. Old
// checkpoints of ours (LlamaForCausalLM with g_proj tensors) load as the
// gated model.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "engine/config.h"
#include "engine/data/corpus.h"
#include "engine/util/error.h"

namespace ssalab {

class Transformer;

struct TrainerState {
  int64_t step = 0;
  TrainConfig train;
  nlohmann::json extra;  // free-form (run name, corpus path, ...)
};

struct SaveOptions {
  torch::ScalarType weights_dtype = torch::kFloat32;
  const torch::optim::Optimizer* optimizer = nullptr;  // saved when given
  std::optional<TrainerState> state;
};

void save_checkpoint(const std::string& dir, Transformer& model, const Tokenizer& tok, const SaveOptions& opt);

// trainer_state.json's content; throws Error naming `where` when malformed.
TrainerState trainer_state_from_json(const nlohmann::json& state, const std::string& where);

// What loading a model will take, worked out from config.json and the
// safetensors headers alone, before any weight memory is allocated.
struct LoadPlan {
  std::string dir;                        // the folder (a cache snapshot for a hub id)
  std::string hub_id;                     // "org/name" when resolved in the HF cache
  ModelConfig config;                     // as the model will be built
  std::vector<std::string> weight_files;  // model.safetensors or the shards
  std::string stored_dtype;               // "BF16", "F32", or "BF16+F32" when mixed
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;  // what the model computes in
  int64_t parameters = 0;
  uint64_t file_bytes = 0;    // tensor bytes in the files
  uint64_t new_bytes = 0;     // allocated for the weights (converted copies), on `device`
  uint64_t mapped_bytes = 0;  // used in place from the mapped files (CPU, stored as `dtype`)
  uint64_t available_bytes = 0;  // MemAvailable, or the GPU's free memory; 0: unknown
  uint64_t logits_bytes_per_token = 0;  // vocab * 4: the largest activation per token
  std::string summary() const;  // one line for the CLI / app
};

struct LoadOptions {
  torch::Device device = torch::kCPU;
  // The compute dtype: default fp32 on the CPU, the stored dtype on a GPU.
  std::optional<torch::ScalarType> dtype;
  // Called with the plan before any weight memory is allocated. Without it,
  // plans of 64 MiB or more are printed to stderr.
  std::function<void(const LoadPlan&)> on_plan;
  bool check_memory = true;  // refuse when new + mapped bytes exceed what is available
  uint64_t memory_limit = 0;  // bytes to allow; 0: MemAvailable (CPU) or the GPU's free memory
  // Called as tensors are read, with the fraction of the tensor bytes done
  // (0..1), from the loading thread.
  std::function<void(double)> on_progress;
  // Set from another thread to stop a load between tensors: load_checkpoint
  // then throws LoadCancelled and nothing of the model is kept.
  const std::atomic<bool>* cancel = nullptr;
};

struct LoadCancelled : Error {
  using Error::Error;
};

struct LoadedCheckpoint {
  ModelConfig config;
  std::shared_ptr<Transformer> model;  // on LoadOptions::device (default CPU, float32)
  Tokenizer tokenizer;                 // tokenizer.model when the folder has one, else empty
  std::optional<TrainerState> state;
  std::string dir;
  std::string tokenizer_json;          // dir + "/tokenizer.json" when present, else ""
  LoadPlan plan;
};
// A checkpoint of ours, an HF model folder, or a hub id in the local HF
// cache. Throws Error naming the file and problem: missing dir/files, corrupt
// config.json or safetensors, an unsupported architecture / rope type / dtype,
// a quantized model, a config that does not match the weights (found from the
// headers, before allocating), missing or unexpected tensors (named), a shard
// listed in the index but absent, too little memory.
LoadedCheckpoint load_checkpoint(const std::string& dir_or_id, const LoadOptions& opt = {});
// The plan alone (config.json, index and headers; no weights read).
LoadPlan plan_checkpoint(const std::string& dir_or_id, const LoadOptions& opt = {});
// Loads optimizer state saved by save_checkpoint (throws if absent/corrupt).
void load_optimizer(const std::string& dir, torch::optim::Optimizer& opt);

}  // namespace ssalab
