// The engine's shared plumbing: the one training loop, the data shards of
// data-parallel batching, the one rule for sparse settings, the background
// workers, and the report of attention falling back from the CUDA kernels.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "engine/attention/attention.h"
#include "engine/model/transformer.h"
#include "engine/session/session.h"
#include "engine/train/loop.h"
#include "engine/train/run.h"
#include "engine/train/trainer.h"
#include "engine/util/background.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/npy.h"
#include "engine/util/priority.h"
#include "test_helpers.h"

using namespace ssalab;

TEST_CASE("the training loop validates, logs and checkpoints on its schedule", "[train][loop]") {
  PreparedData data = prepare_data(test::small_corpus(), 512, test::cache_dir());
  ModelConfig mc = test::micro_model();
  TrainConfig tc = test::micro_train(6);
  tc.eval_every = 4;
  tc.save_every = 3;
  auto model = std::make_shared<Transformer>(mc);
  model->init_weights(tc.seed);
  Trainer trainer(model, tc, data.tokens);
  const std::string dir = test::scratch_dir("loop");
  LoopOptions lo;
  lo.last_step = 5;  // stops early, as `--stop-after` does
  lo.metrics_path = dir + "/metrics.jsonl";
  lo.checkpoint_dir = dir + "/checkpoint";
  lo.tokenizer = &data.tokenizer;
  TrainingLoop loop(trainer, lo);
  std::vector<int64_t> validated;
  while (!loop.done()) {
    MetricPoint m = loop.advance();
    if (std::isfinite(m.val_ppl_full)) validated.push_back(m.step);
    if (m.step == 3) REQUIRE(file_exists(dir + "/checkpoint/trainer_state.json"));
  }
  REQUIRE(trainer.current_step() == 5);
  REQUIRE(loop.history().size() == 5);
  REQUIRE(validated == std::vector<int64_t>{4});
  REQUIRE(loop.checkpoint() == dir + "/checkpoint");  // saved at step 3 and at the last step
  std::ifstream log(lo.metrics_path);
  int lines = 0;
  for (std::string line; std::getline(log, line);) ++lines;
  REQUIRE(lines == 5);
  REQUIRE_THROWS_WITH(TrainingLoop(trainer, LoopOptions{-1, "", dir + "/c2", nullptr, {}}),
                      Catch::Contains("tokenizer"));
}

TEST_CASE("data shards: rank 0 of 1 draws what one process always did, ranks draw disjoint windows",
          "[train][loop]") {
  PreparedData data = prepare_data(test::small_corpus(), 512, test::cache_dir());
  ModelConfig mc = test::micro_model();
  TrainConfig tc = test::micro_train(2);
  auto model = std::make_shared<Transformer>(mc);
  REQUIRE_THROWS_WITH(Trainer(model, tc, data.tokens, DataShard{2, 2}), Catch::Contains("rank 2 of 2"));
  // the windows each rank trains on at step 0: micro-batch m of rank r is global micro-batch m * world + r
  const auto& toks = data.tokens->train;
  torch::Tensor r0 = sample_batch(toks, tc.batch_size, tc.seq_len, tc.seed, 0, 0 * 2 + 0);
  torch::Tensor r1 = sample_batch(toks, tc.batch_size, tc.seq_len, tc.seed, 0, 0 * 2 + 1);
  REQUIRE_FALSE(torch::equal(r0, r1));
  // one process is rank 0 of 1: its micro-batch 0 is the global micro-batch 0 of before
  REQUIRE(torch::equal(r0, sample_batch(toks, tc.batch_size, tc.seq_len, tc.seed, 0, 0)));
}

