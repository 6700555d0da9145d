// Data-parallel training through c10d's Gloo process group on the CPU: two
// and three processes follow the single-process loss curve of the same
// global batch, a run resumes on another number of processes, a killed rank
// ends the run with a message on every rank and the checkpoint intact, and
// the environment a launcher sets is read strictly.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "engine/checkpoint/checkpoint.h"
#include "engine/distributed/process_group.h"
#include "engine/train/metrics_log.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "test_helpers.h"
#include "tests/test_support.h"

extern char** environ;

using namespace ssalab;
namespace fs = std::filesystem;

namespace {

// A micro model whose step's global batch is 6 micro-batches, so that 1, 2
// and 3 processes share it evenly.
std::string micro_args(const std::string& out, int steps, const std::string& method) {
  return "train --quiet --method " + method + " --out " + out + " --corpus " + test::small_corpus() + " --cache " +
         test::cache_dir() +
         " --set model.vocab_size=512 --set model.hidden_size=32 --set model.intermediate_size=64"
         " --set model.num_hidden_layers=2 --set model.block_size=8 --set model.block_counts=3"
         " --set train.seq_len=64 --set train.batch_size=2 --set train.grad_accum=6 --set train.eval_every=0"
         " --set train.device=cpu --set train.p_full=0 --set train.threads=1 --set train.steps=" +
         std::to_string(steps);
}

using test::run_ssalab;
using Finished = test::CommandResult;

std::vector<MetricPoint> curve(const std::string& run_dir) {
  MetricsLog log(run_dir + "/metrics.jsonl");
  log.poll();
  return log.points();
}

// Largest relative difference of the step losses of two curves of equal length.
double largest_difference(const std::vector<MetricPoint>& a, const std::vector<MetricPoint>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].step == b[i].step);
    worst = std::max(worst, std::abs(a[i].loss - b[i].loss) / std::abs(b[i].loss));
  }
  return worst;
}

// A command started in the background, its output in `log`.
struct Background {
  pid_t pid = -1;
  std::string log;
};
Background start_ssalab(const std::string& args, const std::string& log) {
  std::vector<std::string> words{SSALAB_BINARY};
  std::istringstream in(args);
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  Background b;
  b.log = log;
  REQUIRE(posix_spawn(&b.pid, SSALAB_BINARY, &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  return b;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t c; in >> c;) out.push_back(c);
  return out;
}

// A build without Gloo's headers (against a pip PyTorch) cannot connect CPU
// processes: the tests that need it say so and end.
bool no_gloo_here() {
  if (distributed::cpu_processes_supported()) return false;
  WARN("this build has no Gloo (Gloo's headers were not found at build time): skipped");
  return true;
}

}  // namespace

TEST_CASE("2 and 3 Gloo processes follow the single-process loss curve of the same global batch",
          "[distributed][e2e]") {
  if (no_gloo_here()) return;
  for (const std::string method : {"full", "ssa"}) {
    const std::string dir = test::scratch_dir("ddp-" + method);
    Finished one = run_ssalab(micro_args(dir + "/one", 8, method));
    INFO(one.output);
    REQUIRE(one.code == 0);
    const auto single = curve(dir + "/one");
    REQUIRE(single.size() == 8);
    for (int nproc : {2, 3}) {
      const std::string out = dir + "/p" + std::to_string(nproc);
      Finished many = run_ssalab(micro_args(out, 8, method) + " --nproc " + std::to_string(nproc));
      INFO(many.output);
      REQUIRE(many.code == 0);
      CHECK_THAT(many.output, Catch::Contains("data-parallel: " + std::to_string(nproc) + " processes"));
      // the sums overlap the backward pass: at least one bucket started before it ended
      std::smatch overlap;
      REQUIRE(std::regex_search(many.output, overlap, std::regex("in (\\d+) buckets, (\\d+) of them summed during")));
      CHECK(std::stoi(overlap[2]) >= 1);
      const double diff = largest_difference(curve(out), single);
      WARN(method << ", " << nproc << " processes: largest relative loss difference over 8 steps " << diff);
      CHECK(diff < 1e-4);
      // rank 0 alone wrote the run's files, and its checkpoint loads
      CHECK(load_checkpoint(out + "/checkpoint").state->step == 8);
    }
  }
}

