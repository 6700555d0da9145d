// Kernel benchmark: the ssalab kernels (selection, sparse attention forward and
// backward, full-attention statistics) against LibTorch's dense causal SDPA
// (cuDNN and flash backends), timed in one process on one GPU.  Prints the
// markdown tables of kernels/README.md and writes every number to JSON.
//
//   ssalab_kernel_bench [--shapes A,B,C,D] [--json PATH] [--flex PATH] [--reps N]
//
// FlexAttention has no C++ entry point: bench/flex_bench.py times it on the
// same inputs and selection and writes the JSON that --flex merges in.  Both
// programs get identical inputs by seeding the default generators with the
// shape's seed and drawing q, k, v, dO with randn on the GPU, in that order, in
// bf16, through the same LibTorch (the C++ build links the wheel's libraries).
// Nothing in the PyTorch API promises that across processes, so both record
// exact checksums of the inputs and of the selection, and a Flex entry whose
// checksums differ from ours is marked in the table.
//
// Timing copies triton.testing.do_bench, which produced the earlier Python
// numbers, so old and new tables compare: run the op once, estimate its time
// from 5 runs, warm up for 25 ms, then repeat it for a 200 ms budget (at least
// 5 times), each repetition preceded by zeroing a 256 MB buffer (flushes L2)
// and timed alone with CUDA events; report the median.
//
// Before timing a selection config the program checks our forward against a
// masked dense fp32 reference on a few query rows and exits with status 1 if
// it is off, so a broken build cannot print fast nonsense.
#include <cuda_runtime.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/attn_stats.cuh"
#include "kernels/dual_bwd.cuh"
#include "kernels/dual_fwd.cuh"
#include "kernels/select.cuh"
#include "kernels/sparse_bwd.cuh"
#include "kernels/sparse_fwd.cuh"

// scaled_dot_product_attention and the per-backend switches (the cuDNN one
// since 2.3) are LibTorch 2.x API; older headers only serve a syntax check of
// the rest.  The benchmark is built against 2.11.
#define SSALAB_HAS_SDPA (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3))

