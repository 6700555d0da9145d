// CUDA attention backend: the kernels in kernels/ behind AttentionBackend.
//
// Each differentiable op is a torch::autograd::Function whose forward fills a
// kernel params struct and saves what its backward needs (q, k, v, the output,
// its LSE and the int32 selection); backward builds the transposed block index
// and runs the deterministic sparse backward kernels.  Selection has no
// gradient.  Full attention calls at::scaled_dot_product_attention (cuDNN /
// flash), which brings its own backward.  The SSA dual stream runs either as
// that plus the sparse kernels ("split", the default: measured faster, see
// kernels/README.md) or as the fused dual-stream kernels, one pass over K/V
// for both outputs (SSALAB_DUAL_KERNEL=fused).  Without SSALAB_WITH_CUDA (the
// CPU build) this file only says "no CUDA backend".
#include "engine/attention/attention.h"

#ifdef SSALAB_WITH_CUDA
#include <cstdlib>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "engine/util/error.h"
#include "kernels/dual_bwd.cuh"
#include "kernels/dual_fwd.cuh"
#include "kernels/select.cuh"
#include "kernels/sparse_bwd.cuh"
#include "kernels/sparse_fwd.cuh"

namespace ssalab {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void ok(const std::string& e) {
  if (!e.empty()) throw Error("cuda backend: " + e);
}
ssa::DType dtype_of(const Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 ? ssa::DType::bf16 : ssa::DType::fp16;
}
ssa::Strides4 strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }
cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }
Tensor workspace(size_t bytes, const Tensor& like) {
  return torch::empty({int64_t(bytes) + 16}, like.options().dtype(torch::kUInt8));
}

struct Dims {
  int B, Hq, Hkv, T, D;
};
Dims dims_of(const Tensor& q, const Tensor& k) {
  return {int(q.size(0)), int(q.size(1)), int(k.size(1)), int(q.size(2)), int(q.size(3))};
}

// (B, Hkv, T, K) int32 selection.
Tensor run_select(const Tensor& q_in, const Tensor& k_in, int bs, int K) {
  Tensor q = q_in.contiguous(), k = k_in.contiguous();
  const Dims d = dims_of(q, k);
  ssa::SelectParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.q_stride_b = q.stride(0); p.q_stride_h = q.stride(1); p.q_stride_t = q.stride(2);
  p.k_stride_b = k.stride(0); p.k_stride_h = k.stride(1); p.k_stride_t = k.stride(2);
  p.B = d.B; p.Hq = d.Hq; p.Hkv = d.Hkv; p.T = d.T; p.D = d.D;
  p.block_size = bs; p.top_k = K; p.dtype = dtype_of(q);
  Tensor ws = workspace(ssa::select_workspace_bytes(p), q);
  Tensor blocks = torch::empty({d.B, d.Hkv, d.T, K}, q.options().dtype(torch::kInt32));
  p.kbar = ws.data_ptr();
  p.blocks = blocks.data_ptr<int32_t>();
  p.counts = nullptr;
  ok(ssa::select_blocks(p, stream()));
  return blocks;
}

// Sparse attention with the kernels' own backward.  Inputs: q, k, v (16-bit,
// contiguous), blocks (B, Hkv, T, K) int32 contiguous; `bs` the block size.
class SparseAttentionFn : public torch::autograd::Function<SparseAttentionFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                        const Tensor& blocks, int64_t bs) {
    Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const Dims d = dims_of(q, k);
    Tensor o = torch::empty_like(q);
    Tensor lse = torch::empty({d.B, d.Hq, d.T}, q.options().dtype(torch::kFloat));
    ssa::SparseFwdParams p;
    p.q = q.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr(); p.o = o.data_ptr();
    p.lse = lse.data_ptr<float>();
    p.blocks = blocks.data_ptr<int32_t>();
    p.q_s = strides_of(q); p.k_s = strides_of(k); p.v_s = strides_of(v); p.o_s = strides_of(o);
    p.B = d.B; p.Hq = d.Hq; p.Hkv = d.Hkv; p.T = d.T; p.D = d.D;
    p.block_size = int(bs); p.top_k = int(blocks.size(3)); p.dtype = dtype_of(q);
    ok(ssa::sparse_fwd(p, stream()));
    ctx->save_for_backward({q, k, v, o, lse, blocks});
    ctx->saved_data["bs"] = bs;
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &q = s[0], &k = s[1], &v = s[2], &o = s[3], &lse = s[4], &blocks = s[5];
    const int bs = int(ctx->saved_data["bs"].toInt());
    Tensor dout = grads[0].contiguous();
    const Dims d = dims_of(q, k);
    const int K = int(blocks.size(3)), nb = (d.T + bs - 1) / bs;
    c10::cuda::CUDAGuard guard(q.device());

