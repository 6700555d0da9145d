// ZeRO stage 1 (optimizer-state sharding) for AdamW: each rank keeps the two
// moments of its own share of the parameters and updates only those; the
// updated weights then go from each owner to every rank. AdamW's moments are
// twice the weights, so with N ranks each holds 2/N of that instead of all.
//
// Checkpoints stay as with one process: before one is written the moments
// are gathered on rank 0, which saves them whole and then lets the others
// go, so a run resumes on any number of processes, sharded or not.
#pragma once
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "engine/distributed/process_group.h"

namespace ssalab::distributed {

class OptimizerShard {
 public:
  // Shares out `params` (the optimizer's, in its order) by size, the same way
  // on every rank.
  OptimizerShard(std::vector<torch::Tensor> params, std::shared_ptr<ProcessGroup> group);

  int owner(size_t param) const { return owner_[param]; }
  // Before optimizer.step(): forgets the gradients of the parameters other
  // ranks own, so that AdamW (which skips a parameter without one) neither
  // updates them nor keeps moments for them.
  void keep_own_gradients();
  // After it: every parameter from its owner. Collective.
  void share_updated_parameters();
  // Collective: rank 0's optimizer receives every parameter's moments (to save them).
  void gather_state(torch::optim::AdamW& opt);
  // Forgets the moments of the parameters this rank does not own (after a
  // checkpoint was gathered and written, or loaded whole).
  void drop_foreign_state(torch::optim::Optimizer& opt);
  // Bytes of AdamW moments this rank holds, and what all of them would be.
  std::pair<int64_t, int64_t> state_bytes(const torch::optim::Optimizer& opt) const;

 private:
  std::vector<torch::Tensor> params_;
  std::shared_ptr<ProcessGroup> group_;
  std::vector<int> owner_;
};

}  // namespace ssalab::distributed
