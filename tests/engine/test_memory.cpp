// Memory stated before work starts (engine/memory/estimate.h): the estimates
// against the peak resident size real runs reach, refusals that name the
// figures, and the limit setting.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "engine/memory/estimate.h"
#include "engine/util/error.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace ssalab;

namespace {

using test::CommandResult;
using test::run_ssalab;

// "needs about 562.4 MiB" -> 562.4
double needed_mib(const std::string& message) {
  std::smatch m;
  if (!std::regex_search(message, m, std::regex("needs about ([0-9.]+) (MiB|GiB)"))) return -1;
  return std::stod(m[1]) * (m[2] == "GiB" ? 1024.0 : 1.0);
}

// The estimate a refused run printed against how much more the same run
// with room reached: an upper bound, within 2.5x.
void check_estimate(const CommandResult& refused, const CommandResult& done) {
  INFO(done.output);
  REQUIRE(done.code == 0);
  const double estimate = needed_mib(refused.output), grew = done.peak_mib - refused.peak_mib;
  INFO("estimate " << estimate << " MiB, measured peak growth " << grew << " MiB");
  CHECK(estimate >= 0.9 * grew);
  CHECK(estimate <= 2.5 * grew);
}

}  // namespace

TEST_CASE("memory limit setting: sizes with suffixes, bad values refused", "[memory]") {
  auto with = [](const char* v) {
    setenv("SSALAB_MEMORY_LIMIT", v, 1);
    uint64_t b = memory_limit_from_env();
    unsetenv("SSALAB_MEMORY_LIMIT");
    return b;
  };
  CHECK(with("8G") == (uint64_t(8) << 30));
  CHECK(with("512MiB") == (uint64_t(512) << 20));
  CHECK(with("1.5K") == 1536);
  CHECK(with("4096") == 4096);
  for (const char* bad : {"lots", "8X", "-1G", "0", "1e30G", "8G extra"}) {
    INFO(bad);
    CHECK_THROWS_AS(with(bad), Error);
  }
  unsetenv("SSALAB_MEMORY_LIMIT");
  CHECK(memory_limit_from_env() == 0);
}

TEST_CASE("estimates grow with the work and drop the T x T terms on a GPU", "[memory]") {
  ModelConfig m = model_preset("tiny");
  TrainConfig t;
  t.batch_size = 8;
  t.seq_len = 512;
  t.method = Method::Ssa;
  const torch::Device cpu(torch::kCPU), gpu(torch::kCUDA);
  const uint64_t base = training_step_memory(m, t, cpu).bytes();
  t.seq_len = 1024;
  const uint64_t longer = training_step_memory(m, t, cpu).bytes();
  CHECK(longer > base * 2);  // the probabilities grow with T^2
  CHECK(training_step_memory(m, t, gpu).bytes() < longer / 2);
  SparseSpec spec{16, 4};
  const auto short_a = analysis_memory(m, 1024, spec, AttnMode::Full, 1024, 512, false, cpu);
  const auto long_a = analysis_memory(m, 1025, spec, AttnMode::Full, 1024, 512, false, cpu);
  CHECK(short_a.bytes() > long_a.bytes());  // token-level maps are kept only up to the limit
  CHECK(short_a.describe().find("token-level maps") != std::string::npos);
}

TEST_CASE("estimates bound the peak memory of real runs, and what will not fit is refused with the figures",
          "[memory][e2e]") {
  const std::string dir = test::scratch_dir("memory");
  const std::string common = " --corpus " + test::small_corpus() + " --cache " + test::cache_dir() +
                             " --set model.vocab_size=512 --set train.device=cpu --set train.steps=1"
                             " --set train.eval_every=0 --set train.eval_batches=1 --quiet";
  SECTION("a training step") {
    const std::string args = "train --method full --set train.batch_size=8 --set train.seq_len=512 --out " + dir + "/run" + common;
    // refused: the message names the estimate and the limit; nothing is written
    CommandResult refused = run_ssalab(args, "SSALAB_MEMORY_LIMIT=100M");
    INFO(refused.output);
    REQUIRE(refused.code != 0);
    CHECK(refused.output.find("a training step (batch 8 x 512 tokens) needs about") != std::string::npos);
    CHECK(refused.output.find("100.0 MiB is available (SSALAB_MEMORY_LIMIT)") != std::string::npos);
    CHECK(!fs::exists(dir + "/run"));
    // the same run with room: its growth over the refused process is what the estimate covers
    CommandResult done = run_ssalab(args);
    check_estimate(refused, done);
  }
  SECTION("an analysis") {
    std::string text;
    for (int i = 0; i < 150; ++i) text += "the quick brown fox jumps over the lazy dog and attention goes on. ";
    std::ofstream(dir + "/text.txt") << text;
    const std::string args = "analyze " + std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa --text-file " + dir +
                             "/text.txt --no-png --no-npy --device cpu --out " + dir + "/analysis";
    // (on the CPU: the measure is the process's resident size, which on a GPU
    // machine would count the CUDA context's host memory, not the estimate's device memory)
    CommandResult refused = run_ssalab(args, "SSALAB_MEMORY_LIMIT=40M");  // room for the model's weights, not the analysis
    INFO(refused.output);
    REQUIRE(refused.code != 0);
    CHECK(std::regex_search(refused.output, std::regex("analysing [0-9]+ tokens needs about")));
    CommandResult done = run_ssalab(args);
    check_estimate(refused, done);
  }
}
