// The app's background work — loading a checkpoint, analysing a second model,
// tokenising a long text — runs here: a few worker threads below the UI's
// priority (engine/util/priority.h), fed from one queue. submit() returns a
// std::future the UI polls and never waits on. Unlike std::async's futures,
// these do not block in their destructor, so a result nobody wants any more
// (a new load started while one runs) is just dropped when it finishes.
// The Session's training worker is the one other engine thread: it lives as
// long as the session and owns the model it trains.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ssalab {

class BackgroundWorkers {
 public:
  explicit BackgroundWorkers(int threads = 2);
  ~BackgroundWorkers();  // finishes the queued work, then joins
  BackgroundWorkers(const BackgroundWorkers&) = delete;
  BackgroundWorkers& operator=(const BackgroundWorkers&) = delete;

  // Queues fn(); its result (or exception) arrives through the future.
  template <class F>
  auto submit(F fn) -> std::future<decltype(fn())> {
    using R = decltype(fn());
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(fn));
    std::future<R> result = task->get_future();
    enqueue([task] { (*task)(); });
    return result;
  }

  // Blocks until every job queued so far has finished (shutdown, tests).
  void wait_idle();
  // Jobs queued or running.
  int pending() const;

 private:
  void enqueue(std::function<void()> job);
  void work();

  mutable std::mutex mu_;
  std::condition_variable wake_, idle_;
  std::deque<std::function<void()>> queue_;
  int running_ = 0;
  bool quit_ = false;
  std::vector<std::thread> threads_;
};

// The app's one pool (created on first use).
BackgroundWorkers& background_workers();

}  // namespace ssalab
