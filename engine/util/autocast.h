// bf16 autocast on CUDA for a scope. Training runs its forward this way, and
// so does analysis of an fp32 model on the GPU: the attention kernels take
// bf16 or fp16 only, and an fp32 forward would fall back to the reference
// path, which materialises T x T scores (21 s for 8K tokens on a 1B model).
// Autocast state is per thread, so each worker that runs a forward sets it.
#pragma once

#include <torch/torch.h>

namespace ssalab {

class Bf16AutocastScope {
 public:
  explicit Bf16AutocastScope(bool enable);
  ~Bf16AutocastScope();
  Bf16AutocastScope(const Bf16AutocastScope&) = delete;
  Bf16AutocastScope& operator=(const Bf16AutocastScope&) = delete;

 private:
  bool enabled_;
};

// True for fp32 weights on a CUDA device: the forward should run under bf16
// autocast to reach the kernels.
bool wants_bf16_autocast(const torch::Tensor& weight);

}  // namespace ssalab