namespace {

using nlohmann::json;
using torch::Tensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------- what is measured

struct ShapeSpec {
  const char* name;
  int Hq, Hkv, D, T;
  uint64_t seed;  // flex_bench.py's SHAPES has the same seeds
};
constexpr int kBatch = 1;
constexpr ShapeSpec kShapes[] = {{"A", 16, 1, 64, 8192, 1},
                                 {"B", 32, 2, 64, 8192, 2},
                                 {"C", 32, 2, 64, 32768, 3},
                                 {"D", 16, 1, 128, 32768, 4}};

struct SelectionSpec {
  int block_size, top_k;
  std::string label() const { return "bs" + std::to_string(block_size) + " k" + std::to_string(top_k); }
};
constexpr SelectionSpec kSelections[] = {{16, 16}, {64, 16}};

// The statistics are a full-attention pass: one long shape with the first
// selection config says how they compare with dense SDPA (as bench.py did).
constexpr const char* kStatsShape = "C";
constexpr int kStatsMapRowPool = 64;  // query rows per map row; one map per head

// Forward check tolerances.  The kernel rounds P to bf16 before P.V and O to
// bf16 at the end: about one bf16 ulp of O (0.008 at |O| ~ 2), so the output
// limit scales with max|O|; LSE is fp32 throughout.  A wrong block, mask or
// scale is off by tenths.  (The GPU tests in tests/ hold the tight limits.)
constexpr double kMaxErrOutput = 2e-2;  // times max(1, max|O_ref|)
constexpr double kMaxErrLse = 5e-3;

// do_bench's settings (bench.py used rep=200 ms); 256 MB is triton's flush
// size, several times an H100's 50 MB L2.
constexpr int64_t kL2FlushBytes = int64_t(256) << 20;
constexpr double kWarmupMs = 25;
constexpr double kBudgetMs = 200;
constexpr double kStatsBudgetMs = 400;
constexpr int kMinReps = 5;  // do_bench allows 1; a median of 5 is steadier for the 30-50 ms dense runs
constexpr int kMaxReps = 10000;

// ---------------------------------------------------------------- small helpers

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

void ok(const std::string& error) {
  if (!error.empty()) throw std::runtime_error("kernel: " + error);
}
void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
void sync() { cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

int ceil_div(int a, int b) { return (a + b - 1) / b; }
bool finite(double x) { return std::isfinite(x); }
json number_or_null(double x) { return finite(x) ? json(x) : json(nullptr); }
double number_or_nan(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : kNaN;
}

// Effective TFLOP/s over attended pairs: fwd 4*pairs*D, fwd+bwd 14*pairs*D (bwd = 2.5 fwd).
double tflops(double flops_per_pair_dim, int64_t pairs, int D, double ms) {
  return flops_per_pair_dim * double(pairs) * D / (ms * 1e-3) / 1e12;
}

// Exact integer fingerprints of what a run saw; flex_bench.py computes the same.
int64_t bits_checksum(const Tensor& t) { return t.view(torch::kInt16).to(torch::kLong).sum().item<int64_t>(); }
int64_t selection_checksum(const Tensor& blocks) {
  Tensor flat = blocks.reshape({-1}).to(torch::kLong);
  Tensor weight = torch::arange(flat.numel(), flat.options()).remainder(65521).add(1);  // order matters too
  return flat.mul(weight).sum().item<int64_t>();
}

// ---------------------------------------------------------------- timing

class CudaEvents {
 public:
  explicit CudaEvents(size_t n) : events_(n, nullptr) {
    for (auto& e : events_) cuda_ok(cudaEventCreate(&e), "cudaEventCreate");
  }
  ~CudaEvents() {
    for (auto e : events_)
      if (e) cudaEventDestroy(e);
  }
  CudaEvents(const CudaEvents&) = delete;
  CudaEvents& operator=(const CudaEvents&) = delete;
  void record(size_t i) { cuda_ok(cudaEventRecord(events_[i], stream()), "cudaEventRecord"); }
  double ms_between(size_t from, size_t to) const {
    float ms = 0;
    cuda_ok(cudaEventElapsedTime(&ms, events_[from], events_[to]), "cudaEventElapsedTime");
    return ms;
  }

 private:
  std::vector<cudaEvent_t> events_;
};

// Median GPU time of an op, measured the way triton.testing.do_bench does (see
// the top of the file).  fixed_reps > 0 replaces the time budget.
class GpuTimer {
 public:
  explicit GpuTimer(int fixed_reps)
      : fixed_reps_(fixed_reps),
        l2_flush_(torch::empty({kL2FlushBytes / 4},
                               torch::TensorOptions().device(torch::kCUDA).dtype(torch::kInt32))) {}

  double median_ms(const std::function<void()>& op, double budget_ms = kBudgetMs) {
    op();
    sync();
    CudaEvents estimate(2);
    estimate.record(0);
    for (int i = 0; i < 5; ++i) {
      l2_flush_.zero_();
      op();
    }
    estimate.record(1);
    sync();
    const double estimate_ms = std::max(estimate.ms_between(0, 1) / 5, 1e-4);
    const int warmup = std::max(1, int(kWarmupMs / estimate_ms));
    const int reps = fixed_reps_ > 0 ? fixed_reps_ : std::clamp(int(budget_ms / estimate_ms), kMinReps, kMaxReps);
    for (int i = 0; i < warmup; ++i) op();
    CudaEvents events(2 * size_t(reps));
    for (int i = 0; i < reps; ++i) {
      l2_flush_.zero_();
      events.record(2 * i);
      op();
      events.record(2 * i + 1);
    }
    sync();
    std::vector<double> ms(reps);
    for (int i = 0; i < reps; ++i) ms[i] = events.ms_between(2 * i, 2 * i + 1);
    std::sort(ms.begin(), ms.end());
    return reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
  }

 private:
  int fixed_reps_;
  Tensor l2_flush_;
};

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

// ---------------------------------------------------------------- inputs

struct Inputs {
  ShapeSpec shape;
  Tensor q, k, v;  // (B, Hq | Hkv, T, D) bf16, contiguous
  Tensor dout;     // (B, Hq, T, D) fixed upstream gradient for every backward
};

Inputs make_inputs(const ShapeSpec& s) {
  torch::manual_seed(s.seed);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  Inputs in{s, {}, {}, {}, {}};
  // flex_bench.py draws the same four tensors in the same order
  in.q = torch::randn({kBatch, s.Hq, s.T, s.D}, opts);
  in.k = torch::randn({kBatch, s.Hkv, s.T, s.D}, opts);
  in.v = torch::randn({kBatch, s.Hkv, s.T, s.D}, opts);
  in.dout = torch::randn({kBatch, s.Hq, s.T, s.D}, opts);
  return in;
}

// ---------------------------------------------------------------- our kernels

ssa::Strides4 strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }
Tensor workspace(size_t bytes, const Tensor& like) {
  return torch::empty({int64_t(bytes) + 16}, like.options().dtype(torch::kUInt8));
}

// Buffers and launcher params of our kernels for one shape and selection
// config, filled once (as engine/attention/cuda_backend.cpp fills them per
// call) so that a timed call is the launch alone.
class SparseKernels {
 public:
  SparseKernels(const Inputs& in, SelectionSpec sel) : sel_(sel) {
    const ShapeSpec& s = in.shape;
    const int nb = ceil_div(s.T, sel.block_size);
    auto i32 = in.q.options().dtype(torch::kInt32);
    blocks = torch::empty({kBatch, s.Hkv, s.T, sel.top_k}, i32);
    counts = torch::empty({kBatch, s.Hkv, s.T}, i32);
    index_offsets = torch::empty({kBatch, s.Hkv, nb + 1}, i32);
    index_tokens = torch::empty({kBatch, s.Hkv, int64_t(s.T) * sel.top_k}, i32);
    o = torch::empty_like(in.q);
    lse = torch::empty({kBatch, s.Hq, s.T}, in.q.options().dtype(torch::kFloat));
    dq = torch::empty_like(in.q);
    dk = torch::empty_like(in.k);
    dv = torch::empty_like(in.v);

    select_p_.q = in.q.data_ptr();
    select_p_.k = in.k.data_ptr();
    select_p_.q_stride_b = in.q.stride(0); select_p_.q_stride_h = in.q.stride(1); select_p_.q_stride_t = in.q.stride(2);
    select_p_.k_stride_b = in.k.stride(0); select_p_.k_stride_h = in.k.stride(1); select_p_.k_stride_t = in.k.stride(2);
    select_p_.B = kBatch; select_p_.Hq = s.Hq; select_p_.Hkv = s.Hkv; select_p_.T = s.T; select_p_.D = s.D;
    select_p_.block_size = sel.block_size; select_p_.top_k = sel.top_k; select_p_.dtype = ssa::DType::bf16;
    select_ws_ = workspace(ssa::select_workspace_bytes(select_p_), in.q);
    select_p_.kbar = select_ws_.data_ptr();
    select_p_.blocks = blocks.data_ptr<int32_t>();
    select_p_.counts = counts.data_ptr<int32_t>();

    index_p_.blocks = blocks.data_ptr<int32_t>();
    index_p_.B = kBatch; index_p_.Hkv = s.Hkv; index_p_.T = s.T; index_p_.K = sel.top_k;
    index_p_.block_size = sel.block_size;
    index_ws_ = workspace(ssa::block_index_workspace_bytes(index_p_), in.q);
    index_p_.offsets = index_offsets.data_ptr<int32_t>();
    index_p_.tokens = index_tokens.data_ptr<int32_t>();
    index_p_.work = reinterpret_cast<int32_t*>(index_ws_.data_ptr());

    fwd_p_.q = in.q.data_ptr(); fwd_p_.k = in.k.data_ptr(); fwd_p_.v = in.v.data_ptr();
    fwd_p_.o = o.data_ptr(); fwd_p_.lse = lse.data_ptr<float>();
    fwd_p_.blocks = blocks.data_ptr<int32_t>();
    fwd_p_.q_s = strides_of(in.q); fwd_p_.k_s = strides_of(in.k); fwd_p_.v_s = strides_of(in.v);
    fwd_p_.o_s = strides_of(o);
    fwd_p_.B = kBatch; fwd_p_.Hq = s.Hq; fwd_p_.Hkv = s.Hkv; fwd_p_.T = s.T; fwd_p_.D = s.D;
    fwd_p_.block_size = sel.block_size; fwd_p_.top_k = sel.top_k; fwd_p_.dtype = ssa::DType::bf16;

    bwd_p_.q = in.q.data_ptr(); bwd_p_.k = in.k.data_ptr(); bwd_p_.v = in.v.data_ptr();
    bwd_p_.o = o.data_ptr(); bwd_p_.dout = in.dout.data_ptr(); bwd_p_.lse = lse.data_ptr<float>();
    bwd_p_.blocks = blocks.data_ptr<int32_t>();
    bwd_p_.index_offsets = index_p_.offsets;
    bwd_p_.index_tokens = index_p_.tokens;
    bwd_p_.dq = dq.data_ptr(); bwd_p_.dk = dk.data_ptr(); bwd_p_.dv = dv.data_ptr();
    bwd_p_.q_s = strides_of(in.q); bwd_p_.k_s = strides_of(in.k); bwd_p_.v_s = strides_of(in.v);
    bwd_p_.o_s = strides_of(o); bwd_p_.do_s = strides_of(in.dout);
    bwd_p_.dq_s = strides_of(dq); bwd_p_.dk_s = strides_of(dk); bwd_p_.dv_s = strides_of(dv);
    bwd_p_.B = kBatch; bwd_p_.Hq = s.Hq; bwd_p_.Hkv = s.Hkv; bwd_p_.T = s.T; bwd_p_.D = s.D;
    bwd_p_.block_size = sel.block_size; bwd_p_.top_k = sel.top_k; bwd_p_.dtype = ssa::DType::bf16;
    bwd_ws_ = workspace(ssa::sparse_bwd_workspace_bytes(bwd_p_), in.q);  // needs the shape set above
    bwd_p_.workspace = bwd_ws_.data_ptr();

    o_full = torch::empty_like(in.q);
    o_sparse = torch::empty_like(in.q);
    lse_full = torch::empty_like(lse);
    lse_sparse = torch::empty_like(lse);
    dual_p_.q = in.q.data_ptr(); dual_p_.k = in.k.data_ptr(); dual_p_.v = in.v.data_ptr();
    dual_p_.o_full = o_full.data_ptr(); dual_p_.o_sparse = o_sparse.data_ptr();
    dual_p_.lse_full = lse_full.data_ptr<float>(); dual_p_.lse_sparse = lse_sparse.data_ptr<float>();
    dual_p_.blocks = blocks.data_ptr<int32_t>();
    dual_p_.q_s = strides_of(in.q); dual_p_.k_s = strides_of(in.k); dual_p_.v_s = strides_of(in.v);
    dual_p_.of_s = strides_of(o_full); dual_p_.os_s = strides_of(o_sparse);
    dual_p_.B = kBatch; dual_p_.Hq = s.Hq; dual_p_.Hkv = s.Hkv; dual_p_.T = s.T; dual_p_.D = s.D;
    dual_p_.block_size = sel.block_size; dual_p_.top_k = sel.top_k; dual_p_.dtype = ssa::DType::bf16;

    // both streams take in.dout as their upstream gradient (the work does not depend on values)
    dual_bwd_p_.q = in.q.data_ptr(); dual_bwd_p_.k = in.k.data_ptr(); dual_bwd_p_.v = in.v.data_ptr();
    dual_bwd_p_.o_full = o_full.data_ptr(); dual_bwd_p_.o_sparse = o_sparse.data_ptr();
    dual_bwd_p_.do_full = in.dout.data_ptr(); dual_bwd_p_.do_sparse = in.dout.data_ptr();
    dual_bwd_p_.lse_full = lse_full.data_ptr<float>(); dual_bwd_p_.lse_sparse = lse_sparse.data_ptr<float>();
    dual_bwd_p_.blocks = blocks.data_ptr<int32_t>();
    dual_bwd_p_.dq = dq.data_ptr(); dual_bwd_p_.dk = dk.data_ptr(); dual_bwd_p_.dv = dv.data_ptr();
    dual_bwd_p_.q_s = strides_of(in.q); dual_bwd_p_.k_s = strides_of(in.k); dual_bwd_p_.v_s = strides_of(in.v);
    dual_bwd_p_.of_s = strides_of(o_full); dual_bwd_p_.os_s = strides_of(o_sparse);
    dual_bwd_p_.dof_s = strides_of(in.dout); dual_bwd_p_.dos_s = strides_of(in.dout);
    dual_bwd_p_.dq_s = strides_of(dq); dual_bwd_p_.dk_s = strides_of(dk); dual_bwd_p_.dv_s = strides_of(dv);
    dual_bwd_p_.B = kBatch; dual_bwd_p_.Hq = s.Hq; dual_bwd_p_.Hkv = s.Hkv; dual_bwd_p_.T = s.T; dual_bwd_p_.D = s.D;
    dual_bwd_p_.block_size = sel.block_size; dual_bwd_p_.top_k = sel.top_k; dual_bwd_p_.dtype = ssa::DType::bf16;
    dual_bwd_ws_ = workspace(ssa::dual_bwd_workspace_bytes(dual_bwd_p_), in.q);
    dual_bwd_p_.workspace = dual_bwd_ws_.data_ptr();
  }