    ssa::BlockIndexParams ip;
    ip.blocks = blocks.data_ptr<int32_t>();
    ip.B = d.B; ip.Hkv = d.Hkv; ip.T = d.T; ip.K = K; ip.block_size = bs;
    auto iopt = q.options().dtype(torch::kInt32);
    Tensor offsets = torch::empty({d.B, d.Hkv, nb + 1}, iopt);
    Tensor tokens = torch::empty({d.B, d.Hkv, int64_t(d.T) * K}, iopt);
    Tensor iwork = workspace(ssa::block_index_workspace_bytes(ip), q);
    ip.offsets = offsets.data_ptr<int32_t>();
    ip.tokens = tokens.data_ptr<int32_t>();
    ip.work = reinterpret_cast<int32_t*>(iwork.data_ptr());
    ok(ssa::build_block_index(ip, stream()));

    Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    ssa::SparseBwdParams p;
    p.q = q.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr(); p.o = o.data_ptr(); p.dout = dout.data_ptr();
    p.lse = lse.data_ptr<float>();
    p.blocks = blocks.data_ptr<int32_t>();
    p.index_offsets = ip.offsets;
    p.index_tokens = ip.tokens;
    p.dq = dq.data_ptr(); p.dk = dk.data_ptr(); p.dv = dv.data_ptr();
    p.q_s = strides_of(q); p.k_s = strides_of(k); p.v_s = strides_of(v); p.o_s = strides_of(o);
    p.do_s = strides_of(dout); p.dq_s = strides_of(dq); p.dk_s = strides_of(dk); p.dv_s = strides_of(dv);
    p.B = d.B; p.Hq = d.Hq; p.Hkv = d.Hkv; p.T = d.T; p.D = d.D;
    p.block_size = bs; p.top_k = K; p.dtype = dtype_of(q);
    Tensor ws = workspace(ssa::sparse_bwd_workspace_bytes(p), q);  // after the shape is set
    p.workspace = ws.data_ptr();
    ok(ssa::sparse_bwd(p, stream()));
    return {dq, dk, dv, Tensor(), Tensor()};
  }
};

// Both SSA streams with the fused kernels: returns {full, sparse}; the backward
// takes each output's own gradient (a missing one counts as zero) and returns
// their summed dq, dk, dv.
class DualAttentionFn : public torch::autograd::Function<DualAttentionFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                               const Tensor& blocks, int64_t bs) {
    Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const Dims d = dims_of(q, k);
    Tensor of = torch::empty_like(q), os = torch::empty_like(q);
    auto f32 = q.options().dtype(torch::kFloat);
    Tensor lf = torch::empty({d.B, d.Hq, d.T}, f32), ls = torch::empty({d.B, d.Hq, d.T}, f32);
    ssa::DualFwdParams p;
    p.q = q.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr();
    p.o_full = of.data_ptr(); p.o_sparse = os.data_ptr();
    p.lse_full = lf.data_ptr<float>(); p.lse_sparse = ls.data_ptr<float>();
    p.blocks = blocks.data_ptr<int32_t>();
    p.q_s = strides_of(q); p.k_s = strides_of(k); p.v_s = strides_of(v); p.of_s = strides_of(of);
    p.os_s = strides_of(os);
    p.B = d.B; p.Hq = d.Hq; p.Hkv = d.Hkv; p.T = d.T; p.D = d.D;
    p.block_size = int(bs); p.top_k = int(blocks.size(3)); p.dtype = dtype_of(q);
    ok(ssa::dual_fwd(p, stream()));
    ctx->save_for_backward({q, k, v, of, os, lf, ls, blocks});
    ctx->saved_data["bs"] = bs;
    return {of, os};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &q = s[0], &k = s[1], &v = s[2], &of = s[3], &os = s[4], &lf = s[5], &ls = s[6], &blocks = s[7];
    c10::cuda::CUDAGuard guard(q.device());
    Tensor gf = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(of);
    Tensor gs = grads[1].defined() ? grads[1].contiguous() : torch::zeros_like(os);
    const Dims d = dims_of(q, k);
    Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    ssa::DualBwdParams p;
    p.q = q.data_ptr(); p.k = k.data_ptr(); p.v = v.data_ptr();
    p.o_full = of.data_ptr(); p.o_sparse = os.data_ptr(); p.do_full = gf.data_ptr(); p.do_sparse = gs.data_ptr();
    p.lse_full = lf.data_ptr<float>(); p.lse_sparse = ls.data_ptr<float>();
    p.blocks = blocks.data_ptr<int32_t>();
    p.dq = dq.data_ptr(); p.dk = dk.data_ptr(); p.dv = dv.data_ptr();
    p.q_s = strides_of(q); p.k_s = strides_of(k); p.v_s = strides_of(v); p.of_s = strides_of(of);
    p.os_s = strides_of(os); p.dof_s = strides_of(gf); p.dos_s = strides_of(gs);
    p.dq_s = strides_of(dq); p.dk_s = strides_of(dk); p.dv_s = strides_of(dv);
    p.B = d.B; p.Hq = d.Hq; p.Hkv = d.Hkv; p.T = d.T; p.D = d.D;
    p.block_size = int(ctx->saved_data["bs"].toInt()); p.top_k = int(blocks.size(3)); p.dtype = dtype_of(q);
    Tensor ws = workspace(ssa::dual_bwd_workspace_bytes(p), q);  // after the shape is set
    p.workspace = ws.data_ptr();
    ok(ssa::dual_bwd(p, stream()));
    return {dq, dk, dv, Tensor(), Tensor()};
  }
};

