// The GUI's session API under concurrency: commands from several threads,
// readers that poll snapshots while training runs, settings that cannot run.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "engine/session/session.h"
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