  SelectionSpec spec() const { return sel_; }
  void select() { ok(ssa::select_blocks(select_p_, stream())); }
  void forward() { ok(ssa::sparse_fwd(fwd_p_, stream())); }
  void build_index() { ok(ssa::build_block_index(index_p_, stream())); }
  void backward() { ok(ssa::sparse_bwd(bwd_p_, stream())); }  // needs forward() and build_index()
  // Both SSA streams' forward in one pass (full causal and sparse outputs).
  void dual_forward() { ok(ssa::dual_fwd(dual_p_, stream())); }
  void dual_forward_backward() {
    dual_forward();
    ok(ssa::dual_bwd(dual_bwd_p_, stream()));
  }
  // What a training step pays for the sparse part once the selection exists.
  void forward_backward() {
    forward();
    build_index();
    backward();
  }

  Tensor blocks;  // (B, Hkv, T, K) int32, -1 = empty slot
  Tensor counts;  // (B, Hkv, T) int32: valid slots
  Tensor index_offsets, index_tokens;  // transposed index, (B, Hkv, nb+1) and (B, Hkv, T*K)
  Tensor o, lse, dq, dk, dv;
  Tensor o_full, o_sparse, lse_full, lse_sparse;  // dual_forward()'s outputs

 private:
  SelectionSpec sel_;
  ssa::SelectParams select_p_;
  ssa::BlockIndexParams index_p_;
  ssa::SparseFwdParams fwd_p_;
  ssa::SparseBwdParams bwd_p_;
  ssa::DualFwdParams dual_p_;
  ssa::DualBwdParams dual_bwd_p_;
  Tensor dual_bwd_ws_;
  Tensor select_ws_, index_ws_, bwd_ws_;
};

// Which pooled maps a statistics run also writes: none, the full-attention map,
// or that and the sparse and dropped maps (what the app's views show).
enum class StatsMaps { none, full, all };
std::string stats_maps_label(StatsMaps m) {
  return m == StatsMaps::none ? "no map"
         : m == StatsMaps::full ? "full map"
                                : "full, sparse and dropped maps";
}

// Full-attention statistics for one selection, optionally with the pooled maps.
class StatsKernel {
 public:
  StatsKernel(const Inputs& in, const SparseKernels& ours) {
    const ShapeSpec& s = in.shape;
    stats_ = torch::empty({kBatch, s.Hq, s.T, ssa::kStatCount}, in.q.options().dtype(torch::kFloat));
    p_.q = in.q.data_ptr();
    p_.k = in.k.data_ptr();
    p_.blocks = ours.blocks.data_ptr<int32_t>();
    p_.q_s = strides_of(in.q);
    p_.k_s = strides_of(in.k);
    p_.stats = stats_.data_ptr<float>();
    p_.map = nullptr;
    p_.map_row_pool = kStatsMapRowPool;
    p_.map_mean_heads = false;
    p_.B = kBatch; p_.Hq = s.Hq; p_.Hkv = s.Hkv; p_.T = s.T; p_.D = s.D;
    p_.block_size = ours.spec().block_size; p_.top_k = ours.spec().top_k; p_.dtype = ssa::DType::bf16;
    for (Tensor* m : {&map_, &map_sparse_, &map_dropped_})
      *m = torch::empty({int64_t(ssa::stats_map_elems(p_))}, stats_.options());
  }
  void run(StatsMaps maps) {
    p_.map = maps != StatsMaps::none ? map_.data_ptr<float>() : nullptr;
    p_.map_sparse = maps == StatsMaps::all ? map_sparse_.data_ptr<float>() : nullptr;
    p_.map_dropped = maps == StatsMaps::all ? map_dropped_.data_ptr<float>() : nullptr;
    ok(ssa::attn_stats(p_, stream()));
  }
  // Mean attention mass inside the selected blocks (what the app calls sparsity).
  double mean_selected_mass() const { return stats_.select(3, ssa::kStatSelected).mean().item<double>(); }

