// Training throughput benchmark: tokens/s of the same model under the three
// methods (FullAttn, MoBA, SSA), measured in one run on one machine, plus the
// ssa/full ratio and the process's peak resident memory.
//
//   build/ssalab_bench [preset] [steps] [seq_len] [batch] [methods] [--layers N] [--count-ops | --phases]
//   (default: tiny 20 256 8 full,moba,ssa)
// One method alone (e.g. `ssa`) is for profilers: its kernels without the others'.
// --layers N keeps the preset's layer shape and stacks N of them: `1b ... --layers 4`
// times the 1B model's layers at 32K without the optimizer state of all 16.
// --count-ops counts the ATen operators of one step per method instead of
// timing (op_counter.h): the host work of a launch-bound step.
// --phases times each phase of the step (forward, backward, optimizer) as the
// host's time to queue it and then the GPU's time to finish what was queued
// (a sync at each phase's end): a step bound by launches shows GPU waits near
// zero.
// Uses synthetic token ids: the model's speed does not depend on the text.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/op_counter.h"
#include "engine/model/transformer.h"
#include "engine/train/trainer.h"

using namespace ssalab;

// One step per method under the operator counter: each method's counts, then
// the compute operators whose count differs from FullAttn's (when it ran).
static int print_op_counts(std::vector<std::unique_ptr<Trainer>>& trainers) {
  bench::OpCounter counter;
  std::vector<bench::OpCounts> counts;
  for (auto& t : trainers) {
    counter.take();
    t->step();
    if (t->device().is_cuda()) torch::cuda::synchronize();
    counts.push_back(counter.take());
  }
  std::printf("%-8s %10s %10s %10s %10s   (ATen operators in one step, op_counter.h)\n", "method", "top level",
              "compute", "backward", "GPU reads");
  const bench::OpCounts* full = nullptr;
  for (size_t i = 0; i < trainers.size(); ++i) {
    const bench::OpCounts& c = counts[i];
    std::printf("%-8s %10ld %10ld %10ld %10ld\n", to_string(trainers[i]->train_config().method), c.top_level,
                c.compute, c.backward, c.reads);
    if (trainers[i]->train_config().method == Method::Full) full = &c;
  }
  for (size_t i = 0; full && i < trainers.size(); ++i) {
    if (&counts[i] == full) continue;
    std::map<std::string, long> diff = counts[i].compute_by_name;
    for (auto& [name, n] : full->compute_by_name) diff[name] -= n;
    std::vector<std::pair<long, std::string>> rows;
    for (auto& [name, d] : diff)
      if (d != 0) rows.push_back({d, name});
    std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::printf("\ncompute operators of %s minus full's:\n", to_string(trainers[i]->train_config().method));
    for (auto& [d, name] : rows) std::printf("  %+6ld  %s\n", d, name.c_str());
  }
  return 0;
}

// `steps` steps per method with a sync at the end of each phase: per phase,
// the host's time to queue it and the GPU's time to finish it after that.
static int print_phase_times(std::vector<std::unique_ptr<Trainer>>& trainers, int steps) {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("%-8s %-10s %14s %14s   (ms a step, mean of %d steps; a sync ends each phase)\n", "method", "phase",
              "host queues", "GPU finishes", steps);
  for (auto& t : trainers) {
    const bool cuda = t->device().is_cuda();
    std::map<std::string, std::pair<double, double>> sums;  // phase -> (host, GPU)
    std::vector<std::string> order;
    Clock::time_point last;
    t->on_phase = [&](const char* phase) {
      const auto queued = Clock::now();
      if (cuda) torch::cuda::synchronize();
      const auto done = Clock::now();
      if (!sums.count(phase)) order.push_back(phase);
      sums[phase].first += ms(queued - last);
      sums[phase].second += ms(done - queued);
      last = done;
    };
    for (int s = 0; s < steps; ++s) {
      if (cuda) torch::cuda::synchronize();
      last = Clock::now();
      t->step();
    }
    t->on_phase = nullptr;
    double host = 0, gpu = 0;
    for (const std::string& phase : order) {
      const auto [h, g] = sums[phase];
      std::printf("%-8s %-10s %14.2f %14.2f\n", to_string(t->train_config().method), phase.c_str(), h / steps, g / steps);
      host += h, gpu += g;
    }
    std::printf("%-8s %-10s %14.2f %14.2f\n", to_string(t->train_config().method), "step", host / steps, gpu / steps);
  }
  return 0;
}

