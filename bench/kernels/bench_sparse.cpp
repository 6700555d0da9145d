// Sparse attention forward and backward (kernels/sparse_fwd.cuh,
// sparse_bwd.cuh) on one selection: the forward checked against a masked dense
// fp32 reference first, then fwd, fwd+bwd and its stages timed, and the split
// dual stream that the engine runs in SSA training: cuDNN dense fwd+bwd plus
// ours, as one op and with ours on a second CUDA stream.
#include "bench/kernels/bench_kernels.h"

#include <c10/cuda/CUDAGuard.h>

namespace ssabench {

// Forward check tolerances.  The kernel rounds P to bf16 before P.V and O to
// bf16 at the end: about one bf16 ulp of O (0.008 at |O| ~ 2), so the output
// limit scales with max|O|; LSE is fp32 throughout.  A wrong block, mask or
// scale is off by tenths.  (The GPU tests in tests/ hold the tight limits.)
constexpr double kMaxErrOutput = 2e-2;  // times max(1, max|O_ref|)
constexpr double kMaxErrLse = 5e-3;

SparseKernels::SparseKernels(const Inputs& in, const SelectKernel& sel) {
  const ShapeSpec& s = in.shape;
  const int bs = sel.spec().block_size, K = sel.spec().top_k, nb = ceil_div(s.T, bs);
  auto i32 = in.q.options().dtype(torch::kInt32);
  index_offsets = torch::empty({kBatch, s.Hkv, nb + 1}, i32);
  index_tokens = torch::empty({kBatch, s.Hkv, int64_t(s.T) * K}, i32);
  o = torch::empty_like(in.q);
  lse = torch::empty({kBatch, s.Hq, s.T}, in.q.options().dtype(torch::kFloat));
  dq = torch::empty_like(in.q);
  dk = torch::empty_like(in.k);
  dv = torch::empty_like(in.v);

  index_p_ = ssalab::block_index_params(sel.blocks, s.T, bs, index_offsets, index_tokens);
  index_ws_ = workspace(ssa::block_index_workspace_bytes(index_p_), in.q);
  index_p_.work = reinterpret_cast<int32_t*>(index_ws_.data_ptr());

  fwd_p_ = ssalab::sparse_fwd_params(in.q, in.k, in.v, sel.blocks, bs, /*q_offset=*/0, o, lse);

  ssalab::SparseBwdTensors t;
  t.q = in.q; t.k = in.k; t.v = in.v; t.o = o; t.lse = lse; t.blocks = sel.blocks; t.dout = in.dout;
  t.index_offsets = index_offsets; t.index_tokens = index_tokens; t.dq = dq; t.dk = dk; t.dv = dv;
  bwd_p_ = ssalab::sparse_bwd_params(t, bs, /*q_offset=*/0);
  bwd_ws_ = workspace(ssa::sparse_bwd_workspace_bytes(bwd_p_), in.q);  // needs the shape set above
  bwd_p_.workspace = bwd_ws_.data_ptr();
}

void SparseKernels::forward() { ok(ssa::sparse_fwd(fwd_p_, stream())); }
void SparseKernels::forward_all_tiles() {
  ssa::SparseFwdParams p = fwd_p_;
  p.min_block_reuse = 0.f;
  ok(ssa::sparse_fwd(p, stream()));
}
double SparseKernels::query_tile_share() {
  Tensor counts = torch::zeros({2}, o.options().dtype(torch::kInt32));
  ssa::SparseFwdParams p = fwd_p_;
  p.min_block_reuse = 2.f;
  p.tile_counts = counts.data_ptr<int>();
  ok(ssa::sparse_fwd(p, stream()));
  counts = counts.cpu();
  const double tiled = counts[0].item<int>(), left = counts[1].item<int>();
  return tiled + left > 0 ? tiled / (tiled + left) : 0.0;
}
void SparseKernels::build_index() { ok(ssa::build_block_index(index_p_, stream())); }
void SparseKernels::backward() { ok(ssa::sparse_bwd(bwd_p_, stream())); }

// The forward walks each (token, group of up to 16 query heads) through 16-key
// chunks: the own block's chunks up to the one holding the token, then every
// selected past block whole (past blocks are complete).  Each chunk is K and V
// rows, read once per walk.
SelectionSize measure_selection(const Inputs& in, const SelectKernel& sel) {
  const ShapeSpec& s = in.shape;
  const int bs = sel.spec().block_size, G = s.Hq / s.Hkv, walks_per_group = ceil_div(G, 16);
  const int64_t streams = int64_t(kBatch) * s.Hkv;  // (batch, kv head) pairs sharing a selection layout
  const int64_t past_blocks = sel.counts.to(torch::kLong).sum().item<int64_t>() - streams * s.T;
  int64_t own_keys = 0, own_rows = 0;  // summed over tokens
  for (int t = 0; t < s.T; ++t) {
    const int block_start = t - t % bs;
    own_keys += t % bs + 1;
    own_rows += std::min((t % bs) / 16 * 16 + 16, s.T - block_start);  // rows at or past T are not read
  }
  SelectionSize z;
  z.pairs = G * (past_blocks * bs + streams * own_keys);
  z.fwd_kv_bytes = double(past_blocks * bs + streams * own_rows) * walks_per_group * 2 /*K and V*/ * s.D *
                   2 /*bytes per bf16*/;
  z.density = double(z.pairs) / (double(kBatch) * s.Hq * s.T * (s.T + 1.0) / 2);
  return z;
}

// softmax(q K^T * scale) V in fp32 over exactly the keys the selection allows,
// on a few query rows, first (own block only) to last (full k), all heads.
ForwardCheck check_forward(const Inputs& in, const SelectKernel& sel, const SparseKernels& ours) {
  const ShapeSpec& s = in.shape;
  const int bs = sel.spec().block_size, G = s.Hq / s.Hkv, nb = ceil_div(s.T, bs);
  const int64_t T = s.T;
  ForwardCheck c;
  c.rows = {0, 17, 1000, T / 3, T / 2 + 5, T - 2, T - 1};
  const int64_t R = int64_t(c.rows.size());
  auto i64 = torch::TensorOptions().device(in.q.device()).dtype(torch::kLong);
  Tensor rows = torch::tensor(c.rows, i64);
  Tensor key_pos = torch::arange(T, i64);
  Tensor block_of_key = key_pos.div(bs, "floor");

  // Heads grouped by kv head: row (hkv, g * R + r) is query head hkv * G + g at token rows[r].
  Tensor q_rows = in.q.index_select(2, rows).to(torch::kFloat).view({kBatch, s.Hkv, G * R, s.D});
  Tensor k = in.k.to(torch::kFloat), v = in.v.to(torch::kFloat);
  Tensor scores = torch::matmul(q_rows, k.transpose(2, 3)).mul(1.0 / std::sqrt(double(s.D)));
  scores = scores.view({kBatch, s.Hkv, G, R, T});

  Tensor picked = sel.blocks.to(torch::kLong).index_select(2, rows);  // (B, Hkv, R, K)
  picked = picked.masked_fill(picked.lt(0), nb);  // empty slots mark a spare column
  Tensor chosen = torch::zeros({kBatch, s.Hkv, R, nb + 1}, i64.dtype(torch::kBool)).scatter_(3, picked, true);
  Tensor causal = key_pos.view({1, 1, 1, T}).le(rows.view({1, 1, R, 1}));
  Tensor allowed = chosen.index_select(3, block_of_key).logical_and(causal);  // (B, Hkv, R, T)
  scores.masked_fill_(allowed.unsqueeze(2).logical_not(), -INFINITY);

  Tensor lse_ref = scores.logsumexp(-1).reshape({kBatch, s.Hq, R});
  Tensor out_ref = torch::matmul(torch::softmax(scores, -1).view({kBatch, s.Hkv, G * R, T}), v);
  out_ref = out_ref.view({kBatch, s.Hq, R, s.D});
  c.max_err_output = (out_ref - ours.o.index_select(2, rows).to(torch::kFloat)).abs().max().item<double>();
  c.max_err_lse = (lse_ref - ours.lse.index_select(2, rows)).abs().max().item<double>();
  const double output_limit = kMaxErrOutput * std::max(1.0, out_ref.abs().max().item<double>());
  if (!(c.max_err_output <= output_limit) || !(c.max_err_lse <= kMaxErrLse))  // NaN fails too
    throw CheckFailure(strf("shape %s %s: sparse forward differs from the masked dense reference: max|O - ref| %.3g "
                            "(limit %.3g), max|LSE - ref| %.3g (limit %.3g)",
                            s.name, sel.spec().label().c_str(), c.max_err_output, output_limit, c.max_err_lse,
                            kMaxErrLse));
  return c;
}

namespace {

// Runs two ops on two CUDA streams: `side_op` on a pool stream that first
// waits for the current stream, `main_op` on the current stream, which then
// waits for the side stream, so the pair is one op in stream order.  The dense
// stream is compute-bound and ours bound by L2 traffic: they can share the GPU.
class TwoStreams {
 public:
  TwoStreams() : side_(c10::cuda::getStreamFromPool()) {
    cuda_ok(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming), "cudaEventCreate");
    cuda_ok(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~TwoStreams() {
    cudaEventDestroy(fork_);
    cudaEventDestroy(join_);
  }
  TwoStreams(const TwoStreams&) = delete;
  TwoStreams& operator=(const TwoStreams&) = delete;
  void run(const std::function<void()>& side_op, const std::function<void()>& main_op) {
    cudaStream_t main = stream();
    cuda_ok(cudaEventRecord(fork_, main), "cudaEventRecord");
    cuda_ok(cudaStreamWaitEvent(side_.stream(), fork_, 0), "cudaStreamWaitEvent");
    {
      c10::cuda::CUDAStreamGuard on_side(side_);
      side_op();
    }
    main_op();
    cuda_ok(cudaEventRecord(join_, side_.stream()), "cudaEventRecord");
    cuda_ok(cudaStreamWaitEvent(main, join_, 0), "cudaStreamWaitEvent");
  }

 private:
  c10::cuda::CUDAStream side_;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
};

}  // namespace

void bench_sparse(const Inputs& in, SelectKernel& sel, SparseKernels& ours, DenseSdpa& dense,
                  const DenseResult* cudnn, GpuTimer& timer, SelectionResult& s) {
  const ShapeSpec& spec = in.shape;
  const std::string cfg = sel.spec().label();
  s.select_ms = timer.median_ms([&] { sel.run(); });
  s.fwd_ms = timer.median_ms([&] { ours.forward(); });
  s.fwd_all_tiles_ms = timer.median_ms([&] { ours.forward_all_tiles(); });
  s.query_tile_share = ours.query_tile_share();
  s.fwd_bwd_ms = timer.median_ms([&] { ours.forward_backward(); });
  s.index_ms = timer.median_ms([&] { ours.build_index(); });
  s.bwd_ms = timer.median_ms([&] { ours.backward(); });
  print_line(spec.name, "select", cfg, s.select_ms, kNaN);
  print_line(spec.name, "sparse", cfg, s.fwd_ms, s.fwd_bwd_ms,
             strf("density %.4f, tiles reusing blocks 2x %.0f%% (fwd with all query tiles %.3f ms), %.0f / %.0f TF/s, fwd K/V "
                  "%.2f GB at %.2f TB/s, index %.3f + bwd %.3f ms, check max|O - ref| %.2g max|LSE - ref| %.2g",
                  s.size.density, 100 * s.query_tile_share, s.fwd_all_tiles_ms, tflops(4, s.size.pairs, spec.D, s.fwd_ms),
                  tflops(14, s.size.pairs, spec.D, s.fwd_bwd_ms), s.size.fwd_kv_bytes / 1e9,
                  s.size.fwd_kv_bytes / (s.fwd_ms * 1e-3) / 1e12, s.index_ms, s.bwd_ms, s.check.max_err_output,
                  s.check.max_err_lse));
  if (!cudnn) return;

  DenseSdpa::OnlySdpa only(SdpaBackend::cudnn);
  s.dual_ms = timer.median_ms([&] {
    dense.forward_backward();
    ours.forward_backward();
  });
  print_line(spec.name, "dual", cfg, kNaN, s.dual_ms,
             strf("cuDNN dense + ours, fwd+bwd = %.3fx cuDNN dense", s.dual_ms / cudnn->fwd_bwd_ms));
  TwoStreams two;
  s.dual_streams_ms = timer.median_ms([&] {
    two.run([&] { ours.forward_backward(); }, [&] { dense.forward_backward(); });
  });
  print_line(spec.name, "dual-2str", cfg, kNaN, s.dual_streams_ms,
             strf("ours on a second stream, fwd+bwd = %.3fx cuDNN dense", s.dual_streams_ms / cudnn->fwd_bwd_ms));
  s.split_fwd_ms = timer.median_ms([&] {
    dense.forward();
    ours.forward();
  });
}

void print_sparse_table(const std::vector<ShapeResult>& results) {
  std::printf("\n| shape | config | select | fwd | tiles reusing blocks 2x | fwd, all query tiles "
              "| transposed index | bwd (dQ + dK/dV) | density | check max abs err O / LSE |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& r : results)
    for (const auto& s : r.selections)
      std::printf("| %s | %s | %s | %s | %.0f%% | %s | %s | %s | %.4f | %.2g / %.2g |\n", r.shape.name,
                  s.spec.label().c_str(), fmt_ms(s.select_ms).c_str(), fmt_ms(s.fwd_ms).c_str(),
                  100 * s.query_tile_share, fmt_ms(s.fwd_all_tiles_ms).c_str(), fmt_ms(s.index_ms).c_str(),
                  fmt_ms(s.bwd_ms).c_str(), s.size.density, s.check.max_err_output, s.check.max_err_lse);
}

void add_sparse_json(json& j, const ShapeResult& r, const SelectionResult& s) {
  j["selection_checksum"] = s.selection_checksum;
  j["pairs"] = s.size.pairs;
  j["density"] = s.size.density;
  j["fwd_kv_bytes"] = s.size.fwd_kv_bytes;
  j["check"] = {{"rows", s.check.rows},
                {"max_abs_err_output", s.check.max_err_output},
                {"max_abs_err_lse", s.check.max_err_lse}};
  j["select_ms"] = s.select_ms;
  j["fwd_ms"] = s.fwd_ms;
  j["fwd_all_tiles_ms"] = s.fwd_all_tiles_ms;
  j["query_tile_share"] = s.query_tile_share;
  j["fwd_bwd_ms"] = s.fwd_bwd_ms;
  j["index_ms"] = s.index_ms;
  j["bwd_ms"] = s.bwd_ms;
  j["fwd_tflops"] = tflops(4, s.size.pairs, r.shape.D, s.fwd_ms);
  j["fwd_bwd_tflops"] = tflops(14, s.size.pairs, r.shape.D, s.fwd_bwd_ms);
  j["fwd_kv_tb_per_s"] = s.size.fwd_kv_bytes / (s.fwd_ms * 1e-3) / 1e12;
  const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
  if (finite(s.dual_ms) && cudnn)
    j["dual"] = {{"fwd_bwd_ms", s.dual_ms},
                 {"sum_of_parts_ms", cudnn->fwd_bwd_ms + s.fwd_bwd_ms},
                 {"x_cudnn_dense", s.dual_ms / cudnn->fwd_bwd_ms},
                 {"two_streams_ms", s.dual_streams_ms},
                 {"two_streams_x_cudnn_dense", s.dual_streams_ms / cudnn->fwd_bwd_ms}};
}

}  // namespace ssabench
