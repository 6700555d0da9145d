// The keys and values a generation has seen, per layer, and the mean of each
// complete block of keys (what selection scores against).
//
// Decoding one token then computes only that token's projections, reads the
// cache through the attention contract (engine/attention/attention.h: the new
// queries sit at positions [length, length + T) over keys [0, length + T)),
// and pools a block of keys once, when its last token arrives. Memory for
// `capacity` tokens is taken up front, so a step never copies the cache.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "engine/config.h"

namespace ssalab {

class KVCache {
 public:
  // capacity: the most tokens it will hold (prompt plus generated tokens);
  // block_size: the selection block the pooled keys are kept for, in
  // pooled_dtype (fp32, or bf16 for PooledKeys::Bf16: pooled_keys_dtype()).
  KVCache(const ModelConfig& c, int64_t batch, int64_t capacity, int block_size, torch::Device device,
          torch::ScalarType dtype, torch::ScalarType pooled_dtype = torch::kFloat);

  int64_t length() const { return length_; }  // tokens every layer holds
  int64_t capacity() const { return capacity_; }
  int64_t batch() const { return batch_; }
  int block_size() const { return block_size_; }
  int num_layers() const { return int(layers_.size()); }
  uint64_t bytes() const;  // the keys, values and pooled keys allocated

  // Stores layer `layer`'s keys and values (B, Hkv, T, D) of the tokens at
  // [length, length + T) and returns views of all its keys and values so
  // far, (B, Hkv, length + T, D). Throws Error when they would not fit.
  std::pair<torch::Tensor, torch::Tensor> append(int layer, const torch::Tensor& k, const torch::Tensor& v);
  // Layer's keys / values of the tokens committed so far, (B, Hkv, length, D).
  torch::Tensor keys(int layer) const;
  torch::Tensor values(int layer) const;
  // (B, Hkv, (length + T) / block_size, D) in the pooled dtype: layer's pooled
  // complete blocks, those appended in this step included.
  torch::Tensor block_keys(int layer) const;
  // Ends the step: every layer has appended the same T tokens.
  void commit();
  // Forgets tokens from `length` on (a new prompt reusing the memory).
  void truncate(int64_t length);
  // Pools the stored keys again for another selection block size or pooled dtype.
  void set_pooling(int block_size, torch::ScalarType pooled_dtype);
  torch::ScalarType pooled_dtype() const { return pooled_dtype_; }

 private:
  struct Layer {
    torch::Tensor k, v;        // (B, Hkv, capacity, D)
    torch::Tensor block_keys;  // (B, Hkv, capacity / block_size, D) in pooled_dtype_
    int64_t pending = 0;       // tokens appended in the current step
  };
  std::vector<Layer> layers_;
  int64_t batch_, capacity_, length_ = 0;
  int block_size_;
  torch::ScalarType pooled_dtype_;
};

}  // namespace ssalab
