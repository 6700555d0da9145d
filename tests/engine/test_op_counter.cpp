// The operator counter of the training benchmark (bench/op_counter.h):
// what it calls top-level, compute and backward on known LibTorch calls.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "bench/op_counter.h"

using torch::Tensor;

TEST_CASE("the operator counter tells calls, launches and backward nodes apart", "[bench]") {
  torch::manual_seed(1);
  Tensor a = torch::randn({4, 4}), b = torch::randn({4, 4});
  ssalab::bench::OpCounter counter;

  Tensor sum = a + b;  // one call, one kernel
  ssalab::bench::OpCounts c = counter.take();
  CHECK(c.top_level == 1);
  CHECK(c.compute == 1);
  CHECK(c.compute_by_name["aten::add"] == 1);

  Tensor view = a.transpose(0, 1);  // a call that launches nothing
  c = counter.take();
  CHECK(c.top_level == 1);
  CHECK(c.compute == 0);

  // linear is made of other calls: only the product it ends in is a launch
  Tensor y = torch::nn::functional::linear(a, b);
  c = counter.take();
  CHECK(c.compute == 1);
  CHECK(c.compute_by_name["aten::mm"] == 1);

  // backward: its nodes and the kernels they run; top-level only the seed
  // gradient (ones_like) backward() asks for
  Tensor x = torch::randn({3}).requires_grad_();
  Tensor loss = (x * 2).sum();
  counter.take();
  loss.backward();
  c = counter.take();
  CHECK(c.backward >= 2);  // SumBackward0, MulBackward0
  CHECK(c.top_level == 1);
  CHECK(c.compute >= 1);

  // a CPU value read back is no read from a GPU
  const double v = sum.sum().item<double>();
  c = counter.take();
  CHECK(std::isfinite(v));
  CHECK(c.reads == 0);
  CHECK(c.top_level == 2);  // sum, item
}

TEST_CASE("the operator counter counts reads from the GPU", "[bench][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  Tensor g = torch::randn({8}, torch::kCUDA);
  ssalab::bench::OpCounter counter;
  const double v = g.sum().item<double>();
  Tensor host = torch::stack({g[0], g[1]}).to(torch::kCPU);
  const ssalab::bench::OpCounts c = counter.take();
  CHECK(std::isfinite(v));
  CHECK(host.size(0) == 2);
  CHECK(c.reads == 2);  // the item and the copy to the host
}
