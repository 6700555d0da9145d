// LibTorch tensors -> kernel params.  See kernel_params.h.
#ifdef SSALAB_WITH_CUDA
#include "engine/attention/kernel_params.h"

#include <limits>
#include <string>

#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

namespace {

int to_int(int64_t x, const char* what) {
  if (x < 0 || x > std::numeric_limits<int>::max() / 2) throw Error(std::string("kernel params: ") + what + " out of range");
  return int(x);
}

// Data pointer of an optional tensor of the given dtype (null when undefined).
template <typename T = void>
T* ptr(const Tensor& t, torch::ScalarType want, const char* name) {
  if (!t.defined()) return nullptr;
  if (t.scalar_type() != want) throw Error(std::string("kernel params: ") + name + " has the wrong dtype");
  if (!t.is_cuda()) throw Error(std::string("kernel params: ") + name + " is not on the GPU");
  return static_cast<T*>(t.data_ptr());
}
// The same for a 16-bit tensor of q's dtype, with its strides.
void* ptr16(const Tensor& t, const Tensor& q, const char* name) { return ptr(t, q.scalar_type(), name); }
// int32 tensors (selections, index lists) must be contiguous: the kernels index them densely.
int32_t* ptr32(const Tensor& t, const char* name) {
  if (t.defined() && !t.is_contiguous()) throw Error(std::string("kernel params: ") + name + " must be contiguous");
  return ptr<int32_t>(t, torch::kInt32, name);
}
float* ptrf(const Tensor& t, const char* name) {
  if (t.defined() && !t.is_contiguous()) throw Error(std::string("kernel params: ") + name + " must be contiguous");
  return ptr<float>(t, torch::kFloat, name);
}
ssa::Strides4 strides_or_zero(const Tensor& t) { return t.defined() ? kernel_strides(t) : ssa::Strides4{}; }

// The q, k, v and o pointers and strides every attention params struct has.
template <class Params>
void set_qkvo(Params& p, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o) {
  p.q = ptr16(q, q, "q");
  p.k = ptr16(k, q, "k");
  p.v = ptr16(v, q, "v");
  p.o = ptr16(o, q, "o");
  p.q_s = kernel_strides(q);
  p.k_s = kernel_strides(k);
  p.v_s = kernel_strides(v);
  p.o_s = strides_or_zero(o);
}

}  // namespace

ssa::DType kernel_dtype(const Tensor& t) {
  if (t.scalar_type() == torch::kBFloat16) return ssa::DType::bf16;
  if (t.scalar_type() == torch::kHalf) return ssa::DType::fp16;
  throw Error("kernel params: the CUDA kernels take bf16 or fp16 tensors");
}

ssa::Strides4 kernel_strides(const Tensor& t) {
  if (t.dim() != 4 || t.stride(3) != 1) throw Error("kernel params: expects (B, H, T, D) with the last dim contiguous");
  return {t.stride(0), t.stride(1), t.stride(2)};
}

KernelShape kernel_shape(const Tensor& q, const Tensor& k, int block_size, int top_k, int64_t q_offset) {
  if (q.dim() != 4 || k.dim() != 4) throw Error("kernel params: expects q (B,Hq,Tq,D) and k (B,Hkv,Tk,D)");
  KernelShape s;
  s.B = to_int(q.size(0), "batch");
  s.Hq = to_int(q.size(1), "query heads");
  s.Hkv = to_int(k.size(1), "kv heads");
  s.D = to_int(q.size(3), "head dim");
  s.Tq = to_int(q.size(2), "query length");
  s.Tk = to_int(k.size(2), "key length");
  s.q_offset = to_int(q_offset, "q_offset");
  s.block_size = block_size;
  s.top_k = top_k;
  s.dtype = kernel_dtype(q);
  return s;
}

ssa::SelectParams select_params(const Tensor& q, const Tensor& k, int block_size, int top_k, int64_t q_offset,
                                const Tensor& blocks, const Tensor& counts) {
  ssa::SelectParams p;
  set_shape(p, kernel_shape(q, k, block_size, top_k, q_offset));
  p.q = ptr16(q, q, "q");
  p.k = ptr16(k, q, "k");
  p.q_s = kernel_strides(q);
  p.k_s = kernel_strides(k);
  p.kbar = nullptr;
  p.blocks = ptr32(blocks, "blocks");
  p.counts = ptr32(counts, "counts");
  return p;
}

ssa::BlockIndexParams block_index_params(const Tensor& blocks, int64_t Tk, int block_size, const Tensor& offsets,
                                         const Tensor& tokens) {
  if (blocks.dim() != 4) throw Error("kernel params: expects a selection (B, Hkv, Tq, K)");
  ssa::BlockIndexParams p;
  p.blocks = ptr32(blocks, "blocks");
  p.B = to_int(blocks.size(0), "batch");
  p.Hkv = to_int(blocks.size(1), "kv heads");
  p.Tq = to_int(blocks.size(2), "query length");
  p.K = to_int(blocks.size(3), "top-k");
  p.Tk = to_int(Tk, "key length");
  p.block_size = block_size;
  p.offsets = ptr32(offsets, "index offsets");
  p.tokens = ptr32(tokens, "index tokens");
  p.work = nullptr;
  return p;
}