TEST_CASE("one rule for sparse settings: the backend, the config and the session agree", "[attention][spec]") {
  ModelConfig mc = test::micro_model();
  TrainConfig tc = test::micro_train(2);
  tc.seq_len = 64;
  mc.block_size = 8;
  // the probe rule is the backend's own supports() answer
  for (auto [bs, k, T] : {std::tuple{8, 4, 32}, {8, 5, 32}, {64, 1, 32}, {0, 1, 32}, {4, 8, 32}}) {
    SparseSpec spec{bs, k};
    torch::Tensor q = torch::zeros({1, mc.num_heads, T, mc.head_dim}), kk = torch::zeros({1, mc.num_kv_heads, T, mc.head_dim});
    INFO("bs " << bs << " k " << k << " T " << T);
    REQUIRE(attention_problem(T, T, mc.num_heads, mc.num_kv_heads, mc.head_dim, spec) ==
            reference_backend().supports(q, kk, spec));
  }
  // a setting the probe allows but training at seq_len 64 does not (k 9 > 8 blocks)
  REQUIRE(spec_problem(mc, tc, {8, 9}, 128).find("larger than the number of blocks") != std::string::npos);
  REQUIRE(spec_problem(mc, tc, {8, 8}, 128).empty());
  REQUIRE(spec_problem(mc, tc, {8, 8}, 32).find("exceeds") != std::string::npos);
}

TEST_CASE("background workers run jobs below the caller's priority and hand back results or errors",
          "[background]") {
  BackgroundWorkers workers(2);
  auto nice = workers.submit([] { return this_thread_nice(); });
  auto boom = workers.submit([]() -> int { throw Error("job failed"); });
  std::atomic<int> done{0};
  std::vector<std::future<void>> many;
  for (int i = 0; i < 20; ++i) many.push_back(workers.submit([&done] { ++done; }));
  REQUIRE(nice.get() >= this_thread_nice());
  REQUIRE_THROWS_WITH(boom.get(), Catch::Contains("job failed"));
  // a dropped future does not block: its result is discarded when the job ends
  { auto dropped = workers.submit([] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); return 1; }); }
  workers.wait_idle();
  REQUIRE(done == 20);
  REQUIRE(workers.pending() == 0);
}

TEST_CASE("attention on CPU tensors is not reported as a fallback", "[attention][fallback]") {
  torch::Tensor q = torch::randn({1, 2, 16, 8}), k = torch::randn({1, 1, 16, 8});
  const std::string before = last_fallback();
  REQUIRE(&pick_backend(q, k, {4, 2}) == &reference_backend());
  REQUIRE(last_fallback() == before);
}

TEST_CASE("on CUDA, a call the kernels cannot run falls back with the reason recorded", "[attention][fallback][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  // fp32 q/k: the kernels run bf16/fp16 only
  torch::Tensor q = torch::randn({1, 2, 64, 64}, torch::kCUDA), k = torch::randn({1, 1, 64, 64}, torch::kCUDA);
  REQUIRE(&pick_backend(q, k, {16, 2}) == &reference_backend());
  REQUIRE_FALSE(last_fallback().empty());
}

TEST_CASE(".npy files round trip with numpy's header layout", "[npy]") {
  const std::string dir = test::scratch_dir("npy");
  std::vector<float> f = {1.5f, -2.f, 3.25f, 0.f, 7.f, 8.f};
  write_npy(dir + "/f.npy", f.data(), {2, 3});
  std::vector<int64_t> shape;
  std::string descr;
  std::vector<char> raw = read_npy(dir + "/f.npy", &shape, &descr);
  REQUIRE(descr == "<f4");
  REQUIRE(shape == std::vector<int64_t>{2, 3});
  REQUIRE(std::memcmp(raw.data(), f.data(), raw.size()) == 0);
  std::string bytes = read_file(dir + "/f.npy");
  REQUIRE(bytes.substr(0, 6) == "\x93NUMPY");
  REQUIRE((bytes.size() - raw.size()) % 64 == 0);  // header padded to 64 bytes, as numpy writes it
  REQUIRE(bytes.find("'shape': (2, 3), }") != std::string::npos);
  std::vector<int32_t> one = {42};
  write_npy(dir + "/i.npy", one.data(), {1});
  read_npy(dir + "/i.npy", &shape, &descr);
  REQUIRE(read_file(dir + "/i.npy").find("'shape': (1,), }") != std::string::npos);
  REQUIRE(descr == "<i4");
  write_file_atomic(dir + "/bad.npy", "not numpy");
  REQUIRE_THROWS_WITH(read_npy(dir + "/bad.npy", &shape, &descr), Catch::Contains("not a .npy"));
}
