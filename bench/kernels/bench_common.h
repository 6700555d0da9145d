// What every kernel benchmark shares: the shapes and inputs, timing as
// triton.testing.do_bench does it, checksums, and number formatting.
//
// Timing copies do_bench, which produced the earlier Python numbers, so old
// and new tables compare: run the op once, estimate its time from 5 runs, warm
// up for 25 ms, then repeat it for a 200 ms budget (at least 5 times), each
// repetition preceded by zeroing a 256 MB buffer (flushes L2) and timed alone
// with CUDA events; report the median.
//
// Inputs: per shape, seed the default generators with the shape's seed and
// draw q, k, v, dO with randn on the GPU, in that order, in bf16.
// bench/flex_bench.py draws the same tensors through the same LibTorch; both
// record exact checksums so a mismatch shows (kernels/README.md).
#pragma once
#include <cuda_runtime.h>

#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

// scaled_dot_product_attention and the per-backend switches (the cuDNN one
// since 2.3) are LibTorch 2.x API; older headers only serve a syntax check of
// the rest.  The benchmark is built against 2.11.
#define SSALAB_HAS_SDPA (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3))

namespace ssabench {

using nlohmann::json;
using torch::Tensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------- shapes and inputs

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
  bool recorded = false;  // a recorded selection replayed (--selections), not the select kernel's on random inputs
  std::string label() const {
    return "bs" + std::to_string(block_size) + " k" + std::to_string(top_k) + (recorded ? " recorded" : "");
  }
};
constexpr SelectionSpec kSelections[] = {{16, 16}, {64, 16}};

struct Inputs {
  ShapeSpec shape;
  Tensor q, k, v;  // (B, Hq | Hkv, T, D) bf16, contiguous
  Tensor dout;     // (B, Hq, T, D) fixed upstream gradient for every backward
};

inline Inputs make_inputs(const ShapeSpec& s) {
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

// ---------------------------------------------------------------- small helpers

inline std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string strf(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

inline void ok(const std::string& error) {
  if (!error.empty()) throw std::runtime_error("kernel: " + error);
}
inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
inline void sync() { cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline bool finite(double x) { return std::isfinite(x); }
inline json number_or_null(double x) { return finite(x) ? json(x) : json(nullptr); }
inline double number_or_nan(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : kNaN;
}
inline Tensor workspace(size_t bytes, const Tensor& like) {
  return torch::empty({int64_t(bytes) + 16}, like.options().dtype(torch::kUInt8));
}

// Effective TFLOP/s over attended pairs: fwd 4*pairs*D, fwd+bwd 14*pairs*D (bwd = 2.5 fwd).
inline double tflops(double flops_per_pair_dim, int64_t pairs, int D, double ms) {
  return flops_per_pair_dim * double(pairs) * D / (ms * 1e-3) / 1e12;
}

// Exact integer fingerprints of what a run saw; flex_bench.py computes the same.
inline int64_t bits_checksum(const Tensor& t) { return t.view(torch::kInt16).to(torch::kLong).sum().item<int64_t>(); }
inline int64_t selection_checksum(const Tensor& blocks) {
  Tensor flat = blocks.reshape({-1}).to(torch::kLong);
  Tensor weight = torch::arange(flat.numel(), flat.options()).remainder(65521).add(1);  // order matters too
  return flat.mul(weight).sum().item<int64_t>();
}

// A check before timing failed: the run ends with status 1 and no timings.
struct CheckFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Precision as in the README tables: 0.208, 38.71, 187.1.
inline std::string fmt_ms(double ms) {
  if (!finite(ms)) return "-";
  if (ms < 10) return strf("%.3f", ms);
  if (ms < 100) return strf("%.2f", ms);
  return strf("%.1f", ms);
}

// One line of the per-measurement log.
inline void print_line(const std::string& shape, const std::string& what, const std::string& cfg, double fwd_ms,
                       double fwd_bwd_ms, const std::string& note = "") {
  auto ms = [](double x) { return finite(x) ? strf("%9.3f", x) : std::string("        -"); };
  std::printf("%-2s %-12s %-9s fwd %s ms | fwd+bwd %s ms  %s\n", shape.c_str(), what.c_str(), cfg.c_str(),
              ms(fwd_ms).c_str(), ms(fwd_bwd_ms).c_str(), note.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------- timing

// do_bench's settings (bench.py used rep=200 ms); 256 MB is triton's flush
// size, several times an H100's 50 MB L2.
constexpr int64_t kL2FlushBytes = int64_t(256) << 20;
constexpr double kWarmupMs = 25;
constexpr double kBudgetMs = 200;
constexpr int kMinReps = 5;  // do_bench allows 1; a median of 5 is steadier for the 30-50 ms dense runs
constexpr int kMaxReps = 10000;

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

}  // namespace ssabench