ssa::SparseFwdParams sparse_fwd_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& blocks,
                                       int block_size, int64_t q_offset, const Tensor& o, const Tensor& lse) {
  ssa::SparseFwdParams p;
  set_shape(p, kernel_shape(q, k, block_size, int(blocks.size(3)), q_offset));
  set_qkvo(p, q, k, v, o);
  p.lse = ptrf(lse, "lse");
  p.blocks = ptr32(blocks, "blocks");
  return p;
}

ssa::DecodeParams decode_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& block_keys,
                                int block_size, int top_k, bool nsa_chunked, const Tensor& o, const Tensor& blocks) {
  if (q.dim() != 4 || q.size(2) != 1) throw Error("kernel params: decoding takes one query per sequence");
  ssa::DecodeParams p;
  KernelShape s = kernel_shape(q, k, block_size, top_k, k.size(2) - 1);
  p.B = s.B, p.Hq = s.Hq, p.Hkv = s.Hkv, p.D = s.D, p.Tk = s.Tk;
  p.block_size = block_size, p.top_k = top_k, p.dtype = s.dtype;
  p.nsa_chunked = nsa_chunked;
  set_qkvo(p, q, k, v, o);
  if (block_keys.defined()) {
    if (block_keys.dim() != 4 || block_keys.stride(3) != 1 || block_keys.size(2) < s.Tk / block_size)
      throw Error("kernel params: block_keys must be (B, Hkv, >= Tk / block_size, D) with the last dim contiguous");
    if (block_keys.scalar_type() == torch::kBFloat16)  // PooledKeys::Bf16
      p.block_keys_bf16 = ptr(block_keys, torch::kBFloat16, "block_keys");
    else
      p.block_keys = ptr<float>(block_keys, torch::kFloat, "block_keys");
    p.kb_s = {block_keys.stride(0), block_keys.stride(1), block_keys.stride(2)};
  }
  p.blocks = ptr32(blocks, "blocks");
  return p;
}

ssa::AppendParams append_params(const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache,
                                const Tensor& block_keys, int64_t length, int block_size) {
  if (k.dim() != 4 || k.sizes() != v.sizes() || k_cache.dim() != 4 || k_cache.sizes() != v_cache.sizes() ||
      k.size(0) != k_cache.size(0) || k.size(1) != k_cache.size(1) || k.size(3) != k_cache.size(3))
    throw Error("kernel params: the cache update takes k, v (B, Hkv, T, D) and a cache (B, Hkv, capacity, D)");
  if (block_keys.dim() != 4 || block_keys.stride(3) != 1 || block_keys.size(2) < k_cache.size(2) / block_size)
    throw Error("kernel params: block_keys must be (B, Hkv, capacity / block_size, D) with the last dim contiguous");
  ssa::AppendParams p;
  p.k_new = ptr16(k, k, "k");
  p.v_new = ptr16(v, k, "v");
  p.k_cache = ptr16(k_cache, k, "k_cache");
  p.v_cache = ptr16(v_cache, k, "v_cache");
  p.block_keys_bf16 = block_keys.scalar_type() == torch::kBFloat16;  // PooledKeys::Bf16
  p.block_keys = ptr(block_keys, p.block_keys_bf16 ? torch::kBFloat16 : torch::kFloat, "block_keys");
  p.kn_s = kernel_strides(k);
  p.vn_s = kernel_strides(v);
  p.kc_s = kernel_strides(k_cache);
  p.vc_s = kernel_strides(v_cache);
  p.kb_s = {block_keys.stride(0), block_keys.stride(1), block_keys.stride(2)};
  p.B = to_int(k.size(0), "batch");
  p.Hkv = to_int(k.size(1), "kv heads");
  p.T = to_int(k.size(2), "new tokens");
  p.D = to_int(k.size(3), "head dim");
  p.length = to_int(length, "cache length");
  p.capacity = to_int(k_cache.size(2), "cache capacity");
  p.block_size = block_size;
  p.dtype = kernel_dtype(k);
  return p;
}

