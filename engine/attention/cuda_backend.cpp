// CUDA attention backend: the kernels in kernels/ behind AttentionBackend.
//
// Each differentiable op is a torch::autograd::Function whose forward fills a
// kernel params struct (kernel_params.h) and saves what its backward needs (q,
// k, v, the output, its LSE and the int32 selection); backward builds the
// transposed block index and runs the deterministic sparse backward kernels.
// Selection has no gradient.  Full attention calls
// at::scaled_dot_product_attention (cuDNN / flash), which brings its own
// backward.  The SSA dual stream runs either as that plus the sparse kernels
// ("split", the default: measured faster, see kernels/README.md) or as the
// experimental fused dual-stream kernels, one pass over K/V for both outputs
// (SSALAB_DUAL_KERNEL=fused; whole sequences only).
//
// Every call follows the cache contract of attention.h: q (B, Hq, Tq, D) at
// positions q_offset.., k and v (B, Hkv, Tk, D).  Without SSALAB_WITH_CUDA (the
// CPU build) this file only says "no CUDA backend".
#include "engine/attention/attention.h"

#ifdef SSALAB_WITH_CUDA
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <set>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "engine/attention/kernel_params.h"
#include "engine/util/error.h"

namespace ssalab {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void ok(const std::string& e) {
  if (!e.empty()) throw Error("cuda backend: " + e);
}
cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }
Tensor workspace(size_t bytes, const Tensor& like) {
  return torch::empty({int64_t(bytes) + 16}, like.options().dtype(torch::kUInt8));
}

// (B, Hkv, Tq, K) int32 selection of queries at positions q_offset...
Tensor run_select(const Tensor& q_in, const Tensor& k_in, const SparseSpec& spec, int64_t q_offset) {
  Tensor q = q_in.contiguous(), k = k_in.contiguous();
  Tensor blocks = torch::empty({q.size(0), k.size(1), q.size(2), spec.top_k}, q.options().dtype(torch::kInt32));
  ssa::SelectParams p = select_params(q, k, spec.block_size, spec.top_k, q_offset, blocks);
  p.nsa_chunked = spec.rule == SelectionRule::NsaChunked;
  p.bf16_pooled_keys = spec.pooled_keys == PooledKeys::Bf16;
  Tensor ws = workspace(ssa::select_workspace_bytes(p), q);
  p.kbar = ws.data_ptr();
  ok(ssa::select_blocks(p, stream()));
  return blocks;
}

// Why a decoding step ran off the decode kernel, said once per reason.
void note_decode_fallback(const std::string& why) {
  static std::mutex mu;
  static std::set<std::string> said;
  std::lock_guard<std::mutex> lock(mu);
  if (said.insert(why).second) std::fprintf(stderr, "[ssalab] decoding without the decode kernel: %s\n", why.c_str());
}

// Sparse attention with the kernels' own backward.  Inputs: q, k, v (16-bit),
// blocks (B, Hkv, Tq, K) int32 contiguous; `bs` the block size, `q_offset`
// the position of query row 0.
class SparseAttentionFn : public torch::autograd::Function<SparseAttentionFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                        const Tensor& blocks, int64_t bs, int64_t q_offset) {
    Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    Tensor o = torch::empty_like(q);
    Tensor lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(torch::kFloat));
    ok(ssa::sparse_fwd(sparse_fwd_params(q, k, v, blocks, int(bs), q_offset, o, lse), stream()));
    ctx->save_for_backward({q, k, v, o, lse, blocks});
    ctx->saved_data["bs"] = bs;
    ctx->saved_data["q_offset"] = q_offset;
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    SparseBwdTensors t;
    t.q = s[0]; t.k = s[1]; t.v = s[2]; t.o = s[3]; t.lse = s[4]; t.blocks = s[5];
    const int bs = int(ctx->saved_data["bs"].toInt());
    const int64_t q_offset = ctx->saved_data["q_offset"].toInt();
    c10::cuda::CUDAGuard guard(t.q.device());
    t.dout = grads[0].contiguous();

    const int64_t B = t.q.size(0), Hkv = t.k.size(1), Tq = t.q.size(2), Tk = t.k.size(2), K = t.blocks.size(3);
    auto iopt = t.q.options().dtype(torch::kInt32);
    t.index_offsets = torch::empty({B, Hkv, (Tk + bs - 1) / bs + 1}, iopt);
    t.index_tokens = torch::empty({B, Hkv, Tq * K}, iopt);
    ssa::BlockIndexParams ip = block_index_params(t.blocks, Tk, bs, t.index_offsets, t.index_tokens);
    Tensor iwork = workspace(ssa::block_index_workspace_bytes(ip), t.q);
    ip.work = reinterpret_cast<int32_t*>(iwork.data_ptr());
    ok(ssa::build_block_index(ip, stream()));

    t.dq = torch::empty_like(t.q);
    t.dk = torch::empty_like(t.k);
    t.dv = torch::empty_like(t.v);
    ssa::SparseBwdParams p = sparse_bwd_params(t, bs, q_offset);
    Tensor ws = workspace(ssa::sparse_bwd_workspace_bytes(p), t.q);
    p.workspace = ws.data_ptr();
    ok(ssa::sparse_bwd(p, stream()));
    return {t.dq, t.dk, t.dv, Tensor(), Tensor(), Tensor()};
  }
};