TEST_CASE("ZeRO-1: each rank keeps its share of AdamW's moments; the curve and checkpoints stay whole",
          "[distributed][e2e]") {
  if (no_gloo_here()) return;
  const std::string dir = test::scratch_dir("ddp-zero");
  Finished one = run_ssalab(micro_args(dir + "/one", 8, "ssa"));
  REQUIRE(one.code == 0);
  for (int nproc : {2, 3}) {
    const std::string out = dir + "/p" + std::to_string(nproc);
    Finished many = run_ssalab(micro_args(out, 8, "ssa") + " --set train.shard_optimizer=true --nproc " +
                               std::to_string(nproc));
    INFO(many.output);
    REQUIRE(many.code == 0);
    std::smatch held;
    REQUIRE(std::regex_search(many.output, held, std::regex("rank 0 holds ([0-9.]+) of ([0-9.]+) MiB")));
    const double share = std::stod(held[1]) / std::stod(held[2]);
    WARN(nproc << " processes: rank 0 holds " << share << " of the moments");
    CHECK(share < 1.0 / nproc + 0.2);
    CHECK(largest_difference(curve(out), curve(dir + "/one")) < 1e-4);
  }
  // the checkpoint holds every parameter's moments, gathered from their owners
  LoadedCheckpoint ck = load_checkpoint(dir + "/p3/checkpoint");
  CHECK(read_file(dir + "/p3/checkpoint/optimizer.pt").size() > 0.95 * read_file(dir + "/one/checkpoint/optimizer.pt").size());
}

TEST_CASE("a data-parallel run resumes on a different number of processes", "[distributed][e2e]") {
  if (no_gloo_here()) return;
  const std::string dir = test::scratch_dir("ddp-resume");
  Finished one = run_ssalab(micro_args(dir + "/one", 8, "ssa"));
  REQUIRE(one.code == 0);
  const std::string run = dir + "/run";
  // the first half with the optimizer state sharded, the second without: the
  // checkpoint between them must hold every rank's moments
  Finished first = run_ssalab(micro_args(run, 8, "ssa") + " --nproc 2 --stop-after 4 --set train.shard_optimizer=true");
  INFO(first.output);
  REQUIRE(first.code == 0);
  CHECK(curve(run).size() == 4);
  Finished rest = run_ssalab(micro_args(run, 8, "ssa") + " --nproc 3 --resume auto");
  INFO(rest.output);
  REQUIRE(rest.code == 0);
  CHECK_THAT(rest.output, Catch::Contains("resumed from") && Catch::Contains("at step 4"));
  const double diff = largest_difference(curve(run), curve(dir + "/one"));
  WARN("2 processes to step 4, then 3 to step 8: largest relative loss difference " << diff);
  CHECK(diff < 1e-4);
}