 private:
  ssa::StatsParams p_;
  Tensor stats_, map_, map_sparse_, map_dropped_;
};

// Sizes that follow from a selection: attended (query, key) pairs, and the K/V
// bytes our forward must bring from L2.  The forward walks each (token, group
// of up to 16 query heads) through 16-key chunks: the own block's chunks up to
// the one holding the token, then every selected past block whole (past
// blocks are complete).  Each chunk is K and V rows, read once per walk.
struct SelectionSize {
  int64_t pairs = 0;
  double fwd_kv_bytes = 0;
  double density = 0;  // pairs / causal dense pairs
};

SelectionSize measure_selection(const Inputs& in, const SparseKernels& ours) {
  const ShapeSpec& s = in.shape;
  const int bs = ours.spec().block_size, G = s.Hq / s.Hkv, walks_per_group = ceil_div(G, 16);
  const int64_t streams = int64_t(kBatch) * s.Hkv;  // (batch, kv head) pairs sharing a selection layout
  const int64_t past_blocks = ours.counts.to(torch::kLong).sum().item<int64_t>() - streams * s.T;
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

// ---------------------------------------------------------------- forward check

struct ForwardCheck {
  std::vector<int64_t> rows;
  double max_err_output = kNaN, max_err_lse = kNaN;
};

struct CheckFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Our forward on a few query rows (all heads) against softmax(q K^T * scale)
// V in fp32 over exactly the keys the selection allows; also that every
// token's slot 0 is its own block and counts match the valid slots.  Throws
// CheckFailure when anything is off.
ForwardCheck check_forward(const Inputs& in, const SparseKernels& ours) {
  const ShapeSpec& s = in.shape;
  const int bs = ours.spec().block_size, G = s.Hq / s.Hkv, nb = ceil_div(s.T, bs);
  const int64_t T = s.T;
  ForwardCheck c;
  c.rows = {0, 17, 1000, T / 3, T / 2 + 5, T - 2, T - 1};  // first (own block only) to last (full k)
  const int64_t R = int64_t(c.rows.size());
  auto i64 = torch::TensorOptions().device(in.q.device()).dtype(torch::kLong);
  Tensor rows = torch::tensor(c.rows, i64);
  Tensor key_pos = torch::arange(T, i64);
  Tensor block_of_key = key_pos.div(bs, "floor");

  Tensor blocks = ours.blocks.to(torch::kLong);  // (B, Hkv, T, K)
  const bool own_block_first = blocks.select(3, 0).eq(block_of_key).all().item<bool>();
  const bool counts_match = blocks.ge(0).sum(3).eq(ours.counts.to(torch::kLong)).all().item<bool>();
  if (!own_block_first || !counts_match)
    throw CheckFailure(strf("shape %s %s: selection malformed (slot 0 = own block: %s, counts match: %s)", s.name,
                            ours.spec().label().c_str(), own_block_first ? "yes" : "no", counts_match ? "yes" : "no"));

  // Heads grouped by kv head: row (hkv, g * R + r) is query head hkv * G + g at token rows[r].
  Tensor q_rows = in.q.index_select(2, rows).to(torch::kFloat).view({kBatch, s.Hkv, G * R, s.D});
  Tensor k = in.k.to(torch::kFloat), v = in.v.to(torch::kFloat);
  Tensor scores = torch::matmul(q_rows, k.transpose(2, 3)).mul(1.0 / std::sqrt(double(s.D)));
  scores = scores.view({kBatch, s.Hkv, G, R, T});

  Tensor picked = blocks.index_select(2, rows);  // (B, Hkv, R, K)
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
                            s.name, ours.spec().label().c_str(), c.max_err_output, output_limit, c.max_err_lse,
                            kMaxErrLse));
  return c;
}

// ---------------------------------------------------------------- dense SDPA

enum class SdpaBackend { cudnn, flash };
const char* backend_name(SdpaBackend b) { return b == SdpaBackend::cudnn ? "cudnn" : "flash"; }

// Leaves of the dense runs.  K and V are expanded to all query heads, as the
// engine's full() does; the expanded copies are the leaves, so the timed
// backward is the attention kernel's alone, without the group sum of dK / dV
// (bench.py measured the same way).
struct DenseInputs {
  Tensor q, k_expanded, v_expanded, dout;
};

DenseInputs make_dense_inputs(const Inputs& in) {
  const int64_t G = in.shape.Hq / in.shape.Hkv;
  return {in.q.detach().requires_grad_(), in.k.repeat_interleave(G, 1).detach().requires_grad_(),
          in.v.repeat_interleave(G, 1).detach().requires_grad_(), in.dout};
}

