// The app's analysis at scale (issue "The app on a GPU workstation", part 2):
// the steps the app runs for one text on a model in the released layout with
// random weights, timed end to end as the session runs them:
//   first analysis: one forward under full inference capturing every layer's
//     q and k, the selection, the statistics and block-pooled maps of every
//     layer and head, and the token losses of both streams (the session's
//     request: engine/session/session.cpp run_analysis);
//   k change / block-size change: selection and statistics again on the kept
//     q and k (reanalyze), what the views wait for when a slider moves; then
//     the sparse stream's token losses, which the session publishes after;
// and the peak memory of the whole run (the CUDA caching allocator's peak
// allocated bytes on a GPU; VmHWM on the CPU).
//
//   ssalab_analysis_bench [--device cuda|cpu] [--preset 1b] [--tokens 8192,32768] [--repeats 2]
//
// CUDA: bf16 weights (the analysis runs selection and statistics on the
// kernels for inputs over 1024 tokens); CPU: fp32. Median of --repeats runs
// of each step after one untimed warm-up of the first analysis.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#ifdef SSALAB_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "bench/bench_args.h"
#include "engine/checkpoint/random_checkpoint.h"
#include "engine/metrics/analysis.h"
#include "engine/metrics/analysis_kernels.h"
#include "engine/model/transformer.h"

using namespace ssalab;
using ssalab::bench::int_list;

