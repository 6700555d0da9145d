#include "engine/distributed/gradient_sync.h"

#include "engine/util/error.h"

namespace ssalab::distributed {

namespace {

// Parameter `like`'s place in a bucket's flat buffer.
torch::Tensor slot(const torch::Tensor& flat, int64_t offset, const torch::Tensor& like) {
  return flat.narrow(0, offset, like.numel()).view(like.sizes());
}

}  // namespace

GradientSync::GradientSync(std::vector<torch::Tensor> params, std::shared_ptr<ProcessGroup> group,
                           size_t bucket_bytes)
    : params_(std::move(params)), group_(std::move(group)) {
  if (!group_) throw Error("gradient sync: no process group");
  const size_t n = params_.size();
  bucket_of_.resize(n);
  slot_of_.resize(n);
  arrived_.assign(n, 0);
  // reverse order: the backward pass completes the last layers' gradients first
  size_t bytes = 0;
  for (size_t k = n; k-- > 0;) {
    const torch::Tensor& p = params_[k];
    const bool fits = !buckets_.empty() && bytes + p.nbytes() <= bucket_bytes &&
                      params_[buckets_.back().members.front()].scalar_type() == p.scalar_type() &&
                      params_[buckets_.back().members.front()].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = b.members.size();
    b.offsets.push_back(b.members.empty() ? 0 : b.offsets.back() + params_[b.members.back()].numel());
    b.members.push_back(k);
    bytes += p.nbytes();
  }
  for (Bucket& b : buckets_) {
    const torch::Tensor& last = params_[b.members.back()];
    b.flat = torch::zeros({b.offsets.back() + last.numel()}, last.options());
  }
  for (size_t k = 0; k < n; ++k)
    hooks_.push_back(params_[k].register_hook([this, k](const torch::Tensor& grad) { on_gradient(k, grad); }));
}

GradientSync::~GradientSync() {
  for (size_t k = 0; k < hooks_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

void GradientSync::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
  next_to_start_ = 0;
  overlapped_ = 0;
  std::fill(arrived_.begin(), arrived_.end(), 0);
  for (Bucket& b : buckets_) {
    b.complete = 0;
    b.pending.reset();
  }
}

void GradientSync::on_gradient(size_t k, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || arrived_[k]) return;
  Bucket& b = buckets_[bucket_of_[k]];
  // the hook sees this pass's gradient before it is added to .grad, which
  // holds the earlier micro-batches' part
  torch::Tensor dst = slot(b.flat, b.offsets[slot_of_[k]], params_[k]);
  dst.copy_(grad);
  if (params_[k].grad().defined()) dst.add_(params_[k].grad());
  arrived_[k] = 1;
  ++b.complete;
  start_complete_buckets();
}

void GradientSync::start(Bucket& b) { b.pending = group_->start_sum(b.flat); }

void GradientSync::start_complete_buckets() {
  while (next_to_start_ < buckets_.size() &&
         buckets_[next_to_start_].complete == buckets_[next_to_start_].members.size()) {
    start(buckets_[next_to_start_++]);
    ++overlapped_;
  }
}

void GradientSync::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) throw Error("gradient sync: finish() without arm()");
  armed_ = false;
  for (; next_to_start_ < buckets_.size(); ++next_to_start_) {
    Bucket& b = buckets_[next_to_start_];
    for (size_t s = 0; s < b.members.size(); ++s) {
      const size_t k = b.members[s];
      if (arrived_[k]) continue;
      torch::Tensor dst = slot(b.flat, b.offsets[s], params_[k]);
      if (params_[k].grad().defined()) dst.copy_(params_[k].grad());
      else dst.zero_();
    }
    start(b);
  }
  for (Bucket& b : buckets_) b.pending->wait();
  torch::NoGradGuard no_grad;
  for (Bucket& b : buckets_)
    for (size_t s = 0; s < b.members.size(); ++s) {
      torch::Tensor& p = params_[b.members[s]];
      torch::Tensor sum = slot(b.flat, b.offsets[s], p);
      if (p.grad().defined()) p.mutable_grad().copy_(sum);
      else if (arrived_[b.members[s]]) p.mutable_grad() = sum.clone();
    }
}

}  // namespace ssalab::distributed