#if SSALAB_HAS_SDPA
// Leaves exactly one SDPA backend enabled (math off too, so an unsupported case
// fails instead of silently timing the math path); restores the flags after.
class OnlySdpaBackend {
 public:
  explicit OnlySdpaBackend(SdpaBackend b) {
    auto& c = at::globalContext();
    saved_ = {c.userEnabledFlashSDP(), c.userEnabledMemEfficientSDP(), c.userEnabledMathSDP(), c.userEnabledCuDNNSDP()};
    c.setSDPUseFlash(b == SdpaBackend::flash);
    c.setSDPUseMemEfficient(false);
    c.setSDPUseMath(false);
    c.setSDPUseCuDNN(b == SdpaBackend::cudnn);
  }
  ~OnlySdpaBackend() {
    auto& c = at::globalContext();
    c.setSDPUseFlash(saved_[0]);
    c.setSDPUseMemEfficient(saved_[1]);
    c.setSDPUseMath(saved_[2]);
    c.setSDPUseCuDNN(saved_[3]);
  }
  OnlySdpaBackend(const OnlySdpaBackend&) = delete;
  OnlySdpaBackend& operator=(const OnlySdpaBackend&) = delete;

 private:
  std::array<bool, 4> saved_;
};

// The forward as training runs it: inputs require grad, so the backends also
// write the LSE their backward needs, as our forward always does.
void dense_forward(const DenseInputs& d) {
  at::scaled_dot_product_attention(d.q, d.k_expanded, d.v_expanded, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                   /*is_causal=*/true);
}
// autograd::grad returns the gradients instead of adding them into .grad, so
// no accumulation kernels are timed (do_bench's grad_to_none does the same).
void dense_forward_backward(const DenseInputs& d) {
  Tensor out = at::scaled_dot_product_attention(d.q, d.k_expanded, d.v_expanded, {}, 0.0, true);
  torch::autograd::grad({out}, {d.q, d.k_expanded, d.v_expanded}, {d.dout});
}
#endif

// ---------------------------------------------------------------- results

struct DenseResult {
  SdpaBackend backend;
  double fwd_ms = kNaN, fwd_bwd_ms = kNaN;
  std::string error;  // empty when timed
};

struct FlexResult {
  bool found = false;
  bool same_inputs = false, same_selection = false;
  double fwd_ms = kNaN, fwd_bwd_ms = kNaN;
  json raw;  // flex_bench.py's entry as written
};

struct StatsResult {
  StatsMaps maps = StatsMaps::none;
  double ms = kNaN;
  double mean_selected_mass = kNaN;
};

struct SelectionResult {
  SelectionSpec spec{};
  int64_t selection_checksum = 0;
  SelectionSize size;
  ForwardCheck check;
  double select_ms = kNaN, fwd_ms = kNaN, fwd_bwd_ms = kNaN;
  double index_ms = kNaN, bwd_ms = kNaN;  // stages of fwd+bwd
  double dual_ms = kNaN;                   // cuDNN dense fwd+bwd + our fwd+bwd, timed as one op
  double dual_streams_ms = kNaN;           // the same with ours on a second CUDA stream (overlapped)
  double fused_fwd_ms = kNaN;              // our fused dual-stream forward (full + sparse outputs, one pass)
  double split_fwd_ms = kNaN;              // what it replaces: cuDNN dense fwd + our sparse fwd, as one op
  double fused_sparse_diff = kNaN;         // max |fused sparse O - sparse_fwd O| (same selection)
  double fused_fwd_bwd_ms = kNaN;          // our fused dual-stream forward + backward
  FlexResult flex;
  std::vector<StatsResult> stats;
};

struct ShapeResult {
  ShapeSpec shape{};
  std::vector<int64_t> input_checksums;  // q, k, v, dO
  std::vector<DenseResult> dense;
  std::vector<SelectionResult> selections;

  const DenseResult* dense_of(SdpaBackend b) const {
    for (const auto& d : dense)
      if (d.backend == b && d.error.empty()) return &d;
    return nullptr;
  }
  int64_t dense_pairs() const { return int64_t(kBatch) * shape.Hq * int64_t(shape.T) * (shape.T + 1) / 2; }
};

// ---------------------------------------------------------------- FlexAttention numbers

// flex_bench.py's JSON, its entries keyed by "shape/config".
struct FlexFile {
  json meta;
  std::map<std::string, json> entries;
};

FlexFile read_flex(const std::string& path) {
  FlexFile f;
  if (path.empty()) return f;
  std::ifstream in(path);
  if (!in) {
    std::printf("warning: --flex %s cannot be read; FlexAttention columns stay empty\n", path.c_str());
    return f;
  }
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::exception& e) {
    std::printf("warning: --flex %s is not valid JSON (%s); FlexAttention columns stay empty\n", path.c_str(),
                e.what());
    return f;
  }
  for (const auto& entry : doc.value("rows", json::array()))
    f.entries[entry.value("shape", "") + "/" + entry.value("config", "")] = entry;
  doc.erase("rows");
  f.meta = doc;
  return f;
}

FlexResult merge_flex(const FlexFile& file, const ShapeResult& shape, const SelectionResult& sel) {
  FlexResult r;
  auto it = file.entries.find(std::string(shape.shape.name) + "/" + sel.spec.label());
  if (it == file.entries.end()) return r;
  r.found = true;
  r.raw = it->second;
  r.fwd_ms = number_or_nan(r.raw, "fwd_ms");
  r.fwd_bwd_ms = number_or_nan(r.raw, "fwd_bwd_ms");
  r.same_inputs = r.raw.value("input_checksums", json::array()) == json(shape.input_checksums);
  r.same_selection = r.raw.value("selection_checksum", int64_t(-1)) == sel.selection_checksum;
  return r;
}

// ---------------------------------------------------------------- one shape

void print_line(const std::string& shape, const std::string& what, const std::string& cfg, double fwd_ms,
                double fwd_bwd_ms, const std::string& note = "") {
  auto ms = [](double x) { return finite(x) ? strf("%9.3f", x) : std::string("        -"); };
  std::printf("%-2s %-12s %-9s fwd %s ms | fwd+bwd %s ms  %s\n", shape.c_str(), what.c_str(), cfg.c_str(),
              ms(fwd_ms).c_str(), ms(fwd_bwd_ms).c_str(), note.c_str());
  std::fflush(stdout);
}

