// Data parallelism's one exchange: after each rank's backward pass, every
// parameter's gradient summed over the ranks. The sums start while the
// backward pass of the step's last micro-batch is still running: parameters
// are grouped into buckets (the last layers first, in the order their
// gradients complete), and a bucket is summed as soon as all of its
// gradients are complete, so communication overlaps the rest of the pass.
// Buckets start strictly in order, so every rank issues the same collectives
// in the same order.
#pragma once
#include <memory>
#include <mutex>
#include <vector>

#include <torch/torch.h>

#include "engine/distributed/process_group.h"

namespace ssalab::distributed {

class GradientSync {
 public:
  // Default bucket size: small enough that a few buckets overlap the pass of
  // the tiny models, large enough that each sum is not dominated by latency.
  static constexpr size_t kBucketBytes = 4 << 20;

  GradientSync(std::vector<torch::Tensor> params, std::shared_ptr<ProcessGroup> group,
               size_t bucket_bytes = kBucketBytes);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Before the backward pass of the step's last micro-batch: from now on a
  // parameter's gradient, once complete, goes to its bucket.
  void arm();
  // After that pass: sums the buckets the pass did not complete (a parameter
  // without a gradient counts as zeros), waits for all of them and writes the
  // sums into the gradients. Throws Error when another rank died or timed out.
  void finish();

  size_t bucket_count() const { return buckets_.size(); }
  // Buckets whose sum started during the backward pass at the last finish().
  size_t overlapped_buckets() const { return overlapped_; }

 private:
  struct Bucket {
    torch::Tensor flat;             // the bucket's gradients, end to end
    std::vector<size_t> members;    // indices into params_
    std::vector<int64_t> offsets;   // where each member starts in flat
    size_t complete = 0;            // members whose gradient arrived this step
    std::unique_ptr<PendingCollective> pending;
  };
  void on_gradient(size_t param, const torch::Tensor& grad);
  void start_complete_buckets();  // in order, under mutex_
  void start(Bucket& b);

  std::vector<torch::Tensor> params_;
  std::shared_ptr<ProcessGroup> group_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, slot_of_;  // per parameter
  std::vector<char> arrived_;                // per parameter, this step
  std::vector<unsigned> hooks_;
  std::mutex mutex_;
  bool armed_ = false;
  size_t next_to_start_ = 0;
  size_t overlapped_ = 0;
};

}  // namespace ssalab::distributed
