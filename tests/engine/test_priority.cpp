// Thread priorities the desktop app relies on to keep frames short while
// training saturates the cores (engine/util/priority.h).
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "engine/session/session.h"
#include "engine/util/priority.h"
#include "test_helpers.h"

using namespace ssalab;

#if defined(__linux__)
#include <dirent.h>

namespace {
// Nice values of all threads of this process, from /proc (field 19 of stat).
std::vector<int> thread_nice_values() {
  std::vector<int> out;
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return out;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/stat");
    std::string line((std::istreambuf_iterator<char>(f)), {});
    if (line.empty()) continue;  // the thread ended meanwhile
    std::istringstream rest(line.substr(line.rfind(')') + 2));  // fields from 3 on, after "tid (comm) "
    std::string field;
    for (int i = 3; i <= 19 && rest >> field; ++i)
      if (i == 19) out.push_back(std::stoi(field));
  }
  closedir(dir);
  return out;
}

// False (with a warning) when the test already runs at or above the
// background nice value: then there is nothing to lower and nothing to check.
bool below_background(int base) {
  if (base < kBackgroundNice) return true;
  WARN("already running at nice " << base << ": nothing to lower");
  return false;
}
}  // namespace

TEST_CASE("a thread lowers its own priority and leaves the others alone", "[priority]") {
  const int base = this_thread_nice();
  if (!below_background(base)) return;
  int inside = -100;
  std::thread t([&] {
    REQUIRE(lower_this_thread_priority() == 1);
    inside = this_thread_nice();
  });
  t.join();
  CHECK(inside == kBackgroundNice);
  CHECK(this_thread_nice() == base);
}

TEST_CASE("lower_other_threads_priority reaches threads that already run", "[priority]") {
  const int base = this_thread_nice();
  if (!below_background(base)) return;
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  int seen = -100;
  std::thread t([&] {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return go; });
    seen = this_thread_nice();
  });
  CHECK(lower_other_threads_priority() >= 1);
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
  }
  cv.notify_all();
  t.join();
  CHECK(seen == kBackgroundNice);
  CHECK(this_thread_nice() == base);
}

TEST_CASE("a session with background_priority runs its worker below the caller", "[priority][session]") {
  const int base = this_thread_nice();
  if (!below_background(base)) return;
  auto count_background = [] {
    int n = 0;
    for (int v : thread_nice_values()) n += v == kBackgroundNice;
    return n;
  };
  const int before = count_background();
  SessionOptions o;
  o.model = test::micro_model();
  o.train = test::micro_train(10);
  o.corpus = test::small_corpus();
  o.work_dir = test::scratch_dir("priority");
  o.probe_tokens = 32;
  o.background_priority = true;
  Session s(o);
  s.wait_idle();
  CHECK(s.snapshot()->error.empty());
  CHECK(count_background() > before);
  CHECK(this_thread_nice() == base);
}
#endif