DenseResult time_dense(const DenseInputs& d, SdpaBackend backend, GpuTimer& timer) {
  DenseResult r;
  r.backend = backend;
#if SSALAB_HAS_SDPA
  try {
    OnlySdpaBackend only(backend);
    r.fwd_ms = timer.median_ms([&] { dense_forward(d); });
    r.fwd_bwd_ms = timer.median_ms([&] { dense_forward_backward(d); });
  } catch (const std::exception& e) {
    std::string msg = e.what();
    r.error = msg.substr(0, msg.find('\n'));  // LibTorch appends a long backtrace
    r.fwd_ms = r.fwd_bwd_ms = kNaN;
  }
#else
  (void)d;
  (void)timer;
  r.error = "dense SDPA needs LibTorch 2.x";
#endif
  return r;
}

ShapeResult run_shape(const ShapeSpec& spec, GpuTimer& timer, const FlexFile& flex) {
  ShapeResult r;
  r.shape = spec;
  Inputs in = make_inputs(spec);
  r.input_checksums = {bits_checksum(in.q), bits_checksum(in.k), bits_checksum(in.v), bits_checksum(in.dout)};

  DenseInputs dense_in = make_dense_inputs(in);
  for (SdpaBackend b : {SdpaBackend::cudnn, SdpaBackend::flash}) {
    r.dense.push_back(time_dense(dense_in, b, timer));
    const DenseResult& d = r.dense.back();
    print_line(spec.name, std::string("sdpa-") + backend_name(b), "dense", d.fwd_ms, d.fwd_bwd_ms, d.error);
  }

  for (const SelectionSpec& sel : kSelections) {
    SelectionResult s;
    s.spec = sel;
    const std::string cfg = sel.label();
    SparseKernels ours(in, sel);
    ours.select();
    ours.forward();
    sync();
    s.selection_checksum = selection_checksum(ours.blocks);
    s.size = measure_selection(in, ours);
    s.check = check_forward(in, ours);

    s.select_ms = timer.median_ms([&] { ours.select(); });
    s.fwd_ms = timer.median_ms([&] { ours.forward(); });
    s.fwd_bwd_ms = timer.median_ms([&] { ours.forward_backward(); });
    s.index_ms = timer.median_ms([&] { ours.build_index(); });
    s.bwd_ms = timer.median_ms([&] { ours.backward(); });
    print_line(spec.name, "select", cfg, s.select_ms, kNaN);
    print_line(spec.name, "sparse", cfg, s.fwd_ms, s.fwd_bwd_ms,
               strf("density %.4f, %.0f / %.0f TF/s, fwd K/V %.2f GB at %.2f TB/s, index %.3f + bwd %.3f ms, "
                    "check max|O - ref| %.2g max|LSE - ref| %.2g",
                    s.size.density, tflops(4, s.size.pairs, spec.D, s.fwd_ms),
                    tflops(14, s.size.pairs, spec.D, s.fwd_bwd_ms), s.size.fwd_kv_bytes / 1e9,
                    s.size.fwd_kv_bytes / (s.fwd_ms * 1e-3) / 1e12, s.index_ms, s.bwd_ms, s.check.max_err_output,
                    s.check.max_err_lse));

#if SSALAB_HAS_SDPA
    if (const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn)) {
      OnlySdpaBackend only(SdpaBackend::cudnn);
      s.dual_ms = timer.median_ms([&] {
        dense_forward_backward(dense_in);
        ours.forward_backward();
      });
      print_line(spec.name, "dual", cfg, kNaN, s.dual_ms,
                 strf("cuDNN dense + ours, fwd+bwd = %.3fx cuDNN dense", s.dual_ms / cudnn->fwd_bwd_ms));
      TwoStreams two;
      s.dual_streams_ms = timer.median_ms([&] {
        two.run([&] { ours.forward_backward(); }, [&] { dense_forward_backward(dense_in); });
      });
      print_line(spec.name, "dual-2str", cfg, kNaN, s.dual_streams_ms,
                 strf("ours on a second stream, fwd+bwd = %.3fx cuDNN dense", s.dual_streams_ms / cudnn->fwd_bwd_ms));
      s.split_fwd_ms = timer.median_ms([&] {
        dense_forward(dense_in);
        ours.forward();
      });
    }
#endif
    s.fused_fwd_ms = timer.median_ms([&] { ours.dual_forward(); });
    s.fused_fwd_bwd_ms = timer.median_ms([&] { ours.dual_forward_backward(); });
    ours.forward();
    sync();
    s.fused_sparse_diff =
        (ours.o_sparse.to(torch::kFloat) - ours.o.to(torch::kFloat)).abs().max().item<double>();
    print_line(spec.name, "dual-fused", cfg, s.fused_fwd_ms, s.fused_fwd_bwd_ms,
               strf("one pass, full + sparse outputs; cuDNN dense fwd + our sparse fwd %.3f ms; "
                    "max |sparse O - sparse_fwd O| %.2g",
                    s.split_fwd_ms, s.fused_sparse_diff));

    if (std::string(spec.name) == kStatsShape && &sel == &kSelections[0]) {
      StatsKernel stats(in, ours);
      for (StatsMaps maps : {StatsMaps::none, StatsMaps::full, StatsMaps::all}) {
        StatsResult st;
        st.maps = maps;
        st.ms = timer.median_ms([&] { stats.run(maps); }, kStatsBudgetMs);
        sync();
        st.mean_selected_mass = stats.mean_selected_mass();
        s.stats.push_back(st);
        print_line(spec.name, "stats", stats_maps_label(maps), st.ms, kNaN,
                   strf("mean selected mass %.4f", st.mean_selected_mass));
      }
    }

    s.flex = merge_flex(flex, r, s);
    r.selections.push_back(std::move(s));
  }
  return r;
}

// ---------------------------------------------------------------- output

// Precision as in the README table: 0.208, 38.71, 187.1.
std::string fmt_ms(double ms) {
  if (!finite(ms)) return "-";
  if (ms < 10) return strf("%.3f", ms);
  if (ms < 100) return strf("%.2f", ms);
  return strf("%.1f", ms);
}

