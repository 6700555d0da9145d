// The GUI's session API under concurrency: commands from several threads,
// readers that poll snapshots while training runs, settings that cannot run.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "engine/checkpoint/checkpoint.h"
#include "engine/session/session.h"
#include "engine/train/run.h"
#include "engine/util/files.h"
#include "test_helpers.h"

using namespace ssalab;

static SessionOptions micro_session(const std::string& dir) {
  SessionOptions o;
  o.model = test::micro_model();
  o.train = test::micro_train(1000);
  o.corpus = test::small_corpus();
  o.work_dir = dir;
  o.probe_tokens = 96;
  o.analyze_every = 3;
  return o;
}

TEST_CASE("session trains on a worker thread while readers poll snapshots", "[session]") {
  std::string dir = test::scratch_dir("session");
  Session s(micro_session(dir));
  s.wait_idle();
  auto first = s.snapshot();
  REQUIRE(first->error.empty());
  REQUIRE(first->analysis);  // the probe is analysed before training starts
  REQUIRE(first->analysis->T == 96);

  std::atomic<bool> done{false};
  std::atomic<int64_t> reads{0};
  std::atomic<bool> monotonic{true};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r)
    readers.emplace_back([&] {
      int64_t last = 0;
      while (!done) {
        auto snap = s.snapshot();
        if (snap->version < last) monotonic = false;
        last = snap->version;
        if (snap->analysis && snap->analysis->layers.size() != 2) monotonic = false;
        ++reads;
      }
    });

  s.start();
  while (s.snapshot()->step < 5) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // settings from another thread reach the running training at a step boundary
  std::thread([&] { s.set_top_k(2); }).join();
  s.set_block_size(16);
  s.wait_idle();
  auto snap = s.snapshot();
  REQUIRE(snap->spec.top_k == 2);
  REQUIRE(snap->spec.block_size == 16);
  REQUIRE(snap->model.block_counts == 2);  // the training picked it up
  REQUIRE(snap->analysis->spec.top_k == 2);
  REQUIRE(snap->spec_problem.empty());

  // an impossible setting is refused with the reason and changes nothing
  s.set_top_k(50);
  s.wait_idle();
  snap = s.snapshot();
  REQUIRE_THAT(snap->spec_problem, Catch::Contains("exceeds"));
  REQUIRE(snap->spec.top_k == 2);

  s.pause();
  s.wait_idle();
  int64_t paused_at = s.snapshot()->step;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  REQUIRE(s.snapshot()->step == paused_at);
  REQUIRE(s.snapshot()->state == RunState::Paused);
  s.set_inference(AttnMode::Sparse);
  s.wait_idle();
  REQUIRE(s.snapshot()->analysis->inference == AttnMode::Sparse);

  s.resume();
  while (s.snapshot()->step < paused_at + 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  s.save(dir + "/saved");
  s.stop();
  s.wait_idle();
  done = true;
  for (auto& t : readers) t.join();
  snap = s.snapshot();
  REQUIRE(snap->state == RunState::Done);
  REQUIRE(monotonic);
  REQUIRE(reads > 100);
  REQUIRE(int64_t(snap->history.size()) == snap->step);
  REQUIRE(snap->error.empty());

  // load: the saved checkpoint comes back with its step
  s.load(dir + "/saved");
  s.wait_idle();
  snap = s.snapshot();
  REQUIRE(snap->error.empty());
  REQUIRE(snap->step >= paused_at + 3);
  // a missing checkpoint is an error in the snapshot, and the session keeps working
  s.load(dir + "/nope");
  s.set_probe_text("def f(x):\n    return x * 2\n# a short probe for the analysis view, long enough for a few blocks of tokens");
  s.wait_idle();
  snap = s.snapshot();
  REQUIRE_THAT(snap->error, Catch::Contains("nope"));
  REQUIRE(snap->analysis);
  REQUIRE(snap->probe_pieces.size() == size_t(snap->analysis->T));
}

