// Memory needed by a piece of work, worked out from shapes before any of it
// runs, and the check that refuses what will not fit with the figures.
//
// Estimates are what the code below allocates at its peak, term by term
// (tests/engine/test_memory.cpp compares them with the peak resident size a
// real run reaches). They count the work's own tensors; the model's weights
// are counted when it is loaded (load_checkpoint's LoadPlan).
//
// What is available: MemAvailable on the CPU, the free memory of a GPU, or
// SSALAB_MEMORY_LIMIT when set (bytes, or with a K/M/G suffix: "8G"), for a
// user who shares the machine, and for tests.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/config.h"

namespace ssalab {

// The analysis turns hidden states into token losses this many logits at a
// time (a row chunk of about 1 GiB in fp32).
constexpr int64_t kLogitChunkElements = int64_t(1) << 28;

struct MemoryEstimate {
  std::vector<std::pair<std::string, uint64_t>> parts;  // what the bytes are for
  uint64_t bytes() const;
  void add(const std::string& what, uint64_t b) { parts.emplace_back(what, b); }
  std::string describe() const;  // "3.20 GiB (attention probabilities 2.10 GiB, logits 900.0 MiB, ...)"
};

std::string bytes_text(uint64_t bytes);  // "1.50 GiB", "300.0 MiB"

// MemAvailable (CPU) or the GPU's free memory, capped by SSALAB_MEMORY_LIMIT;
// 0 when unknown.
uint64_t available_memory(torch::Device device);
// The peak of GPU 0's memory allocated through LibTorch since the process
// started (the CUDA caching allocator's count); 0 without a GPU.
uint64_t gpu_peak_allocated_bytes();
// SSALAB_MEMORY_LIMIT in bytes, 0 when unset; a malformed value is an Error.
uint64_t memory_limit_from_env();

// Counted in fp32 (an upper bound for bf16). On the CPU attention runs on
// the reference path, which keeps (T x T) probabilities for the backward
// pass and scores every query against every block key; on a GPU the kernels
// keep neither.

// One training step (forward, backward, optimizer) of `model` with `train`'s
// batch and sequence length.
MemoryEstimate training_step_memory(const ModelConfig& model, const TrainConfig& train, torch::Device device);

// A forward pass without gradients over `batch` sequences of `T` tokens (eval,
// scoring), with full or sparse attention.
MemoryEstimate inference_memory(const ModelConfig& model, int64_t batch, int64_t T, AttnMode mode,
                                const SparseSpec& spec, torch::Device device);

// analyze(): the forward pass with q and k captured, then per layer the
// selection, the row statistics, the block-pooled maps and, up to
// token_map_limit tokens, the token-level maps.
MemoryEstimate analysis_memory(const ModelConfig& model, int64_t T, const SparseSpec& spec, AttnMode inference,
                               int token_map_limit, int max_cells, bool token_losses, torch::Device device);

// Throws Error naming `what`, the estimate with its parts and what is
// available, when the estimate exceeds what is available on `device`.
void require_memory(const MemoryEstimate& need, const std::string& what, torch::Device device);

}  // namespace ssalab
