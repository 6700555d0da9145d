#include "engine/distributed/process_group.h"

#include <cstdlib>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SSALAB_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef SSALAB_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "engine/util/error.h"

namespace ssalab::distributed {

namespace {

// An integer variable of the environment: nothing when unset, an Error when
// it is not an integer in [lo, hi].
std::optional<int> env_int(const char* name, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi)
    throw Error(std::string(name) + "=" + v + " is not an integer in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "]");
  return int(x);
}

std::string env_text(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// What a failed collective means to a user: which rank, what probably
// happened, and c10d's own words.
Error collective_error(int rank, const std::string& what, const std::exception& e) {
  std::string detail = e.what();
  if (auto nl = detail.find('\n'); nl != std::string::npos) detail.resize(nl);  // c10d appends a backtrace
  return Error("rank " + std::to_string(rank) + ": " + what +
               " failed: another process of the run died, or it timed out (" + detail + ")");
}

class C10dPendingCollective : public PendingCollective {
 public:
  C10dPendingCollective(c10::intrusive_ptr<c10d::Work> work, int rank) : work_(std::move(work)), rank_(rank) {}
  void wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      throw collective_error(rank_, "summing gradients with the other processes", e);
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  int rank_;
};

// One c10d backend (ProcessGroupGloo or ProcessGroupNCCL) behind our interface;
// the type is a parameter because LibTorch 1.13 and 2.x give them different
// base classes but the same calls.
template <class Backend>
class C10dGroup : public ProcessGroup {
 public:
  C10dGroup(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Backend> pg, int rank, int size,
            const char* name)
      : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), size_(size), name_(name) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return name_; }

  std::unique_ptr<PendingCollective> start_sum(torch::Tensor t) override {
    std::vector<torch::Tensor> ts{std::move(t)};
    try {
      return std::make_unique<C10dPendingCollective>(pg_->allreduce(ts), rank_);
    } catch (const std::exception& e) {
      throw collective_error(rank_, "starting a sum with the other processes", e);
    }
  }
  void broadcast(torch::Tensor t, int root) override {
    std::vector<torch::Tensor> ts{std::move(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    try {
      pg_->broadcast(ts, o)->wait();
    } catch (const std::exception& e) {
      throw collective_error(rank_, "sharing rank " + std::to_string(root) + "'s weights", e);
    }
  }
  void barrier() override {
    try {
      pg_->barrier()->wait();
    } catch (const std::exception& e) {
      throw collective_error(rank_, "waiting for the other processes", e);
    }
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<Backend> pg_;
  int rank_, size_;
  const char* name_;
};

#ifdef SSALAB_WITH_GLOO
std::shared_ptr<::gloo::transport::Device> gloo_device(const RankInfo& who) {
  const std::string ifname = env_text("GLOO_SOCKET_IFNAME", "");
  if (!ifname.empty()) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  // all ranks on this machine: loopback needs no working hostname lookup
  if (who.world_size == who.local_world_size) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

}  // namespace

bool cpu_processes_supported() {
#ifdef SSALAB_WITH_GLOO
  return true;
#else
  return false;
#endif
}

std::optional<RankInfo> rank_info_from_environment() {
  constexpr int kMaxRanks = 1 << 16;
  RankInfo r;
  auto rank = env_int("RANK", 0, kMaxRanks - 1), world = env_int("WORLD_SIZE", 1, kMaxRanks);
  auto local = env_int("LOCAL_RANK", 0, kMaxRanks - 1), local_world = env_int("LOCAL_WORLD_SIZE", 1, kMaxRanks);
  if (!rank && !world) {  // not torchrun: perhaps srun
    rank = env_int("SLURM_PROCID", 0, kMaxRanks - 1);
    world = env_int("SLURM_NTASKS", 1, kMaxRanks);
    local = env_int("SLURM_LOCALID", 0, kMaxRanks - 1);
    local_world = env_int("SLURM_NTASKS_PER_NODE", 1, kMaxRanks);
    if (!rank || !world || !std::getenv("MASTER_ADDR")) return std::nullopt;  // srun of one process, not a run
  }
  if (!rank || !world) throw Error("RANK and WORLD_SIZE must be set together (torchrun sets both)");
  r.rank = *rank;
  r.world_size = *world;
  if (r.rank >= r.world_size)
    throw Error("RANK=" + std::to_string(r.rank) + " is not below WORLD_SIZE=" + std::to_string(r.world_size));
  r.local_rank = local.value_or(r.rank);
  r.local_world_size = local_world.value_or(r.world_size);
  r.master_addr = env_text("MASTER_ADDR", "127.0.0.1");
  r.master_port = env_int("MASTER_PORT", 1, 65535).value_or(29500);
  return r;
}

std::shared_ptr<ProcessGroup> ProcessGroup::connect(const RankInfo& who, torch::Device device,
                                                    std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = uint16_t(who.master_port);
  so.isServer = who.rank == 0;
  so.numWorkers = size_t(who.world_size);
  so.waitWorkers = true;
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  const std::string where = who.master_addr + ":" + std::to_string(who.master_port);
  try {
    store = c10::make_intrusive<c10d::TCPStore>(who.master_addr, so);
  } catch (const std::exception& e) {
    std::string detail = e.what();
    if (auto nl = detail.find('\n'); nl != std::string::npos) detail.resize(nl);
    throw Error("rank " + std::to_string(who.rank) + " of " + std::to_string(who.world_size) +
                ": could not meet the other processes at " + where + " within " +
                std::to_string(timeout.count() / 1000) + " s (" + detail + ")");
  }
  if (device.is_cuda()) {
#ifdef SSALAB_WITH_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, who.rank, who.world_size, opts);
    return std::make_shared<C10dGroup<c10d::ProcessGroupNCCL>>(store, pg, who.rank, who.world_size, "nccl");
#else
    throw Error("training on several GPUs needs a LibTorch built with NCCL; this build has none "
                "(build against the CUDA LibTorch of an installed PyTorch, as scripts/gpu_check.sh does)");
#endif
  }
#ifdef SSALAB_WITH_GLOO
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(gloo_device(who));
    opts->threads = 2;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, who.rank, who.world_size, opts);
    return std::make_shared<C10dGroup<c10d::ProcessGroupGloo>>(store, pg, who.rank, who.world_size, "gloo");
  } catch (const std::exception& e) {
    throw collective_error(who.rank, "connecting to the other processes at " + where, e);
  }
#else
  throw Error("data-parallel training on CPUs needs Gloo's headers at build time (apt install libgloo-dev), "
              "which this build did not find");
#endif
}

}  // namespace ssalab::distributed
