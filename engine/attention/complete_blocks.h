// What the reference backend's selection and NSA's compression branch share:
// query positions, the mean-pooled complete blocks of keys (or values), and
// which of those blocks a query can see. Internal to engine/attention.
#pragma once
#include <cstdint>

#include <torch/torch.h>

namespace ssalab {

// (n,) int64 positions p0 .. p0+n-1.
inline torch::Tensor positions(int64_t p0, int64_t n, torch::Device dev) {
  return torch::arange(p0, p0 + n, torch::TensorOptions().dtype(torch::kLong).device(dev));
}

// (B, H, T / block_size, D): the mean of each complete block of x (B, H, T, D);
// a partial last block is left out (no query can see it whole).
inline torch::Tensor complete_block_means(const torch::Tensor& x, int block_size) {
  const int64_t B = x.size(0), H = x.size(1), D = x.size(3), nbc = x.size(2) / block_size;
  return x.narrow(2, 0, nbc * block_size).reshape({B, H, nbc, block_size, D}).mean(3);
}

// (n, nbc) bool for query positions `pos` (n, 1): block j is visible once it
// is complete, that is when its last token is at or before the query.
inline torch::Tensor complete_blocks_visible(const torch::Tensor& pos, int64_t nbc, int block_size) {
  torch::Tensor j = torch::arange(nbc, torch::TensorOptions().dtype(torch::kLong).device(pos.device())).view({1, nbc});
  return (j + 1) * block_size - 1 <= pos;
}

}  // namespace ssalab
