// Checks shared by the attention tests (test_attention.cpp, test_nsa.cpp):
// random q/k/v in double, the largest difference of two tensors, and
// gradients against central finite differences.
#pragma once
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

namespace ssalab::test {

struct Qkv {
  torch::Tensor q, k, v;
};

// q holds Tq rows, k and v Tk keys.
inline Qkv random_qkv(int B, int Hq, int Hkv, int Tq, int Tk, int D, uint64_t seed,
                      torch::ScalarType dtype = torch::kDouble) {
  torch::manual_seed(seed);
  return {torch::randn({B, Hq, Tq, D}, dtype), torch::randn({B, Hkv, Tk, D}, dtype),
          torch::randn({B, Hkv, Tk, D}, dtype)};
}
inline Qkv random_qkv(int B, int Hq, int Hkv, int T, int D, uint64_t seed, torch::ScalarType dtype = torch::kDouble) {
  return random_qkv(B, Hq, Hkv, T, T, D, seed, dtype);
}

inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Central finite differences of sum(f(x) * w) against autograd, in double,
// at about 40 elements spread over x.
inline void check_grad(const std::function<torch::Tensor(const torch::Tensor&)>& f, torch::Tensor x,
                       double tol = 1e-6) {
  x = x.detach().clone().set_requires_grad(true);
  torch::Tensor w = torch::randn_like(f(x).detach());
  torch::Tensor g = torch::autograd::grad({(f(x) * w).sum()}, {x})[0];
  REQUIRE(torch::isfinite(g).all().item<bool>());
  const double eps = 1e-6;
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 40)) {
    torch::Tensor xp = x.detach().clone(), xm = x.detach().clone();
    xp.view({-1})[i] += eps;
    xm.view({-1})[i] -= eps;
    double num = ((f(xp) * w).sum().item<double>() - (f(xm) * w).sum().item<double>()) / (2 * eps);
    double ana = g.reshape({-1})[i].item<double>();
    INFO("element " << i << " numeric " << num << " autograd " << ana);
    REQUIRE(std::abs(num - ana) < tol * std::max(1.0, std::abs(num)));
  }
}

}  // namespace ssalab::test
