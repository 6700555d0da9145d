#include "engine/util/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace ssalab {

// The autocast API moved between LibTorch 1.x and 2.x.
Bf16AutocastScope::Bf16AutocastScope(bool enable) : enabled_(enable) {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR >= 2
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
  at::autocast::set_enabled(true);
  at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
}

Bf16AutocastScope::~Bf16AutocastScope() {
  if (!enabled_) return;
#if TORCH_VERSION_MAJOR >= 2
  at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
  at::autocast::set_enabled(false);
#endif
  at::autocast::clear_cache();
}

bool wants_bf16_autocast(const torch::Tensor& weight) {
  return weight.is_cuda() && weight.scalar_type() == torch::kFloat;
}

}  // namespace ssalab