// SSALAB_DUAL_KERNEL=fused selects the fused dual-stream kernels; anything else
// (or unset) the split path.
bool fused_dual_requested() {
  const char* e = std::getenv("SSALAB_DUAL_KERNEL");
  return e && std::string(e) == "fused";
}

class CudaBackend final : public AttentionBackend {
 public:
  const char* name() const override { return "cuda"; }

  std::string supports(const Tensor& q, const Tensor& k, const SparseSpec& spec) const override {
    if (!q.defined() || !k.defined()) return "no tensors";
    if (!q.is_cuda() || !k.is_cuda()) return "CUDA kernels need CUDA tensors";
    if (q.device() != k.device()) return "q and k on different devices";
    const auto st = q.scalar_type();
    if (st != torch::kBFloat16 && st != torch::kHalf) return "CUDA kernels need bf16 or fp16 tensors";
    if (k.scalar_type() != st) return "q and k differ in dtype";
    if (q.dim() != 4 || k.dim() != 4) return "expects q (B,Hq,T,D) and k (B,Hkv,T,D)";
    if (q.size(0) != k.size(0) || q.size(2) != k.size(2) || q.size(3) != k.size(3))
      return "q and k disagree in batch, length or head dim";
    if (q.size(2) > (int64_t(1) << 30)) return "sequence too long";
    const Dims d = dims_of(q, k);
    std::string e = ssa::check_common(d.B, d.Hq, d.Hkv, d.T, d.D, spec.block_size, spec.top_k);
    if (!e.empty()) return e;
    ssa::SelectParams sp;  // shared-memory limits of the selection kernel
    sp.B = d.B; sp.Hq = d.Hq; sp.Hkv = d.Hkv; sp.T = d.T; sp.D = d.D;
    sp.block_size = spec.block_size; sp.top_k = spec.top_k;
    return ssa::select_supported(sp);
  }

  Selection select(const Tensor& q, const Tensor& k, const SparseSpec& spec) override {
    ok(supports(q, k, spec));
    torch::NoGradGuard no_grad;
    c10::cuda::CUDAGuard guard(q.device());
    Tensor blocks = run_select(q.detach(), k.detach(), spec.block_size, spec.top_k);
    return {blocks.to(torch::kLong), spec.block_size};
  }

  Tensor full(const Tensor& q, const Tensor& k, const Tensor& v) override {
    c10::cuda::CUDAGuard guard(q.device());
    const int64_t G = q.size(1) / k.size(1);
    // expanded K/V keep the fast cuDNN path; autograd sums dK/dV over the group
    Tensor ke = G == 1 ? k : k.repeat_interleave(G, 1), ve = G == 1 ? v : v.repeat_interleave(G, 1);
    return at::scaled_dot_product_attention(q, ke, ve, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
  }

  Tensor sparse(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    SparseSpec spec{sel.block_size, int(sel.blocks.size(3))};
    ok(supports(q, k, spec));
    if (v.scalar_type() != q.scalar_type() || !v.sizes().equals(k.sizes())) throw Error("cuda backend: v must match k");
    c10::cuda::CUDAGuard guard(q.device());
    Tensor blocks = sel.blocks.to(q.device(), torch::kInt32).contiguous();
    return SparseAttentionFn::apply(q, k, v, blocks, int64_t(sel.block_size));
  }

  std::pair<Tensor, Tensor> dual(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    // Split (default): cuDNN / flash attention for the full output and the sparse
    // kernels for the sparse one, each with its own backward; about 3x faster than
    // our fused kernels on the H100 (kernels/README.md says why).
    if (!fused_dual_requested()) return {full(q, k, v), sparse(q, k, v, sel)};
    SparseSpec spec{sel.block_size, int(sel.blocks.size(3))};
    ok(supports(q, k, spec));
    if (v.scalar_type() != q.scalar_type() || !v.sizes().equals(k.sizes())) throw Error("cuda backend: v must match k");
    c10::cuda::CUDAGuard guard(q.device());
    ssa::DualFwdParams lim;  // the fused kernel's own limits
    lim.B = int(q.size(0)); lim.Hq = int(q.size(1)); lim.Hkv = int(k.size(1)); lim.T = int(q.size(2));
    lim.D = int(q.size(3)); lim.block_size = sel.block_size; lim.top_k = spec.top_k;
    ok(ssa::dual_fwd_supported(lim));
    Tensor blocks = sel.blocks.to(q.device(), torch::kInt32).contiguous();
    variable_list out = DualAttentionFn::apply(q, k, v, blocks, int64_t(sel.block_size));
    return {out[0], out[1]};
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