TEST_CASE("a killed rank ends the run on every rank with a message; the checkpoint stays intact",
          "[distributed][e2e]") {
  if (no_gloo_here()) return;
  const std::string dir = test::scratch_dir("ddp-kill");
  const std::string run = dir + "/run";
  Background launcher = start_ssalab(micro_args(run, 100000, "ssa") + " --set train.save_every=2 --nproc 2",
                                     dir + "/launch.log");
  // wait until it trains and has checkpointed
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  while (curve(run).size() < 5 && clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(curve(run).size() >= 5);
  const std::vector<pid_t> ranks = children_of(launcher.pid);
  REQUIRE(ranks.size() == 2);
  REQUIRE(::kill(ranks[1], SIGKILL) == 0);

  int status = 0;
  const auto killed_at = clock::now();
  while (::waitpid(launcher.pid, &status, WNOHANG) == 0 && clock::now() - killed_at < std::chrono::seconds(90))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const double seconds = std::chrono::duration<double>(clock::now() - killed_at).count();
  const std::string out = read_file(launcher.log);
  INFO(out);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGKILL);
  CHECK_THAT(out, Catch::Contains("rank 1 (pid " + std::to_string(ranks[1]) + ") was killed by signal 9"));
  CHECK_THAT(out, Catch::Contains("rank 0: ") && Catch::Contains("another process of the run died"));
  WARN("the run ended " << seconds << " s after rank 1 was killed");
  CHECK(seconds < 30);
  // the last checkpoint rank 0 wrote loads and continues
  LoadedCheckpoint ck = load_checkpoint(run + "/checkpoint");
  CHECK(ck.state->step >= 4);
}

TEST_CASE("the launcher's environment is read strictly", "[distributed]") {
  struct Env {
    std::vector<std::string> names;
    ~Env() {
      for (auto& n : names) ::unsetenv(n.c_str());
    }
    void set(const std::string& n, const std::string& v) {
      ::setenv(n.c_str(), v.c_str(), 1);
      names.push_back(n);
    }
  } env;
  for (const char* n : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"})
    ::unsetenv(n);
  CHECK_FALSE(distributed::rank_info_from_environment());
  SECTION("torchrun") {
    env.set("RANK", "3");
    env.set("WORLD_SIZE", "8");
    env.set("LOCAL_RANK", "1");
    env.set("LOCAL_WORLD_SIZE", "2");
    env.set("MASTER_ADDR", "node0");
    env.set("MASTER_PORT", "29511");
    auto r = distributed::rank_info_from_environment();
    REQUIRE(r);
    CHECK(r->rank == 3);
    CHECK(r->world_size == 8);
    CHECK(r->local_rank == 1);
    CHECK(r->local_world_size == 2);
    CHECK(r->master_addr == "node0");
    CHECK(r->master_port == 29511);
  }
  SECTION("srun") {
    env.set("SLURM_PROCID", "5");
    env.set("SLURM_NTASKS", "16");
    env.set("SLURM_LOCALID", "1");
    CHECK_FALSE(distributed::rank_info_from_environment());  // no MASTER_ADDR: not a run of ours
    env.set("MASTER_ADDR", "node0");
    auto r = distributed::rank_info_from_environment();
    REQUIRE(r);
    CHECK(r->rank == 5);
    CHECK(r->world_size == 16);
  }
  SECTION("impossible values") {
    env.set("RANK", "2");
    CHECK_THAT(test::error_of([] { distributed::rank_info_from_environment(); }), Catch::Contains("WORLD_SIZE"));
    env.set("WORLD_SIZE", "2");
    CHECK_THAT(test::error_of([] { distributed::rank_info_from_environment(); }), Catch::Contains("not below"));
    env.set("WORLD_SIZE", "two");
    CHECK_THAT(test::error_of([] { distributed::rank_info_from_environment(); }), Catch::Contains("WORLD_SIZE=two"));
    env.set("WORLD_SIZE", "4");
    env.set("MASTER_PORT", "70000");
    CHECK_THAT(test::error_of([] { distributed::rank_info_from_environment(); }), Catch::Contains("MASTER_PORT"));
  }
}

TEST_CASE("a global batch that does not divide among the processes is refused before work starts",
          "[distributed]") {
  if (no_gloo_here()) return;
  const std::string dir = test::scratch_dir("ddp-bad");
  Finished r = run_ssalab(micro_args(dir + "/run", 4, "full") + " --nproc 4");
  CHECK(r.code != 0);
  CHECK_THAT(r.output, Catch::Contains("grad_accum 6") && Catch::Contains("4 processes"));
}