// Both SSA streams with the experimental fused kernels: returns {full,
// sparse}; the backward takes each output's own gradient (a missing one counts
// as zero) and returns their summed dq, dk, dv.  Whole sequences only.
class DualAttentionFn : public torch::autograd::Function<DualAttentionFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                               const Tensor& blocks, int64_t bs) {
    DualTensors t;
    t.q = q_in.contiguous(); t.k = k_in.contiguous(); t.v = v_in.contiguous(); t.blocks = blocks;
    t.o_full = torch::empty_like(t.q);
    t.o_sparse = torch::empty_like(t.q);
    t.lse_full = torch::empty({t.q.size(0), t.q.size(1), t.q.size(2)}, t.q.options().dtype(torch::kFloat));
    t.lse_sparse = torch::empty_like(t.lse_full);
    ok(ssa::dual_fwd(dual_fwd_params(t, int(bs)), stream()));
    ctx->save_for_backward({t.q, t.k, t.v, t.o_full, t.o_sparse, t.lse_full, t.lse_sparse, blocks});
    ctx->saved_data["bs"] = bs;
    return {t.o_full, t.o_sparse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    DualTensors t;
    t.q = s[0]; t.k = s[1]; t.v = s[2]; t.o_full = s[3]; t.o_sparse = s[4]; t.lse_full = s[5]; t.lse_sparse = s[6];
    t.blocks = s[7];
    c10::cuda::CUDAGuard guard(t.q.device());
    t.do_full = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(t.o_full);
    t.do_sparse = grads[1].defined() ? grads[1].contiguous() : torch::zeros_like(t.o_sparse);
    t.dq = torch::empty_like(t.q);
    t.dk = torch::empty_like(t.k);
    t.dv = torch::empty_like(t.v);
    ssa::DualBwdParams p = dual_bwd_params(t, int(ctx->saved_data["bs"].toInt()));
    Tensor ws = workspace(ssa::dual_bwd_workspace_bytes(p), t.q);  // after the shape is set
    p.workspace = ws.data_ptr();
    ok(ssa::dual_bwd(p, stream()));
    return {t.dq, t.dk, t.dv, Tensor(), Tensor()};
  }
};

// SSALAB_DUAL_KERNEL=fused selects the fused dual-stream kernels; anything else
// (or unset) the split path.
bool fused_dual_requested() {
  const char* e = std::getenv("SSALAB_DUAL_KERNEL");
  return e && std::string(e) == "fused";
}

// Whether every tensor is on the GPU in `first`'s dtype, and that dtype is one
// the kernels take (bf16 or fp16): the decode and cache-update kernels' inputs.
bool all_cuda_16bit(std::initializer_list<const Tensor*> tensors) {
  const Tensor& first = **tensors.begin();
  if (first.scalar_type() != torch::kBFloat16 && first.scalar_type() != torch::kHalf) return false;
  for (const Tensor* t : tensors)
    if (!t->is_cuda() || t->scalar_type() != first.scalar_type()) return false;
  return true;
}

class CudaBackend final : public AttentionBackend {
 public:
  const char* name() const override { return "cuda"; }

