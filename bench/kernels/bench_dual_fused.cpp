// The experimental fused dual-stream kernels (experimental/dual_fwd.cuh,
// dual_bwd.cuh) on one selection: forward (full and sparse outputs in one
// pass) and forward+backward, against what the engine runs by default (cuDNN
// dense plus our sparse kernels, timed in bench_sparse.cpp), and the fused
// sparse output against sparse_fwd's.
#include "bench/kernels/bench_kernels.h"

namespace ssabench {

namespace {

class FusedDual {
 public:
  FusedDual(const Inputs& in, const SelectKernel& sel, const SparseKernels& ours) {
    ssalab::DualTensors t;
    t.q = in.q; t.k = in.k; t.v = in.v; t.blocks = sel.blocks;
    t.o_full = o_full = torch::empty_like(in.q);
    t.o_sparse = o_sparse = torch::empty_like(in.q);
    t.lse_full = lse_full_ = torch::empty_like(ours.lse);
    t.lse_sparse = lse_sparse_ = torch::empty_like(ours.lse);
    // both streams take in.dout as their upstream gradient (the work does not depend on values)
    t.do_full = t.do_sparse = in.dout;
    t.dq = ours.dq; t.dk = ours.dk; t.dv = ours.dv;
    fwd_p_ = ssalab::dual_fwd_params(t, sel.spec().block_size);
    bwd_p_ = ssalab::dual_bwd_params(t, sel.spec().block_size);
    ws_ = workspace(ssa::dual_bwd_workspace_bytes(bwd_p_), in.q);
    bwd_p_.workspace = ws_.data_ptr();
  }
  void forward() { ok(ssa::dual_fwd(fwd_p_, stream())); }
  void forward_backward() {
    forward();
    ok(ssa::dual_bwd(bwd_p_, stream()));
  }
  Tensor o_full, o_sparse;

 private:
  ssa::DualFwdParams fwd_p_;
  ssa::DualBwdParams bwd_p_;
  Tensor lse_full_, lse_sparse_, ws_;
};

}  // namespace

void bench_fused_dual(const Inputs& in, const SelectKernel& sel, SparseKernels& ours, GpuTimer& timer,
                      SelectionResult& s) {
  FusedDual fused(in, sel, ours);
  s.fused.fwd_ms = timer.median_ms([&] { fused.forward(); });
  s.fused.fwd_bwd_ms = timer.median_ms([&] { fused.forward_backward(); });
  ours.forward();
  sync();
  s.fused.sparse_diff = (fused.o_sparse.to(torch::kFloat) - ours.o.to(torch::kFloat)).abs().max().item<double>();
  print_line(in.shape.name, "dual-fused", sel.spec().label(), s.fused.fwd_ms, s.fused.fwd_bwd_ms,
             strf("one pass, full + sparse outputs; cuDNN dense fwd + our sparse fwd %.3f ms; "
                  "max |sparse O - sparse_fwd O| %.2g",
                  s.split_fwd_ms, s.fused.sparse_diff));
}

void print_fused_table(const std::vector<ShapeResult>& results) {
  std::printf("\n| shape | config | fused dual fwd | cuDNN dense fwd + our sparse fwd | fused dual fwd+bwd | "
              "cuDNN dense + our sparse fwd+bwd | fused x cuDNN dense fwd / fwd+bwd | max abs diff of the sparse outputs |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& r : results) {
    const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
    for (const auto& s : r.selections)
      std::printf("| %s | %s | %s | %s | %s | %s | %s | %.2g |\n", r.shape.name, s.spec.label().c_str(),
                  fmt_ms(s.fused.fwd_ms).c_str(), fmt_ms(s.split_fwd_ms).c_str(), fmt_ms(s.fused.fwd_bwd_ms).c_str(),
                  fmt_ms(s.dual_ms).c_str(),
                  cudnn ? strf("%.2fx / %.2fx", s.fused.fwd_ms / cudnn->fwd_ms, s.fused.fwd_bwd_ms / cudnn->fwd_bwd_ms)
                              .c_str()
                        : "-",
                  s.fused.sparse_diff);
  }
}

void add_fused_json(json& j, const ShapeResult& r, const SelectionResult& s) {
  const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
  j["fused_dual_fwd"] = {{"ms", s.fused.fwd_ms},
                         {"fwd_bwd_ms", s.fused.fwd_bwd_ms},
                         {"fwd_bwd_x_cudnn_dense", cudnn ? json(s.fused.fwd_bwd_ms / cudnn->fwd_bwd_ms) : json()},
                         {"cudnn_dense_fwd_plus_sparse_fwd_ms", finite(s.split_fwd_ms) ? json(s.split_fwd_ms) : json()},
                         {"x_cudnn_dense_fwd", cudnn ? json(s.fused.fwd_ms / cudnn->fwd_ms) : json()},
                         {"max_abs_diff_sparse_output", s.fused.sparse_diff}};
}

}  // namespace ssabench