ssa::SparseBwdParams sparse_bwd_params(const SparseBwdTensors& t, int block_size, int64_t q_offset) {
  ssa::SparseBwdParams p;
  set_shape(p, kernel_shape(t.q, t.k, block_size, int(t.blocks.size(3)), q_offset));
  p.q = ptr16(t.q, t.q, "q");
  p.k = ptr16(t.k, t.q, "k");
  p.v = ptr16(t.v, t.q, "v");
  p.o = ptr16(t.o, t.q, "o");
  p.dout = ptr16(t.dout, t.q, "dout");
  p.lse = ptrf(t.lse, "lse");
  p.blocks = ptr32(t.blocks, "blocks");
  p.index_offsets = ptr32(t.index_offsets, "index offsets");
  p.index_tokens = ptr32(t.index_tokens, "index tokens");
  p.dq = ptr16(t.dq, t.q, "dq");
  p.dk = ptr16(t.dk, t.q, "dk");
  p.dv = ptr16(t.dv, t.q, "dv");
  p.q_s = kernel_strides(t.q);
  p.k_s = kernel_strides(t.k);
  p.v_s = kernel_strides(t.v);
  p.o_s = strides_or_zero(t.o);
  p.do_s = strides_or_zero(t.dout);
  p.dq_s = strides_or_zero(t.dq);
  p.dk_s = strides_or_zero(t.dk);
  p.dv_s = strides_or_zero(t.dv);
  return p;
}

ssa::StatsParams stats_params(const Tensor& q, const Tensor& k, const Tensor& blocks, int block_size, int top_k,
                              int64_t q_offset, const Tensor& stats) {
  ssa::StatsParams p;
  set_shape(p, kernel_shape(q, k, block_size, top_k, q_offset));
  p.q = ptr16(q, q, "q");
  p.k = ptr16(k, q, "k");
  p.blocks = ptr32(blocks, "blocks");
  p.q_s = kernel_strides(q);
  p.k_s = kernel_strides(k);
  p.stats = ptrf(stats, "stats");
  p.map = p.map_sparse = p.map_dropped = nullptr;
  return p;
}

ssa::BlockMassParams block_mass_params(const Tensor& q, const Tensor& k, const Tensor& blocks, const Tensor& lse,
                                       int block_size, int64_t q_offset, const Tensor& mass) {
  ssa::BlockMassParams p;
  set_shape(p, kernel_shape(q, k, block_size, int(blocks.size(3)), q_offset));
  p.q = ptr16(q, q, "q");
  p.k = ptr16(k, q, "k");
  p.q_s = kernel_strides(q);
  p.k_s = kernel_strides(k);
  p.blocks = ptr32(blocks, "blocks");
  p.lse = ptrf(lse, "lse");
  p.mass = ptrf(mass, "mass");
  return p;
}

ssa::DualFwdParams dual_fwd_params(const DualTensors& t, int block_size) {
  ssa::DualFwdParams p;
  set_shape(p, kernel_shape(t.q, t.k, block_size, int(t.blocks.size(3)), 0));
  p.q = ptr16(t.q, t.q, "q");
  p.k = ptr16(t.k, t.q, "k");
  p.v = ptr16(t.v, t.q, "v");
  p.o_full = ptr16(t.o_full, t.q, "o_full");
  p.o_sparse = ptr16(t.o_sparse, t.q, "o_sparse");
  p.lse_full = ptrf(t.lse_full, "lse_full");
  p.lse_sparse = ptrf(t.lse_sparse, "lse_sparse");
  p.blocks = ptr32(t.blocks, "blocks");
  p.q_s = kernel_strides(t.q);
  p.k_s = kernel_strides(t.k);
  p.v_s = kernel_strides(t.v);
  p.of_s = strides_or_zero(t.o_full);
  p.os_s = strides_or_zero(t.o_sparse);
  return p;
}

ssa::DualBwdParams dual_bwd_params(const DualTensors& t, int block_size) {
  ssa::DualBwdParams p;
  set_shape(p, kernel_shape(t.q, t.k, block_size, int(t.blocks.size(3)), 0));
  p.q = ptr16(t.q, t.q, "q");
  p.k = ptr16(t.k, t.q, "k");
  p.v = ptr16(t.v, t.q, "v");
  p.o_full = ptr16(t.o_full, t.q, "o_full");
  p.o_sparse = ptr16(t.o_sparse, t.q, "o_sparse");
  p.do_full = ptr16(t.do_full, t.q, "do_full");
  p.do_sparse = ptr16(t.do_sparse, t.q, "do_sparse");
  p.lse_full = ptrf(t.lse_full, "lse_full");
  p.lse_sparse = ptrf(t.lse_sparse, "lse_sparse");
  p.blocks = ptr32(t.blocks, "blocks");
  p.dq = ptr16(t.dq, t.q, "dq");
  p.dk = ptr16(t.dk, t.q, "dk");
  p.dv = ptr16(t.dv, t.q, "dv");
  p.workspace = nullptr;
  p.q_s = kernel_strides(t.q);
  p.k_s = kernel_strides(t.k);
  p.v_s = kernel_strides(t.v);
  p.of_s = strides_or_zero(t.o_full);
  p.os_s = strides_or_zero(t.o_sparse);
  p.dof_s = strides_or_zero(t.do_full);
  p.dos_s = strides_or_zero(t.do_sparse);
  p.dq_s = strides_or_zero(t.dq);
  p.dk_s = strides_or_zero(t.dk);
  p.dv_s = strides_or_zero(t.dv);
  return p;
}

}  // namespace ssalab

#endif  // SSALAB_WITH_CUDA
