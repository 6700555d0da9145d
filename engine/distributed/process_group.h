// The processes of one data-parallel run and what they do together, through
// LibTorch's c10d: Gloo between CPU processes, NCCL between GPUs (when the
// LibTorch at hand was built with it). One process per CPU worker or GPU.
//
// Who is who comes from the environment torchrun and SLURM's srun set up:
// RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR /
// MASTER_PORT (torchrun, `ssalab train --nproc N`), or SLURM_PROCID /
// SLURM_NTASKS / SLURM_LOCALID with MASTER_ADDR and MASTER_PORT given.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ssalab::distributed {

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The run this process belongs to, from the environment; nothing when no
// launcher set one up. Throws Error naming the variable that is wrong.
std::optional<RankInfo> rank_info_from_environment();

// Whether this build can connect CPU processes (Gloo's headers were found
// at build time; a pip PyTorch's LibTorch ships none, so its builds cannot).
bool cpu_processes_supported();

// A collective that was started and runs while the caller goes on.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // Blocks until it is done; throws Error when a process died or it timed out.
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  // Meets the other processes at master_addr:master_port (rank 0 serves the
  // rendezvous) and connects them: Gloo for the CPU, NCCL for CUDA. Throws
  // Error when they do not all arrive within `timeout`, which also bounds
  // every collective afterwards (a dead process ends the run, not a hang).
  static std::shared_ptr<ProcessGroup> connect(const RankInfo& who, torch::Device device,
                                               std::chrono::milliseconds timeout);

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;
  // Sums `t` over the ranks, in place. The same calls in the same order on
  // every rank.
  virtual std::unique_ptr<PendingCollective> start_sum(torch::Tensor t) = 0;
  void sum(torch::Tensor t) { start_sum(std::move(t))->wait(); }
  // Rank `root`'s values of `t` on every rank, in place.
  virtual void broadcast(torch::Tensor t, int root) = 0;
  virtual void barrier() = 0;
};

}  // namespace ssalab::distributed