void print_tables(const std::vector<ShapeResult>& results, bool have_flex) {
  bool flex_mismatch = false;
  std::printf("\n| shape | config | select | sparse fwd | sparse fwd+bwd | TF/s fwd / fwd+bwd | fwd K/V GB (TB/s) "
              "| FlexAttention fwd / fwd+bwd | dual fwd+bwd (x cuDNN) |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& r : results) {
    const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
    for (const auto& s : r.selections) {
      std::string flex = "-";
      if (s.flex.found) {
        flex = fmt_ms(s.flex.fwd_ms) + " / " + fmt_ms(s.flex.fwd_bwd_ms);
        if (!s.flex.same_selection || !s.flex.same_inputs) {
          flex += " *";
          flex_mismatch = true;
        }
      }
      std::string dual = "-";
      if (finite(s.dual_ms) && cudnn)
        dual = strf("%s (%.2fx)", fmt_ms(s.dual_ms).c_str(), s.dual_ms / cudnn->fwd_bwd_ms);
      if (finite(s.dual_streams_ms) && cudnn)
        dual += strf("; 2 streams %s (%.2fx)", fmt_ms(s.dual_streams_ms).c_str(), s.dual_streams_ms / cudnn->fwd_bwd_ms);
      std::printf("| %s | %s | %s | %s | %s | %.0f / %.0f | %.2f (%.1f) | %s | %s |\n", r.shape.name,
                  s.spec.label().c_str(), fmt_ms(s.select_ms).c_str(), fmt_ms(s.fwd_ms).c_str(),
                  fmt_ms(s.fwd_bwd_ms).c_str(), tflops(4, s.size.pairs, r.shape.D, s.fwd_ms),
                  tflops(14, s.size.pairs, r.shape.D, s.fwd_bwd_ms), s.size.fwd_kv_bytes / 1e9,
                  s.size.fwd_kv_bytes / (s.fwd_ms * 1e-3) / 1e12, flex.c_str(), dual.c_str());
    }
  }
  if (!have_flex) std::printf("\nFlexAttention: no --flex file given.\n");
  if (flex_mismatch)
    std::printf("\n* FlexAttention ran on other inputs or another selection than this program (checksums differ).\n");

  std::printf("\n| shape | dense causal SDPA | fwd | fwd+bwd | TF/s fwd / fwd+bwd |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  for (const auto& r : results)
    for (const auto& d : r.dense) {
      if (!d.error.empty()) {
        std::printf("| %s | %s | - | - | %s |\n", r.shape.name, backend_name(d.backend), d.error.c_str());
        continue;
      }
      std::printf("| %s | %s | %s | %s | %.0f / %.0f |\n", r.shape.name, backend_name(d.backend),
                  fmt_ms(d.fwd_ms).c_str(), fmt_ms(d.fwd_bwd_ms).c_str(),
                  tflops(4, r.dense_pairs(), r.shape.D, d.fwd_ms),
                  tflops(14, r.dense_pairs(), r.shape.D, d.fwd_bwd_ms));
    }

  std::printf("\n| shape | config | select | fwd | transposed index | bwd (dQ + dK/dV) | density "
              "| check max abs err O / LSE |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& r : results)
    for (const auto& s : r.selections)
      std::printf("| %s | %s | %s | %s | %s | %s | %.4f | %.2g / %.2g |\n", r.shape.name, s.spec.label().c_str(),
                  fmt_ms(s.select_ms).c_str(), fmt_ms(s.fwd_ms).c_str(), fmt_ms(s.index_ms).c_str(),
                  fmt_ms(s.bwd_ms).c_str(), s.size.density, s.check.max_err_output, s.check.max_err_lse);

  bool header = false;
  for (const auto& r : results) {
    const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
    for (const auto& s : r.selections)
      for (const auto& st : s.stats) {
        if (!header) {
          std::printf("\n| shape | selection | statistics | ms | x cuDNN dense fwd | mean selected mass |\n");
          std::printf("| --- | --- | --- | --- | --- | --- |\n");
          header = true;
        }
        std::printf("| %s | %s | %s | %s | %s | %.4f |\n", r.shape.name, s.spec.label().c_str(),
                    st.maps == StatsMaps::none
                        ? "no map"
                        : strf("%s (rows pooled by %d, per head)", stats_maps_label(st.maps).c_str(), kStatsMapRowPool)
                              .c_str(),
                    fmt_ms(st.ms).c_str(), cudnn ? strf("%.2fx", st.ms / cudnn->fwd_ms).c_str() : "-",
                    st.mean_selected_mass);
      }
  }
  std::printf("\n| shape | config | fused dual fwd | cuDNN dense fwd + our sparse fwd | fused dual fwd+bwd | "
              "cuDNN dense + our sparse fwd+bwd | fused x cuDNN dense fwd / fwd+bwd | max abs diff of the sparse outputs |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& r : results) {
    const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
    for (const auto& s : r.selections)
      std::printf("| %s | %s | %s | %s | %s | %s | %s | %.2g |\n", r.shape.name, s.spec.label().c_str(),
                  fmt_ms(s.fused_fwd_ms).c_str(), fmt_ms(s.split_fwd_ms).c_str(), fmt_ms(s.fused_fwd_bwd_ms).c_str(),
                  fmt_ms(s.dual_ms).c_str(),
                  cudnn ? strf("%.2fx / %.2fx", s.fused_fwd_ms / cudnn->fwd_ms, s.fused_fwd_bwd_ms / cudnn->fwd_bwd_ms).c_str()
                        : "-",
                  s.fused_sparse_diff);
  }
  std::printf("\nAll times in ms (medians, L2 flushed). TF/s count attended pairs only (fwd 4*pairs*D, fwd+bwd "
              "14*pairs*D). \"fwd K/V GB\": K and V bytes our forward reads for this selection.\n");
}

json to_json(const ShapeResult& r) {
  json shape = {{"name", r.shape.name}, {"batch", kBatch},      {"Hq", r.shape.Hq},
                {"Hkv", r.shape.Hkv},   {"D", r.shape.D},       {"T", r.shape.T},
                {"seed", r.shape.seed}, {"dtype", "bf16"},      {"input_checksums", r.input_checksums}};
  for (const auto& d : r.dense) {
    json j = {{"fwd_ms", number_or_null(d.fwd_ms)}, {"fwd_bwd_ms", number_or_null(d.fwd_bwd_ms)}};
    if (d.error.empty()) {
      j["fwd_tflops"] = tflops(4, r.dense_pairs(), r.shape.D, d.fwd_ms);
      j["fwd_bwd_tflops"] = tflops(14, r.dense_pairs(), r.shape.D, d.fwd_bwd_ms);
    } else {
      j["error"] = d.error;
    }
    shape["dense_sdpa"][backend_name(d.backend)] = j;
  }
  const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
  shape["selections"] = json::array();
  for (const auto& s : r.selections) {
    json j = {{"config", s.spec.label()},
              {"block_size", s.spec.block_size},
              {"top_k", s.spec.top_k},
              {"selection_checksum", s.selection_checksum},
              {"pairs", s.size.pairs},
              {"density", s.size.density},
              {"fwd_kv_bytes", s.size.fwd_kv_bytes},
              {"check", {{"rows", s.check.rows},
                         {"max_abs_err_output", s.check.max_err_output},
                         {"max_abs_err_lse", s.check.max_err_lse}}},
              {"select_ms", s.select_ms},
              {"fwd_ms", s.fwd_ms},
              {"fwd_bwd_ms", s.fwd_bwd_ms},
              {"index_ms", s.index_ms},
              {"bwd_ms", s.bwd_ms},
              {"fwd_tflops", tflops(4, s.size.pairs, r.shape.D, s.fwd_ms)},
              {"fwd_bwd_tflops", tflops(14, s.size.pairs, r.shape.D, s.fwd_bwd_ms)},
              {"fwd_kv_tb_per_s", s.size.fwd_kv_bytes / (s.fwd_ms * 1e-3) / 1e12}};
    if (finite(s.dual_ms) && cudnn)
      j["dual"] = {{"fwd_bwd_ms", s.dual_ms},
                   {"sum_of_parts_ms", cudnn->fwd_bwd_ms + s.fwd_bwd_ms},
                   {"x_cudnn_dense", s.dual_ms / cudnn->fwd_bwd_ms},
                   {"two_streams_ms", s.dual_streams_ms},
                   {"two_streams_x_cudnn_dense", s.dual_streams_ms / cudnn->fwd_bwd_ms}};
    j["fused_dual_fwd"] = {{"ms", s.fused_fwd_ms},
                           {"fwd_bwd_ms", s.fused_fwd_bwd_ms},
                           {"fwd_bwd_x_cudnn_dense", cudnn ? json(s.fused_fwd_bwd_ms / cudnn->fwd_bwd_ms) : json()},
                           {"cudnn_dense_fwd_plus_sparse_fwd_ms", finite(s.split_fwd_ms) ? json(s.split_fwd_ms) : json()},
                           {"x_cudnn_dense_fwd", cudnn ? json(s.fused_fwd_ms / cudnn->fwd_ms) : json()},
                           {"max_abs_diff_sparse_output", s.fused_sparse_diff}};
    if (s.flex.found) {
      j["flex"] = s.flex.raw;
      j["flex"]["same_inputs"] = s.flex.same_inputs;
      j["flex"]["same_selection"] = s.flex.same_selection;
    }
    for (const auto& st : s.stats) {
      json map = st.maps == StatsMaps::none ? json()
                 : json{{"row_pool", kStatsMapRowPool}, {"per_head", true},
                        {"sparse_and_dropped", st.maps == StatsMaps::all}};
      j["stats"].push_back(json{{"map", map},
                                {"ms", st.ms},
                                {"x_cudnn_dense_fwd", cudnn ? json(st.ms / cudnn->fwd_ms) : json()},
                                {"mean_selected_mass", st.mean_selected_mass}});
    }
    shape["selections"].push_back(j);
  }
  return shape;
}

// ---------------------------------------------------------------- command line

struct Options {
  std::vector<const ShapeSpec*> shapes;
  std::string json_path = "kernel_bench.json";
  std::string flex_path;
  int reps = 0;  // 0: do_bench's time budget
};

const char* kUsage =
    "usage: ssalab_kernel_bench [--shapes A,B,C,D] [--json PATH] [--flex PATH] [--reps N]\n"
    "  --shapes  subset of A (16/1 d64 8K), B (32/2 d64 8K), C (32/2 d64 32K), D (16/1 d128 32K)\n"
    "  --json    where to write every number (default kernel_bench.json)\n"
    "  --flex    JSON from kernels/bench/flex_bench.py, merged into the table\n"
    "  --reps    fixed repetitions per measurement (default: a 200 ms budget, at least 5)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  std::string shapes = "A,B,C,D";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--shapes") shapes = value();
    else if (arg == "--json") o.json_path = value();
    else if (arg == "--flex") o.flex_path = value();
    else if (arg == "--reps") o.reps = std::stoi(value());
    else if (arg == "-h" || arg == "--help") { std::fputs(kUsage, stdout); std::exit(0); }
    else throw std::invalid_argument("unknown argument " + arg);
  }
  size_t start = 0;
  while (start <= shapes.size()) {
    size_t end = std::min(shapes.find(',', start), shapes.size());
    const std::string name = shapes.substr(start, end - start);
    auto it = std::find_if(std::begin(kShapes), std::end(kShapes), [&](const ShapeSpec& s) { return name == s.name; });
    if (it == std::end(kShapes)) throw std::invalid_argument("unknown shape '" + name + "'");
    o.shapes.push_back(&*it);
    start = end + 1;
  }
  return o;
}

