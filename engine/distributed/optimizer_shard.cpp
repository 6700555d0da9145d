#include "engine/distributed/optimizer_shard.h"

#include <algorithm>
#include <sstream>
#include <type_traits>

namespace ssalab::distributed {

namespace {

// The optimizer's key for a parameter's state: its TensorImpl, as a string in
// LibTorch 1.x and as the pointer itself in 2.x (a template, so that only
// the branch of the LibTorch at hand is compiled).
template <class Optimizer>
auto state_key(const Optimizer& opt, const torch::Tensor& p) {
  using Key = typename std::decay_t<decltype(opt.state())>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;  // as LibTorch 1.x writes it (c10::guts::to_string, gone in 2.x)
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

}  // namespace

OptimizerShard::OptimizerShard(std::vector<torch::Tensor> params, std::shared_ptr<ProcessGroup> group)
    : params_(std::move(params)), group_(std::move(group)) {
  // largest first, each to the rank holding the least so far: balanced, and
  // the same on every rank (ties go to the lower rank)
  std::vector<size_t> order(params_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params_[a].numel() > params_[b].numel(); });
  std::vector<int64_t> load(size_t(group_->size()), 0);
  owner_.assign(params_.size(), 0);
  for (size_t i : order) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner_[i] = r;
    load[size_t(r)] += params_[i].numel();
  }
}

void OptimizerShard::keep_own_gradients() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (owner_[i] != group_->rank()) params_[i].mutable_grad() = torch::Tensor();
}

void OptimizerShard::share_updated_parameters() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) group_->broadcast(params_[i], owner_[i]);
}

void OptimizerShard::gather_state(torch::optim::AdamW& opt) {
  torch::NoGradGuard no_grad;
  const int me = group_->rank();
  for (size_t i = 0; i < params_.size(); ++i) {
    const int from = owner_[i];
    if (from == 0) continue;  // rank 0 has it
    if (me != 0 && me != from) {
      // a bystander of this broadcast still takes part in it
      auto header = torch::zeros({2}, torch::kLong);
      group_->broadcast(header, from);
      if (header[0].item<int64_t>()) {
        auto scratch = torch::empty_like(params_[i]);
        group_->broadcast(scratch, from);
        group_->broadcast(scratch, from);
      }
      continue;
    }
    const auto key = state_key(opt, params_[i]);
    auto* mine = me == from && opt.state().count(key)
                     ? static_cast<torch::optim::AdamWParamState*>(opt.state().at(key).get())
                     : nullptr;
    // whether the owner has moments yet (a parameter that never had a gradient has none), and its step count
    auto header = torch::tensor({int64_t(mine != nullptr), mine ? mine->step() : int64_t(0)}, torch::kLong);
    group_->broadcast(header, from);
    if (!header[0].item<int64_t>()) continue;
    torch::Tensor avg = mine ? mine->exp_avg() : torch::empty_like(params_[i]);
    torch::Tensor avg_sq = mine ? mine->exp_avg_sq() : torch::empty_like(params_[i]);
    group_->broadcast(avg, from);
    group_->broadcast(avg_sq, from);
    if (me == 0) {
      auto st = std::make_unique<torch::optim::AdamWParamState>();
      st->step(header[1].item<int64_t>());
      st->exp_avg(avg);
      st->exp_avg_sq(avg_sq);
      opt.state()[key] = std::move(st);
    }
  }
}

void OptimizerShard::drop_foreign_state(torch::optim::Optimizer& opt) {
  for (size_t i = 0; i < params_.size(); ++i)
    if (owner_[i] != group_->rank()) opt.state().erase(state_key(opt, params_[i]));
}

std::pair<int64_t, int64_t> OptimizerShard::state_bytes(const torch::optim::Optimizer& opt) const {
  int64_t held = 0, all = 0;
  for (const torch::Tensor& p : params_) {
    all += 2 * p.nbytes();
    if (opt.state().count(state_key(opt, p))) held += 2 * p.nbytes();
  }
  return {held, all};
}

}  // namespace ssalab::distributed