  std::string supports(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) const override {
    if (!q.defined() || !k.defined()) return "no tensors";
    if (!q.is_cuda() || !k.is_cuda()) return "CUDA kernels need CUDA tensors";
    if (q.device() != k.device()) return "q and k on different devices";
    const auto st = q.scalar_type();
    if (st != torch::kBFloat16 && st != torch::kHalf) return "CUDA kernels need bf16 or fp16 tensors";
    if (k.scalar_type() != st) return "q and k differ in dtype";
    if (q.dim() != 4 || k.dim() != 4) return "expects q (B,Hq,Tq,D) and k (B,Hkv,Tk,D)";
    if (q.size(0) != k.size(0) || q.size(3) != k.size(3)) return "q and k disagree in batch or head dim";
    if (std::string offset = offset_problem(q_offset, q.size(2), k.size(2)); !offset.empty()) return offset;
    if (k.size(2) > (int64_t(1) << 30)) return "sequence too long";
    ssa::SelectParams sp;  // shape checks and the selection kernel's shared-memory limits
    set_shape(sp, kernel_shape(q, k, spec.block_size, spec.top_k, q_offset));
    return ssa::select_supported(sp);
  }

  Selection select(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) override {
    return {select_int32(q, k, spec, q_offset).to(torch::kLong), spec.block_size, q_offset};
  }

  Tensor full(const Tensor& q, const Tensor& k_in, const Tensor& v_in, int64_t q_offset) override {
    c10::cuda::CUDAGuard guard(q.device());
    if (q_offset < 0 || q_offset + q.size(2) > k_in.size(2)) throw Error("cuda backend: queries run past the keys");
    // keys past the last query are seen by none: drop them
    const int64_t Tq = q.size(2), Tk = q_offset + Tq;
    Tensor k = Tk == k_in.size(2) ? k_in : k_in.narrow(2, 0, Tk), v = Tk == v_in.size(2) ? v_in : v_in.narrow(2, 0, Tk);
    const int64_t G = q.size(1) / k.size(1);
    if (Tq == 1 && !q.requires_grad()) {
      // Decoding: FlashAttention reads the cache once for all heads of a
      // group (no per-head copy), through its strides. Not SDPA's default
      // choice, cuDNN, which builds a plan for every new key length, that is
      // at every step (about 3 ms per layer on an H200).
      try {
        return std::get<0>(at::_scaled_dot_product_flash_attention(q, k, v, 0.0, /*is_causal=*/false));
      } catch (const c10::Error&) {
        return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/false, std::nullopt,
                                                /*enable_gqa=*/G > 1);
      }
    }
    // expanded K/V keep the fast cuDNN path; autograd sums dK/dV over the group
    Tensor ke = G == 1 ? k : k.repeat_interleave(G, 1), ve = G == 1 ? v : v.repeat_interleave(G, 1);
    if (q_offset == 0)  // square: SDPA's own causal mask
      return at::scaled_dot_product_attention(q, ke, ve, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
    if (Tq == 1)  // one token at the end sees every key
      return at::scaled_dot_product_attention(q, ke, ve, {}, 0.0, /*is_causal=*/false);
    // queries at positions q_offset.. see keys up to their position (SDPA's
    // is_causal aligns the diagonal to key 0, so the mask is explicit)
    auto lopts = torch::TensorOptions().dtype(torch::kLong).device(q.device());
    Tensor keep = torch::arange(Tk, lopts).view({1, Tk}) <= torch::arange(q_offset, Tk, lopts).view({Tq, 1});
    return at::scaled_dot_product_attention(q, ke, ve, keep, 0.0, /*is_causal=*/false);
  }

  Tensor sparse(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    SparseSpec spec{sel.block_size, int(sel.blocks.size(3))};
    ok(supports(q, k, spec, sel.q_offset));
    check_inputs(q, k, v, sel);
    c10::cuda::CUDAGuard guard(q.device());
    Tensor blocks = sel.blocks.to(q.device(), torch::kInt32).contiguous();
    return SparseAttentionFn::apply(q, k, v, blocks, int64_t(sel.block_size), sel.q_offset);
  }