std::string now() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", std::localtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Options opts;
  try {
    opts = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n%s", e.what(), kUsage);
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "ssalab_kernel_bench: no CUDA device\n");
    return 2;
  }
  try {
    int device = 0;
    cudaDeviceProp prop{};
    cuda_ok(cudaGetDevice(&device), "cudaGetDevice");
    cuda_ok(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const std::string date = now();
    std::printf("# %s (L2 %d MB)  LibTorch %s  %s  bf16, batch %d; medians, L2 flushed (%lld MB)%s\n", prop.name,
                prop.l2CacheSize >> 20, TORCH_VERSION, date.c_str(), kBatch, (long long)(kL2FlushBytes >> 20),
                opts.reps > 0 ? strf(", %d reps", opts.reps).c_str() : "");
    const FlexFile flex = read_flex(opts.flex_path);
    GpuTimer timer(opts.reps);
    std::vector<ShapeResult> results;
    for (const ShapeSpec* s : opts.shapes) results.push_back(run_shape(*s, timer, flex));
    print_tables(results, !opts.flex_path.empty());

    json report = {{"device", prop.name},
                   {"libtorch", TORCH_VERSION},
                   {"date", date},
                   {"timing", {{"method", "triton.testing.do_bench: median of reps, each after zeroing the L2 flush "
                                          "buffer, CUDA events around the op only"},
                               {"warmup_ms", kWarmupMs},
                               {"budget_ms", kBudgetMs},
                               {"stats_budget_ms", kStatsBudgetMs},
                               {"min_reps", kMinReps},
                               {"fixed_reps", opts.reps},
                               {"l2_flush_bytes", kL2FlushBytes}}},
                   {"flex_file", opts.flex_path},
                   {"flex_run", flex.meta},
                   {"shapes", json::array()}};
    for (const auto& r : results) report["shapes"].push_back(to_json(r));
    std::ofstream out(opts.json_path);
    out << report.dump(1) << "\n";
    if (!out) throw std::runtime_error("cannot write " + opts.json_path);
    std::printf("wrote %s\n", opts.json_path.c_str());
  } catch (const CheckFailure& e) {
    std::printf("CHECK FAILED: %s\nno timings reported\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
  return 0;
}