TEST_CASE("attach: the session follows a run another thread trains, without touching it", "[session][attach]") {
  const std::string dir = test::scratch_dir("attach");
  const std::string run_dir = dir + "/run";
  RunOptions ro = test::micro_run(run_dir, 60);
  ro.train.save_every = 15;
  ro.on_step = [](const MetricPoint&) { std::this_thread::sleep_for(std::chrono::milliseconds(40)); };
  prepare_data(ro.corpus, ro.model.vocab_size, ro.cache_dir);  // the tokenizer cached before the clock starts
  make_dirs(run_dir);  // a run folder that has nothing in it yet

  SessionOptions so = micro_session(dir + "/session");
  so.attach = run_dir;
  SECTION("not a run's folder") {
    so.attach = dir;
    Session s(so);
    s.wait_idle();
    CHECK_THAT(s.snapshot()->error, Catch::Contains("not a training run's folder"));
  }
  SECTION("following a run") {
    RunResult result;
    std::thread trainer([&] { result = run_training(ro); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // run_config.json written
    Session s(so);
    std::set<size_t> history_sizes;
    std::set<int64_t> checkpoint_steps;
    std::set<int64_t> analysed_at;
    const auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<const Snapshot> snap;
    for (;;) {
      snap = s.snapshot();
      history_sizes.insert(snap->history.size());
      if (snap->attached_checkpoint_step >= 0) checkpoint_steps.insert(snap->attached_checkpoint_step);
      if (snap->analysis) analysed_at.insert(snap->attached_checkpoint_step);
      if (snap->attached_checkpoint_step == 60 && snap->history.size() == 60 && snap->analysis) break;
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(120)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    trainer.join();
    INFO(snap->status << " / " << snap->error << " / " << snap->attach_problem);
    CHECK(snap->attached_run == run_dir);
    CHECK(snap->total_steps == 60);
    CHECK(history_sizes.size() >= 10);  // the curves grew while the run trained
    CHECK(checkpoint_steps.size() >= 3);  // checkpoints of 15, 30, 45, 60 opened as they appeared
    CHECK(analysed_at.size() >= 3);
    REQUIRE(snap->history.size() == 60);
    for (size_t i = 0; i < 60; ++i) CHECK(snap->history[i].loss == result.history[i].loss);
    REQUIRE(snap->analysis);
    CHECK(snap->analysis->T == 96);
    CHECK_FALSE(snap->trainable);
    // it wrote nothing into the run's folder
    std::set<std::string> files;
    for (auto& e : std::filesystem::directory_iterator(run_dir)) files.insert(e.path().filename().string());
    CHECK(files == std::set<std::string>{"checkpoint", "metrics.jsonl", "run_config.json"});
    // training here waits for a detach
    s.start();
    s.wait_idle();
    CHECK_THAT(s.snapshot()->error, Catch::Contains("detach"));
    s.detach();
    s.wait_idle();
    CHECK(s.snapshot()->attached_run.empty());
  }
}

TEST_CASE("a k or block-size change re-runs only selection and statistics on the kept q and k", "[session]") {
  std::string dir = test::scratch_dir("session-reanalyze");
  Session s(micro_session(dir));
  s.wait_idle();
  REQUIRE(s.snapshot()->analysis);
  CHECK_FALSE(s.snapshot()->analysis->qk_reused);
  s.set_top_k(2);
  s.wait_idle();
  auto a = s.snapshot()->analysis;
  INFO(s.snapshot()->error);
  REQUIRE(a);
  CHECK(a->spec.top_k == 2);
  CHECK(a->qk_reused);
  CHECK(a->seconds > 0);
  // published first without them, the sparse stream's token losses follow
  CHECK(a->nll_sparse.size() + 1 == size_t(a->T));
  CHECK(a->nll_sparse.size() == a->nll_full.size());
  s.set_block_size(16);  // the micro model's is 8
  s.wait_idle();
  CHECK(s.snapshot()->analysis->spec.block_size == 16);
  CHECK(s.snapshot()->analysis->qk_reused);
  // under sparse inference the selection shapes the layers' inputs: a new forward
  s.set_inference(AttnMode::Sparse);
  s.wait_idle();
  CHECK_FALSE(s.snapshot()->analysis->qk_reused);
  s.set_top_k(3);
  s.wait_idle();
  CHECK(s.snapshot()->analysis->spec.top_k == 3);
  CHECK_FALSE(s.snapshot()->analysis->qk_reused);
  // back to full inference: q and k are captured again before any reuse
  s.set_inference(AttnMode::Full);
  s.wait_idle();
  CHECK_FALSE(s.snapshot()->analysis->qk_reused);
  s.set_top_k(4);
  s.wait_idle();
  CHECK(s.snapshot()->analysis->qk_reused);
}

TEST_CASE("the session generates a token per worker turn, pausing training, as the engine would", "[session][generate]") {
  std::string dir = test::scratch_dir("session-gen");
  Session s(micro_session(dir));
  s.wait_idle();
  s.start();
  while (s.snapshot()->step < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  GenerationRequest r;
  r.prompt = "def f(x):\n    return";
  r.mode = AttnMode::Sparse;
  r.max_new_tokens = 8;
  s.set_top_k(2);
  s.generate(r);
  s.wait_idle();
  auto snap = s.snapshot();
  REQUIRE(snap->generation);
  const GenerationState& g = *snap->generation;
  INFO(snap->error);
  CHECK_FALSE(g.running);
  CHECK(snap->state == RunState::Paused);  // training paused for it
  CHECK((g.stop_reason == "max tokens" || g.stop_reason == "stop token"));
  REQUIRE(!g.new_ids.empty());
  CHECK(g.new_pieces.size() == g.new_ids.size());
  CHECK(g.spec.top_k == 2);
  REQUIRE(g.trace);
  CHECK(g.trace->position == int64_t(g.prompt_ids.size() + g.new_ids.size()) - 2);

  // the same tokens from the engine, on the weights it generated with
  s.save(dir + "/saved");
  s.wait_idle();
  LoadedCheckpoint ck = load_checkpoint(dir + "/saved");
  GenerateOptions o;
  o.mode = AttnMode::Sparse;
  o.spec = g.spec;
  o.max_new_tokens = 8;
  o.stop_tokens = {ck.tokenizer.eos_id()};
  CHECK(generate(*ck.model, {g.prompt_ids}, o).tokens[0] == g.new_ids);

  // stopped on request; a bad request is an error in the snapshot
  r.max_new_tokens = 100000;
  s.generate(r);
  s.stop_generation();
  s.wait_idle();
  CHECK(s.snapshot()->generation->stop_reason == "stopped");
  r.sampling.top_p = 0;
  s.generate(r);
  s.wait_idle();
  CHECK_THAT(s.snapshot()->error, Catch::Contains("top_p"));
  // training again stops a generation: its cache would no longer match the weights
  r.sampling.top_p = 1;
  s.generate(r);
  s.resume();
  s.wait_idle();
  s.pause();
  s.wait_idle();
  CHECK_THAT(s.snapshot()->generation->stop_reason, Catch::Contains("training changes the weights"));
}