namespace {

uint64_t peak_rss_bytes() {  // VmHWM of this process
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

void synchronize(const torch::Device& d) {
#ifdef SSALAB_WITH_CUDA
  if (d.is_cuda()) torch::cuda::synchronize();
#else
  (void)d;
#endif
}

template <class F>
double median_seconds(int repeats, const torch::Device& d, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    synchronize(d);
    auto t0 = std::chrono::steady_clock::now();
    f();
    synchronize(d);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = torch::cuda::is_available() ? "cuda" : "cpu", preset = "1b";
  std::vector<int> lengths = {8192, 32768};
  int repeats = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--device") device_name = next();
    else if (a == "--preset") preset = next();
    else if (a == "--tokens") lengths = int_list(next());
    else if (a == "--repeats") repeats = std::max(1, std::stoi(next()));
    else return std::fprintf(stderr, "unknown argument %s\n", a.c_str()), 2;
  }
  const torch::Device device(device_name);
  const torch::ScalarType dtype = device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  ModelConfig c = released_layout_config(preset);
  auto t0 = std::chrono::steady_clock::now();
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().device(device).dtype(dtype);
  Transformer model(c, [&](const std::string& name, const std::vector<int64_t>& shape) {
    return name.find("norm") != std::string::npos ? torch::ones(shape, opts) : torch::randn(shape, opts) * 0.02;
  });
  model.eval();
  synchronize(device);
  const double made_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const SparseSpec own = model_sparse_spec(c);
  std::printf("# ssalab_analysis_bench: %s (released layout, %d layers, %d q / %d kv heads, d%d), random weights, "
              "%s on %s; made in %.1f s; seconds, median of %d\n\n",
              preset.c_str(), c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim,
              dtype == torch::kBFloat16 ? "bf16" : "fp32", device.str().c_str(), made_s, repeats);
  std::printf("| tokens | first analysis | k %d -> %d | block %d -> %d | then the sparse token losses | peak memory GB "
              "| selection on | k / block change measured from |\n|---|---|---|---|---|---|---|---|\n",
              own.top_k, own.top_k / 2, own.block_size, own.block_size * 2);
  struct Breakdown {
    int T;
    double forward_s, stats_s, kernels_s, sparse_forward_s;
  };
  std::vector<Breakdown> breakdown;
  for (int T : lengths) {
    std::mt19937 rng(1);
    AnalysisRequest req;
    for (int i = 0; i < T; ++i) req.tokens.push_back(int(rng() % uint32_t(c.vocab_size)));
    req.inference = AttnMode::Full;
    req.spec = own;
    req.token_losses = true;
#ifdef SSALAB_WITH_CUDA
    if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
    Analysis first = analyze(model, req);  // warm-up (and the analysis the slider steps start from)
    const double first_s = median_seconds(repeats, device, [&] { first = analyze(model, req); });
    // a slider change: the views get selection and statistics first, the
    // sparse stream's token losses follow (engine/session/session.cpp)
    AnalysisRequest k_change = req;
    k_change.token_losses = false;
    k_change.spec.top_k = std::max(1, own.top_k / 2);
    Analysis k_again, bs_again;
    const double k_s = median_seconds(repeats, device, [&] { k_again = reanalyze(model, first, k_change); });
    AnalysisRequest bs_change = k_change;
    bs_change.spec = {own.block_size * 2, std::max(1, own.top_k / 2), own.rule};
    const double bs_s = median_seconds(repeats, device, [&] { bs_again = reanalyze(model, first, bs_change); });
    // whether a change reused the full rows (LSE, entropy, full map) or measured them afresh
    auto how = [](const Analysis& a) { return a.layers[0].from_kept_rows ? "kept rows" : "afresh"; };
    const double losses_s = median_seconds(
        repeats, device, [&] { stream_token_nll(model, req.tokens, AttnMode::Sparse, k_change.spec); });
    double peak_gb = peak_rss_bytes() / 1e9;
#ifdef SSALAB_WITH_CUDA
    if (device.is_cuda())
      peak_gb = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index())
                    .allocated_bytes[0]
                    .peak /
                1e9;  // [0]: StatType::AGGREGATE
#endif
    std::printf("| %d | %.3f | %.3f | %.3f | %.3f | %.2f | %s | %s / %s |\n", T, first_s, k_s, bs_s, losses_s, peak_gb,
                first.layers[0].by_kernels ? "the CUDA kernels" : "LibTorch ops", how(k_again), how(bs_again));
    std::fflush(stdout);
    // where the first analysis's time goes: the same steps analyze() takes, one by one
    torch::NoGradGuard no_grad;
    torch::Tensor ids = torch::tensor(std::vector<int64_t>(req.tokens.begin(), req.tokens.end()), torch::kLong)
                            .view({1, T})
                            .to(device);
    ForwardOptions capture;
    capture.mode = AttnMode::Full;
    capture.spec = own;
    capture.capture = true;
    ForwardOutput out;
    const double fwd_s = median_seconds(repeats, device, [&] { out = model.forward(ids, capture); });
    const double stats_s = median_seconds(repeats, device, [&] { analyze_qk(out.q, out.k, req); });
    ForwardOptions sparse;
    sparse.mode = AttnMode::Sparse;
    sparse.spec = own;
    const double sparse_s = median_seconds(repeats, device, [&] { model.forward(ids, sparse); });
    // the GPU kernels' part of the statistics (selection, the stats kernel,
    // the maps pooled to cells), without the copies of rows and selections
    // to the host that analyze_qk adds
    double kernels_s = 0;
    if (device.is_cuda()) {
      kernels_s = median_seconds(repeats, device, [&] {
        for (size_t l = 0; l < out.q.size(); ++l) {
          KernelLayerRows rows;
          analyze_layer_kernels(out.q[l], out.k[l], own, first.cell_size, rows);
        }
      });
    }
    breakdown.push_back({T, fwd_s, stats_s, kernels_s, sparse_s});
  }
  std::printf("\n| tokens | forward keeping q, k | selection + statistics + maps (all layers) | of which the GPU "
              "kernels alone | sparse forward (token losses) |\n|---|---|---|---|---|\n");
  for (const Breakdown& b : breakdown)
    std::printf("| %d | %.3f | %.3f | %.3f | %.3f |\n", b.T, b.forward_s, b.stats_s, b.kernels_s, b.sparse_forward_s);
  return 0;
}
