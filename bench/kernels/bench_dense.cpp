// The peer: LibTorch's dense causal scaled_dot_product_attention with exactly
// one backend enabled (cuDNN or flash), forward and forward+backward.
#include "bench/kernels/bench_kernels.h"

namespace ssabench {

const char* backend_name(SdpaBackend b) { return b == SdpaBackend::cudnn ? "cudnn" : "flash"; }

DenseSdpa::DenseSdpa(const Inputs& in) {
  const int64_t G = in.shape.Hq / in.shape.Hkv;
  q_ = in.q.detach().requires_grad_();
  k_expanded_ = in.k.repeat_interleave(G, 1).detach().requires_grad_();
  v_expanded_ = in.v.repeat_interleave(G, 1).detach().requires_grad_();
  dout_ = in.dout;
}

#if SSALAB_HAS_SDPA
DenseSdpa::OnlySdpa::OnlySdpa(SdpaBackend b) {
  auto& c = at::globalContext();
  saved_[0] = c.userEnabledFlashSDP();
  saved_[1] = c.userEnabledMemEfficientSDP();
  saved_[2] = c.userEnabledMathSDP();
  saved_[3] = c.userEnabledCuDNNSDP();
  c.setSDPUseFlash(b == SdpaBackend::flash);
  c.setSDPUseMemEfficient(false);
  c.setSDPUseMath(false);
  c.setSDPUseCuDNN(b == SdpaBackend::cudnn);
}
DenseSdpa::OnlySdpa::~OnlySdpa() {
  auto& c = at::globalContext();
  c.setSDPUseFlash(saved_[0]);
  c.setSDPUseMemEfficient(saved_[1]);
  c.setSDPUseMath(saved_[2]);
  c.setSDPUseCuDNN(saved_[3]);
}

void DenseSdpa::forward() {
  at::scaled_dot_product_attention(q_, k_expanded_, v_expanded_, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                   /*is_causal=*/true);
}
// autograd::grad returns the gradients instead of adding them into .grad, so
// no accumulation kernels are timed (do_bench's grad_to_none does the same).
void DenseSdpa::forward_backward() {
  Tensor out = at::scaled_dot_product_attention(q_, k_expanded_, v_expanded_, {}, 0.0, true);
  torch::autograd::grad({out}, {q_, k_expanded_, v_expanded_}, {dout_});
}

DenseResult DenseSdpa::time(SdpaBackend backend, GpuTimer& timer) {
  DenseResult r;
  r.backend = backend;
  try {
    OnlySdpa only(backend);
    r.fwd_ms = timer.median_ms([&] { forward(); });
    r.fwd_bwd_ms = timer.median_ms([&] { forward_backward(); });
  } catch (const std::exception& e) {
    std::string msg = e.what();
    r.error = msg.substr(0, msg.find('\n'));  // LibTorch appends a long backtrace
    r.fwd_ms = r.fwd_bwd_ms = kNaN;
  }
  return r;
}
#else
DenseSdpa::OnlySdpa::OnlySdpa(SdpaBackend) {}
DenseSdpa::OnlySdpa::~OnlySdpa() {}
void DenseSdpa::forward() {}
void DenseSdpa::forward_backward() {}
DenseResult DenseSdpa::time(SdpaBackend backend, GpuTimer&) {
  DenseResult r;
  r.backend = backend;
  r.error = "dense SDPA needs LibTorch 2.x";
  return r;
}
#endif

void print_dense_table(const std::vector<ShapeResult>& results) {
  std::printf("\n| shape | dense causal SDPA | fwd | fwd+bwd | TF/s fwd / fwd+bwd |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  for (const auto& r : results)
    for (const auto& d : r.dense) {
      if (!d.error.empty()) {
        std::printf("| %s | %s | - | - | %s |\n", r.shape.name, backend_name(d.backend), d.error.c_str());
        continue;
      }
      std::printf("| %s | %s | %s | %s | %.0f / %.0f |\n", r.shape.name, backend_name(d.backend),
                  fmt_ms(d.fwd_ms).c_str(), fmt_ms(d.fwd_bwd_ms).c_str(),
                  tflops(4, r.dense_pairs(), r.shape.D, d.fwd_ms),
                  tflops(14, r.dense_pairs(), r.shape.D, d.fwd_bwd_ms));
    }
}

json dense_json(const ShapeResult& r) {
  json all = json::object();
  for (const auto& d : r.dense) {
    json j = {{"fwd_ms", number_or_null(d.fwd_ms)}, {"fwd_bwd_ms", number_or_null(d.fwd_bwd_ms)}};
    if (d.error.empty()) {
      j["fwd_tflops"] = tflops(4, r.dense_pairs(), r.shape.D, d.fwd_ms);
      j["fwd_bwd_tflops"] = tflops(14, r.dense_pairs(), r.shape.D, d.fwd_bwd_ms);
    } else {
      j["error"] = d.error;
    }
    all[backend_name(d.backend)] = j;
  }
  return all;
}

}  // namespace ssabench
