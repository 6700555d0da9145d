#include "engine/util/background.h"

#include <algorithm>

#include "engine/util/priority.h"

namespace ssalab {

BackgroundWorkers::BackgroundWorkers(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { work(); });
}

BackgroundWorkers::~BackgroundWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void BackgroundWorkers::enqueue(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
}

void BackgroundWorkers::work() {
  lower_this_thread_priority();  // the UI thread keeps its cores
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;  // quit, and nothing left to do
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    job();  // a packaged_task: exceptions land in its future
    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
    }
    idle_.notify_all();
  }
}

void BackgroundWorkers::wait_idle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return queue_.empty() && running_ == 0; });
}

int BackgroundWorkers::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int(queue_.size()) + running_;
}

BackgroundWorkers& background_workers() {
  // three: the Paradox view loads its three models side by side
  static BackgroundWorkers workers(3);
  return workers;
}

}  // namespace ssalab
