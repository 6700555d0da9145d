#include "engine/generate/kv_cache.h"

#include "engine/attention/attention.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

KVCache::KVCache(const ModelConfig& c, int64_t batch, int64_t capacity, int block_size, torch::Device device,
                 torch::ScalarType dtype, torch::ScalarType pooled_dtype)
    : batch_(batch), capacity_(capacity), block_size_(block_size), pooled_dtype_(pooled_dtype) {
  if (batch < 1) throw Error("KV cache: batch must be >= 1, got " + std::to_string(batch));
  if (capacity < 1) throw Error("KV cache: capacity must be >= 1 token, got " + std::to_string(capacity));
  if (block_size < 1) throw Error("KV cache: block size must be >= 1, got " + std::to_string(block_size));
  auto opts = torch::TensorOptions().dtype(dtype).device(device);
  for (int i = 0; i < c.num_layers; ++i) {
    Layer L;
    L.k = torch::empty({batch, c.num_kv_heads, capacity, c.head_dim}, opts);
    L.v = torch::empty({batch, c.num_kv_heads, capacity, c.head_dim}, opts);
    L.block_keys = torch::empty({batch, c.num_kv_heads, capacity / block_size, c.head_dim}, opts.dtype(pooled_dtype));
    layers_.push_back(std::move(L));
  }
}

uint64_t KVCache::bytes() const {
  uint64_t n = 0;
  for (const Layer& L : layers_) n += L.k.nbytes() + L.v.nbytes() + L.block_keys.nbytes();
  return n;
}

std::pair<Tensor, Tensor> KVCache::append(int layer, const Tensor& k, const Tensor& v) {
  if (layer < 0 || layer >= num_layers()) throw Error("KV cache: no layer " + std::to_string(layer));
  Layer& L = layers_[size_t(layer)];
  const int64_t T = k.size(2);
  if (k.dim() != 4 || k.sizes() != v.sizes() || k.size(0) != batch_ || k.size(1) != L.k.size(1) ||
      k.size(3) != L.k.size(3))
    throw Error("KV cache: keys/values of shape " + std::to_string(k.size(0)) + "x" + std::to_string(k.size(1)) +
                "x" + std::to_string(T) + "x" + std::to_string(k.size(3)) + " do not match the cache's batch " +
                std::to_string(batch_) + ", " + std::to_string(L.k.size(1)) + " KV heads of dim " +
                std::to_string(L.k.size(3)));
  if (L.pending != 0) throw Error("KV cache: layer " + std::to_string(layer) + " appended twice in one step");
  if (length_ + T > capacity_)
    throw Error("KV cache: " + std::to_string(length_) + " tokens plus " + std::to_string(T) + " new exceed its " +
                std::to_string(capacity_) + "-token capacity");
  AttentionBackend* cuda = k.is_cuda() ? cuda_backend() : nullptr;
  (cuda ? *cuda : reference_backend()).append_to_cache(k, v, L.k, L.v, L.block_keys, length_, block_size_);
  L.pending = T;
  return {L.k.narrow(2, 0, length_ + T), L.v.narrow(2, 0, length_ + T)};
}

Tensor KVCache::keys(int layer) const { return layers_.at(size_t(layer)).k.narrow(2, 0, length_); }
Tensor KVCache::values(int layer) const { return layers_.at(size_t(layer)).v.narrow(2, 0, length_); }

Tensor KVCache::block_keys(int layer) const {
  const Layer& L = layers_.at(size_t(layer));
  return L.block_keys.narrow(2, 0, (length_ + L.pending) / block_size_);
}

void KVCache::commit() {
  const int64_t T = layers_.empty() ? 0 : layers_[0].pending;
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].pending != T)
      throw Error("KV cache: layer " + std::to_string(i) + " appended " + std::to_string(layers_[i].pending) +
                  " tokens in a step where layer 0 appended " + std::to_string(T));
  for (Layer& L : layers_) L.pending = 0;
  length_ += T;
}

void KVCache::truncate(int64_t length) {
  if (length < 0 || length > length_)
    throw Error("KV cache: cannot truncate " + std::to_string(length_) + " tokens to " + std::to_string(length));
  for (Layer& L : layers_) L.pending = 0;
  length_ = length;  // blocks completed before `length` keep their pooled keys
}

void KVCache::set_pooling(int block_size, torch::ScalarType pooled_dtype) {
  if (block_size < 1) throw Error("KV cache: block size must be >= 1, got " + std::to_string(block_size));
  if (block_size == block_size_ && pooled_dtype == pooled_dtype_) return;
  block_size_ = block_size;
  pooled_dtype_ = pooled_dtype;
  torch::NoGradGuard no_grad;
  for (Layer& L : layers_) {
    L.block_keys = torch::empty({L.k.size(0), L.k.size(1), capacity_ / block_size, L.k.size(3)},
                                L.k.options().dtype(pooled_dtype));
    pool_completed_blocks(L.k, L.block_keys, 0, length_, block_size);
  }
}

}  // namespace ssalab
