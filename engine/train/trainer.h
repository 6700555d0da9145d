// The training loop's parts: deterministic batches, the three methods
// (FullAttn, MoBA, SSA), AdamW with warmup + cosine, clipping, accumulation,
// validation perplexity, and checkpoint/resume.
//
// Determinism: the batch and the drawn SSA mode of micro-batch m at step s
// are functions of (seed, s, m) only, so a resumed run needs no RNG state
// beyond the step counter and reproduces an uninterrupted one bit for bit on
// CPU (same thread count).
#pragma once
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "engine/config.h"
#include "engine/data/corpus.h"
#include "engine/distributed/gradient_sync.h"
#include "engine/distributed/optimizer_shard.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"

namespace ssalab {

// Throws Error (naming the key) when `t` cannot train `m`. Whether the
// sparse settings can run at seq_len is the attention backends' answer
// (attention_problem); this adds the training-only rules.
void validate(const TrainConfig& t, const ModelConfig& m);

// Throws Error when t.grad_accum (micro-batches per step over all
// processes) does not divide among `world_size` processes.
void validate_shard(const TrainConfig& t, int world_size);

// What one optimizer step reports (one line of metrics.jsonl).
struct MetricPoint {
  int64_t step = 0;
  double loss = 0;            // total loss of the step (CE + alpha * alignment)
  double ce_full = NAN;       // CE of the full stream (NaN on steps that drew sparse)
  double ce_sparse = NAN;     // CE of the sparse stream
  double sparsity_loss = NAN, commitment_loss = NAN;  // SSA only, unweighted, mean over layers
  double grad_norm = 0, lr = 0, tokens_per_s = 0;
  double val_ppl_full = NAN, val_ppl_sparse = NAN;    // on validation steps only
};

// (B, T+1) int64 windows from `tokens`, starting points drawn from (seed, step, micro).
torch::Tensor sample_batch(const std::vector<int32_t>& tokens, int batch, int seq_len, uint64_t seed, int64_t step,
                           int micro);
// SSA's per-forward-pass draw: true = full stream.
bool draw_full_mode(uint64_t seed, int64_t step, int micro, double p_full);
// Learning rate at `step` (0-based) for warmup + cosine.
double lr_at(const TrainConfig& t, int64_t step);

torch::Device resolve_device(const std::string& name);

// Which part of each step's batch this process trains on (data parallelism).
// train.grad_accum counts the micro-batches of a step over all processes, so
// a step sees the same data whatever the number of processes: rank r runs
// grad_accum / world_size of them, its micro-batch m being the step's
// micro-batch m * world_size + r. The SSA stream is drawn per (step, m), so
// all ranks of a step run the same mode, as in the paper's code. `group`
// (null for one process) sums the gradients and the step's metrics.
struct DataShard {
  int rank = 0;
  int world_size = 1;
  std::shared_ptr<distributed::ProcessGroup> group;
};

class Trainer {
 public:
  Trainer(std::shared_ptr<Transformer> model, TrainConfig train, std::shared_ptr<const TokenData> data,
          DataShard shard = {});

  // One optimizer step (grad_accum micro-batches). Throws Error on a NaN/Inf loss
  // (weights are left as they were before the step).
  MetricPoint step();
  // Validation perplexity under full and sparse inference with the model's spec.
  std::pair<double, double> validate(int batches);

  int64_t current_step() const { return step_; }
  const TrainConfig& train_config() const { return train_; }
  TrainConfig& mutable_train_config() { return train_; }
  Transformer& model() { return *model_; }
  std::shared_ptr<Transformer> model_ptr() { return model_; }
  torch::optim::Optimizer& optimizer() { return *opt_; }
  SparseSpec spec() const { return model_sparse_spec(model_->config()); }
  void set_spec(const SparseSpec& s);
  torch::Device device() const { return device_; }
  // With other processes: how the last step's gradients were summed, and
  // the optimizer-state sharding (null unless train.shard_optimizer).
  const distributed::GradientSync* gradient_sync() const { return gradient_sync_.get(); }
  const distributed::OptimizerShard* optimizer_shard() const { return optimizer_shard_.get(); }
  // Around writing a checkpoint with a sharded optimizer: every rank gathers
  // the moments on rank 0 (collective), which lets them go after the save.
  // Without sharding both do nothing.
  void gather_for_checkpoint();
  void release_gathered();

  void save(const std::string& dir, const Tokenizer& tok, const nlohmann::json& extra = {});
  // Restores weights, optimizer state and step from a checkpoint written by save().
  void resume(const std::string& dir);

  // For benchmarks: when set, step() calls it as each phase's work has been
  // queued: "forward" and "backward" once per micro-batch, "optimizer" after
  // the update. (bench_train --phases syncs there to tell the host's time
  // from the GPU's.)
  std::function<void(const char* phase)> on_phase;

 private:
  void validate_shard() const;
  Error non_finite_loss(double loss) const;

  std::shared_ptr<Transformer> model_;
  TrainConfig train_;
  std::shared_ptr<const TokenData> data_;
  std::unique_ptr<torch::optim::AdamW> opt_;
  torch::Device device_;
  DataShard shard_;
  std::unique_ptr<distributed::GradientSync> gradient_sync_;  // with a group only
  std::unique_ptr<distributed::OptimizerShard> optimizer_shard_;  // with a group and train.shard_optimizer
  int64_t step_ = 0;
};

// Perplexity of `model` on evenly spaced windows of `tokens`.
double perplexity(Transformer& model, const std::vector<int32_t>& tokens, int seq_len, int batches, int batch_size,
                  AttnMode mode, const SparseSpec& spec, torch::Device dev);

}  // namespace ssalab