  Tensor decode(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& block_keys, const SparseSpec& spec,
                Tensor* blocks_out) override {
    // either rule, 16-bit tensors on the GPU; else the default path
    const bool chunked = spec.rule == SelectionRule::NsaChunked;
    std::string why;
    if (!all_cuda_16bit({&q, &k, &v}) || !block_keys.is_cuda()) why = "the decode kernel needs bf16 or fp16 CUDA tensors";
    ssa::DecodeParams p;
    if (why.empty()) {
      p = decode_params(q, k, v, block_keys, spec.block_size, spec.top_k, chunked);
      why = ssa::decode_supported(p);
    }
    if (!why.empty()) {
      note_decode_fallback(why);
      return AttentionBackend::decode(q, k, v, block_keys, spec, blocks_out);
    }
    torch::NoGradGuard no_grad;
    c10::cuda::CUDAGuard guard(q.device());
    Tensor o = torch::empty_like(q);
    Tensor blocks = torch::empty({q.size(0), k.size(1), spec.top_k}, q.options().dtype(torch::kInt32));
    p = decode_params(q, k, v, block_keys, spec.block_size, spec.top_k, chunked, o, blocks);
    Tensor ws = workspace(ssa::decode_workspace_bytes(p), q);
    p.workspace = reinterpret_cast<float*>(ws.data_ptr());
    ok(ssa::decode_attention(p, stream()));
    if (blocks_out) *blocks_out = blocks.to(torch::kLong).unsqueeze(2);
    return o;
  }

  void append_to_cache(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache, Tensor& block_keys,
                       int64_t length, int block_size) override {
    const bool kernel_takes = all_cuda_16bit({&k, &v, &k_cache, &v_cache}) && block_keys.is_cuda() &&
                              (block_keys.scalar_type() == torch::kFloat ||
                               block_keys.scalar_type() == torch::kBFloat16) &&
                              k.stride(3) == 1 && v.stride(3) == 1;
    ssa::AppendParams p;
    if (kernel_takes) p = append_params(k, v, k_cache, v_cache, block_keys, length, block_size);
    if (!kernel_takes || !ssa::append_supported(p).empty()) {
      AttentionBackend::append_to_cache(k, v, k_cache, v_cache, block_keys, length, block_size);
      return;
    }
    c10::cuda::CUDAGuard guard(k.device());
    ok(ssa::append_to_cache(p, stream()));
  }

  std::pair<Tensor, Tensor> select_and_dual(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const SparseSpec& spec) override {
    // int32, as the sparse kernels read it: sparse()'s conversion is a no-op
    return dual(q, k, v, Selection{select_int32(q, k, spec, 0), spec.block_size, 0});
  }

  std::pair<Tensor, Tensor> dual(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    // Split (default): cuDNN / flash attention for the full output and the sparse
    // kernels for the sparse one, each with its own backward; about 3x faster than
    // our fused kernels on the H100 (kernels/README.md says why).
    if (!fused_dual_requested()) return {full(q, k, v, sel.q_offset), sparse(q, k, v, sel)};
    SparseSpec spec{sel.block_size, int(sel.blocks.size(3))};
    ok(supports(q, k, spec, sel.q_offset));
    check_inputs(q, k, v, sel);
    c10::cuda::CUDAGuard guard(q.device());
    ssa::DualFwdParams lim;  // the fused kernel's own limits (whole sequences, bitmask size)
    set_shape(lim, kernel_shape(q, k, sel.block_size, spec.top_k, sel.q_offset));
    ok(ssa::dual_fwd_supported(lim));
    Tensor blocks = sel.blocks.to(q.device(), torch::kInt32).contiguous();
    variable_list out = DualAttentionFn::apply(q, k, v, blocks, int64_t(sel.block_size));
    return {out[0], out[1]};
  }

 private:
  // The selection kernel's (B, Hkv, Tq, K) int32 blocks, after the checks of supports().
  Tensor select_int32(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) const {
    ok(supports(q, k, spec, q_offset));
    torch::NoGradGuard no_grad;
    c10::cuda::CUDAGuard guard(q.device());
    return run_select(q.detach(), k.detach(), spec, q_offset);
  }
  // v like k, a selection row per query row.
  static void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) {
    if (v.scalar_type() != q.scalar_type() || !v.sizes().equals(k.sizes())) throw Error("cuda backend: v must match k");
    const auto& b = sel.blocks;
    if (b.dim() != 4 || b.size(0) != q.size(0) || b.size(1) != k.size(1) || b.size(2) != q.size(2))
      throw Error("cuda backend: the selection is not (B, Hkv, Tq, K) for these queries");
  }
};

}  // namespace

AttentionBackend* cuda_backend() {
  static CudaBackend backend;
  return &backend;
}

}  // namespace ssalab

#else  // !SSALAB_WITH_CUDA

namespace ssalab {
AttentionBackend* cuda_backend() { return nullptr; }
}  // namespace ssalab

#endif