int main(int argc, char** argv) {
  int layers = 0;  // 0: the preset's own count
  bool count_ops = false, phases = false;
  std::vector<char*> positional{argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (std::string(argv[i]) == "--count-ops") count_ops = true;
    else if (std::string(argv[i]) == "--phases") phases = true;
    else positional.push_back(argv[i]);
  }
  argc = int(positional.size());
  argv = positional.data();
  std::string preset = argc > 1 ? argv[1] : "tiny";
  int steps = argc > 2 ? std::atoi(argv[2]) : 20;
  ModelConfig mc = model_preset(preset);
  if (layers != 0) {
    if (layers < 1) {
      std::fprintf(stderr, "ssalab_bench: --layers must be at least 1\n");
      return 2;
    }
    mc.num_layers = layers;
  }
  TrainConfig tc;
  tc.seq_len = argc > 3 ? std::atoi(argv[3]) : std::min(mc.max_position, 256);
  tc.batch_size = argc > 4 ? std::atoi(argv[4]) : 8;
  tc.eval_every = 0;
  auto data = std::make_shared<TokenData>();
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) data->train.push_back(int32_t(rng() % mc.vocab_size));
  data->val = data->train;

  std::printf("ssalab_bench: preset %s, %d layers (%.2fM params), batch %d x seq %d, k %d x block %d, %d timed steps, device %s, %d threads\n",
              preset.c_str(), mc.num_layers, mc.num_parameters() / 1e6, tc.batch_size, tc.seq_len, mc.block_counts, mc.block_size,
              steps, resolve_device(tc.device).str().c_str(), torch::get_num_threads());
  // Methods take turns over several rounds and each reports its median, so a
  // burst of load from elsewhere on the machine does not favour one of them.
  const int rounds = 3;
  std::vector<std::unique_ptr<Trainer>> trainers;
  std::vector<Method> methods;
  std::string listed = argc > 5 ? argv[5] : "full,moba,ssa";
  for (size_t at = 0; at <= listed.size();) {
    const size_t comma = std::min(listed.find(',', at), listed.size());
    methods.push_back(method_from_string(listed.substr(at, comma - at)));
    at = comma + 1;
  }
  for (Method m : methods) {
    tc.method = m;
    tc.steps = 3 + rounds * steps;
    trainers.push_back(std::make_unique<Trainer>(std::make_shared<Transformer>(mc), tc, data));
    for (int i = 0; i < 3; ++i) trainers.back()->step();  // warm-up: allocator, kernels
  }
  if (count_ops) return print_op_counts(trainers);
  if (phases) return print_phase_times(trainers, steps);
  std::vector<std::vector<double>> tps(trainers.size());
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < trainers.size(); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      for (int s = 0; s < steps; ++s) trainers[i]->step();
      if (trainers[i]->device().is_cuda()) torch::cuda::synchronize();
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      tps[i].push_back(double(steps) * tc.batch_size * tc.seq_len / secs);
    }
  std::printf("%-8s %12s %12s %12s\n", "method", "tokens/s", "ms/step", "time vs full");
  double full_tps = 0;  // 0: FullAttn not run, no ratio
  for (size_t i = 0; i < trainers.size(); ++i) {
    std::sort(tps[i].begin(), tps[i].end());
    if (trainers[i]->train_config().method == Method::Full) full_tps = tps[i][rounds / 2];
  }
  for (size_t i = 0; i < trainers.size(); ++i) {
    double med = tps[i][rounds / 2];
    std::printf("%-8s %12.0f %12.2f %11.2fx\n", to_string(trainers[i]->train_config().method), med,
                1000.0 * tc.batch_size * tc.seq_len / med, full_tps > 0 ? full_tps / med : 0.0);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  std::printf("peak resident memory: %.1f MiB\n", ru.ru_maxrss / 1024.0);
  std::printf("(time vs full: step time relative to FullAttn, median of %d rounds; the ssa row is the ssa/full cost ratio)\n", rounds);
  return 0;
}
