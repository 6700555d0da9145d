// Checkpoints: a directory holding
//   model.safetensors   weights, HF Llama tensor names (fp32 for training
//                       checkpoints; fp16/bf16 for shipped models)
//   config.json         HF-style model config + block_size/block_counts/window_size
//   tokenizer.model     the sentencepiece model the weights were trained with
//   trainer_state.json  step, train config, metrics position (training only)
//   optimizer.pt        AdamW state (training only)
// The directory is written next to its final place and renamed into it, so a
// failed save leaves the previous checkpoint whole.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "engine/config.h"
#include "engine/data/corpus.h"

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

struct LoadedCheckpoint {
  ModelConfig config;
  std::shared_ptr<Transformer> model;  // on CPU, float32
  Tokenizer tokenizer;
  std::optional<TrainerState> state;
  std::string dir;
};
// Throws Error naming the file and problem (missing dir/files, corrupt
// config.json or safetensors, a tensor missing or of the wrong shape).
LoadedCheckpoint load_checkpoint(const std::string& dir);
// Loads optimizer state saved by save_checkpoint (throws if absent/corrupt).
void load_optimizer(const std::string& dir, torch::optim::Optimizer& opt);

}  // namespace ssalab
