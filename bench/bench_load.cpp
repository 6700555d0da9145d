// Load and inference cost of a model in the released checkpoints' layout
// (issue 10, "Numbers to report"): how long a 1B bf16 model takes to plan and
// load, how much memory the process and the GPU hold at their peak, and how
// long scoring a 2K-token text takes under full and under sparse attention.
//
//   ssalab_load_bench --make DIR [--preset 1b|300m|tiny] [--dtype bf16|fp16|fp32] [--seed N]
//       writes a random-weight checkpoint in the released layout
//       (engine/checkpoint/random_checkpoint.h); 1b is about 2.5 GB in bf16
//   ssalab_load_bench MODEL [--device cpu|cuda] [--tokens 2048] [--threads N] [--loads 2]
//                     [--compute-dtype fp32|bf16|fp16] [--drop-caches] [--no-eval]
//                     [--score-only] [--json OUT]
//       MODEL: a checkpoint folder, an HF model folder or a hub id in the local cache
//
// The model is loaded `--loads` times (default 2), each one released before
// the next: the first after --drop-caches reads the weights from disk
// (cold), the later ones from the page cache (warm). Each row says how much
// of the weight files sat in the page cache just before (mincore), so the
// table says itself which load was cold. The last load is then evaluated on
// `--tokens` random token ids (seed 1), one window, every token after the
// first scored: a timed full-attention pass, a timed sparse pass at the
// model's own spec (model_sparse_spec), each forward + log_softmax + gather
// as engine/eval's score_tokens does it, and then score_tokens itself (both
// passes, the engine's path behind `ssalab eval --per-token`), whose
// perplexities must agree with the timed passes. --score-only runs only
// score_tokens. Peak memory per phase is VmHWM from /proc/self/status,
// reset before each phase (clear_refs 5); ru_maxrss is the whole process's.
// On CUDA (builds with SSALAB_WITH_CUDA): the caching allocator's peak
// allocated and reserved bytes per phase, and the device's used memory.
//
// Exit codes: 0 ok, 1 a runtime error (message on stderr), 2 bad arguments,
// 3 a non-finite NLL.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#ifdef SSALAB_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_checkpoint.h"
#include "engine/eval/eval.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"

using namespace ssalab;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const char* kUsage =
    "usage:\n"
    "  ssalab_load_bench --make DIR [--preset 1b|300m|tiny] [--dtype bf16|fp16|fp32] [--seed N]\n"
    "  ssalab_load_bench MODEL [--device cpu|cuda] [--tokens 2048] [--threads N] [--loads 2]\n"
    "                    [--compute-dtype fp32|bf16|fp16] [--drop-caches] [--no-eval] [--score-only]\n"
    "                    [--json OUT]\n"
    "MODEL: a checkpoint folder, an HF model folder or a hub id in the local HF cache.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Decimal units, as df and the issue report them.
std::string gb(double bytes) {
  char buf[32];
  if (bytes >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else
    std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  return buf;
}

// ---------------------------------------------------------------- the machine and the process

// A "Key:   value kB" line of /proc/self/status, in bytes (0 when absent).
uint64_t proc_status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
      return std::strtoull(line.c_str() + n + 1, nullptr, 10) * 1024;
  return 0;
}
uint64_t vm_hwm() { return proc_status_kb("VmHWM"); }
uint64_t vm_rss() { return proc_status_kb("VmRSS"); }
uint64_t ru_maxrss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024;  // KiB on Linux
}
// Resets VmHWM to the current RSS (Linux >= 4.0), so the next reading is the
// peak of one phase. False when the kernel refused.
bool reset_hwm() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return bool(out);
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown CPU";
}

// The 1, 5 and 15 minute load averages: how busy the machine was (other work included).
std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return in ? a + " " + b + " " + c : std::string("unknown");
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

// Share of a file's pages in the page cache (mincore on a fresh mapping,
// which touches nothing). -1 when it cannot be told.
double cached_fraction(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size == 0) {
    ::close(fd);
    return -1;
  }
  void* p = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return -1;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size_t(st.st_size) + page - 1) / page);
  double frac = -1;
  if (::mincore(p, size_t(st.st_size), vec.data()) == 0) {
    size_t in = 0;
    for (unsigned char v : vec) in += v & 1;
    frac = double(in) / double(vec.size());
  }
  ::munmap(p, size_t(st.st_size));
  return frac;
}
double cached_fraction(const std::vector<std::string>& files) {
  double pages = 0, in = 0;
  const double page = double(::sysconf(_SC_PAGESIZE));
  for (const auto& f : files) {
    double frac = cached_fraction(f);
    if (frac < 0) return -1;
    struct stat st {};
    ::stat(f.c_str(), &st);
    const double n = std::ceil(double(st.st_size) / page);
    pages += n;
    in += frac * n;
  }
  return pages > 0 ? in / pages : -1;
}

// Empties the page cache of the weight files: the whole cache through
// /proc/sys/vm/drop_caches (root), else these files' pages through
// posix_fadvise(DONTNEED), which any reader may ask. Says what it did.
std::string drop_caches(const std::vector<std::string>& files) {
  ::sync();
  {
    std::ofstream out("/proc/sys/vm/drop_caches");
    if (out) {
      out << "3\n";
      out.flush();
      if (out) return "echo 3 > /proc/sys/vm/drop_caches";
    }
  }
  std::string why = ::geteuid() == 0 ? "/proc/sys/vm/drop_caches is not writable here" : "not root";
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) return "could not drop the page cache (" + why + "; cannot open " + f + ")";
    int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    if (rc != 0) return "could not drop the page cache (" + why + "; posix_fadvise: " + std::strerror(rc) + ")";
  }
  return "posix_fadvise(DONTNEED) on the weight files (" + why + " for drop_caches)";
}

// ---------------------------------------------------------------- CUDA memory

struct GpuMem {
  bool known = false;
  uint64_t peak_allocated = 0, peak_reserved = 0;  // the caching allocator, since the last reset
  uint64_t device_used = 0;                        // cudaMemGetInfo: total - free (all processes, context included)
};
bool gpu_stats_available(const torch::Device& d) {
#ifdef SSALAB_WITH_CUDA
  if (!d.is_cuda() || !torch::cuda::is_available()) return false;
  // The caching allocator knows no device before the first allocation on it
  // ("Invalid device argument" from its statistics calls).
  static const bool initialised = (torch::empty({1}, torch::TensorOptions().device(d)), true);
  return initialised;
#else
  (void)d;
  return false;
#endif
}
void gpu_reset_peak(const torch::Device& d) {
#ifdef SSALAB_WITH_CUDA
  if (gpu_stats_available(d)) c10::cuda::CUDACachingAllocator::resetPeakStats(d.has_index() ? d.index() : 0);
#else
  (void)d;
#endif
}
GpuMem gpu_mem(const torch::Device& d) {
  GpuMem m;
#ifdef SSALAB_WITH_CUDA
  if (!gpu_stats_available(d)) return m;
  torch::cuda::synchronize();
  const int index = d.has_index() ? d.index() : 0;
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  m.known = true;
  m.peak_allocated = uint64_t(stats.allocated_bytes[0].peak);  // [0]: StatType::AGGREGATE
  m.peak_reserved = uint64_t(stats.reserved_bytes[0].peak);
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) m.device_used = uint64_t(total - free);
#else
  (void)d;
#endif
  return m;
}
json to_json(const GpuMem& m) {
  if (!m.known) return nullptr;
  return {{"peak_allocated_bytes", m.peak_allocated},
          {"peak_reserved_bytes", m.peak_reserved},
          {"device_used_bytes", m.device_used}};
}
std::string gpu_text(const GpuMem& m) {
  return m.known ? gb(double(m.peak_allocated)) + " / " + gb(double(m.peak_reserved)) : std::string("-");
}
void sync_device(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// ---------------------------------------------------------------- arguments

struct Args {
  std::string make_dir, preset = "1b";
  torch::ScalarType store = torch::kBFloat16;
  uint64_t seed = 0;
  std::string model;
  std::string device = "cpu";
  int tokens = 2048, threads = 0, loads = 2;
  std::optional<torch::ScalarType> compute;
  bool drop = false, eval = true, score_only = false;
  std::string json_out;
};

torch::ScalarType dtype_arg(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  if (s == "fp16" || s == "float16") return torch::kHalf;
  if (s == "fp32" || s == "float32") return torch::kFloat;
  throw UsageError("unknown dtype '" + s + "' (bf16 | fp16 | fp32)");
}
int int_arg(const std::string& flag, const std::string& s, int min) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE || v < min || v > 1000000000)
    throw UsageError(flag + " needs an integer >= " + std::to_string(min) + ", got '" + s + "'");
  return int(v);
}

Args parse(int argc, char** argv) {
  Args a;
  bool make_only = false, measure_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(f + " needs a value");
      return argv[++i];
    };
    if (f == "-h" || f == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (f == "--make") {
      a.make_dir = value();
    } else if (f == "--preset") {
      a.preset = value(), make_only = true;
      if (a.preset != "1b" && a.preset != "300m" && a.preset != "tiny")
        throw UsageError("unknown --preset '" + a.preset + "' (1b | 300m | tiny)");
    } else if (f == "--dtype") {
      a.store = dtype_arg(value()), make_only = true;
    } else if (f == "--seed") {
      a.seed = uint64_t(int_arg(f, value(), 0)), make_only = true;
    } else if (f == "--device") {
      a.device = value(), measure_only = true;
      if (a.device != "cpu" && a.device != "cuda" && a.device.rfind("cuda:", 0) != 0)
        throw UsageError("--device must be cpu or cuda (or cuda:N), got '" + a.device + "'");
    } else if (f == "--tokens") {
      a.tokens = int_arg(f, value(), 2), measure_only = true;
    } else if (f == "--threads") {
      a.threads = int_arg(f, value(), 1), measure_only = true;
    } else if (f == "--loads") {
      a.loads = int_arg(f, value(), 1), measure_only = true;
    } else if (f == "--compute-dtype") {
      a.compute = dtype_arg(value()), measure_only = true;
    } else if (f == "--drop-caches") {
      a.drop = measure_only = true;
    } else if (f == "--no-eval") {
      a.eval = false, measure_only = true;
    } else if (f == "--score-only") {
      a.score_only = measure_only = true;
    } else if (f == "--json") {
      a.json_out = value();
    } else if (!f.empty() && f[0] == '-') {
      throw UsageError("unknown option " + f);
    } else if (a.model.empty()) {
      a.model = f;
    } else {
      throw UsageError("one MODEL only (got '" + a.model + "' and '" + f + "')");
    }
  }
  if (!a.make_dir.empty()) {
    if (!a.model.empty()) throw UsageError("--make writes a checkpoint; give no MODEL with it");
    if (measure_only) throw UsageError("--device, --tokens, --threads, --loads, --compute-dtype, --drop-caches, "
                                       "--no-eval and --score-only are for measuring, not for --make");
  } else {
    if (a.model.empty()) throw UsageError("give MODEL to measure, or --make DIR");
    if (make_only) throw UsageError("--preset, --dtype and --seed go with --make");
    if (!a.json_out.empty()) {  // found out now, not after minutes of measuring
      std::filesystem::path parent = std::filesystem::absolute(a.json_out).parent_path();
      std::error_code ec;
      if (!std::filesystem::is_directory(parent, ec))
        throw UsageError("--json " + a.json_out + ": folder " + parent.string() + " does not exist");
    }
  }
  return a;
}

// ---------------------------------------------------------------- --make

int make(const Args& a) {
  ModelConfig c = released_layout_config(a.preset);
  const int64_t params = c.num_parameters();
  const uint64_t need = uint64_t(params) * c10::elementSize(a.store);
  namespace fs = std::filesystem;
  fs::path parent = fs::absolute(a.make_dir).parent_path();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) throw Error("cannot write " + a.make_dir + ": " + parent.string() + " is not a folder");
  struct statvfs vfs {};
  if (::statvfs(parent.c_str(), &vfs) == 0) {
    const uint64_t avail = uint64_t(vfs.f_bavail) * vfs.f_frsize;
    if (avail < need + need / 20)
      throw Error("cannot write " + a.make_dir + ": it needs " + gb(double(need)) + " but " + parent.string() +
                  " has " + gb(double(avail)) + " free");
  }
  std::printf("writing %s: released layout, preset %s (%.1fM parameters), weights %s, seed %llu, %s\n",
              a.make_dir.c_str(), a.preset.c_str(), double(params) / 1e6, c10::toString(a.store),
              (unsigned long long)a.seed, gb(double(need)).c_str());
  std::fflush(stdout);
  auto t0 = Clock::now();
  uint64_t bytes = write_random_checkpoint(a.make_dir, c, a.store, a.seed);
  std::printf("wrote %s in %.1f s (config.json + model.safetensors); peak RSS %s\n", gb(double(bytes)).c_str(),
              seconds_since(t0), gb(double(ru_maxrss_bytes())).c_str());
  return 0;
}

// ---------------------------------------------------------------- measuring

struct LoadRow {
  double cached = -1;  // share of the weight files in the page cache before the load
  std::string cache_note;
  double seconds = 0;
  uint64_t hwm = 0, rss_after = 0;
  GpuMem gpu;
};

struct ModeRow {
  std::string what;
  double seconds = 0;
  int64_t scored = 0;
  double mean_nll = NAN;  // nats
  bool finite = false;
};

// One window, every token after the first: forward, log_softmax, gather, as
// engine/eval's window_nll does it (the pass score_tokens makes per mode).
ModeRow timed_pass(Transformer& model, const std::vector<int32_t>& ids, AttnMode mode, const SparseSpec& spec,
                   torch::Device dev) {
  ModeRow r;
  r.what = to_string(mode);
  torch::NoGradGuard no_grad;
  const int64_t n = int64_t(ids.size()) - 1;
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  auto t0 = Clock::now();
  torch::Tensor all = torch::tensor(ids64, torch::kLong).view({1, n + 1}).to(dev);
  ForwardOptions fo;
  fo.mode = mode;
  fo.spec = spec;
  torch::Tensor logits = model.forward(all.narrow(1, 0, n), fo).logits[0].to(torch::kFloat);
  torch::Tensor nll = -torch::log_softmax(logits, -1).gather(1, all[0].narrow(0, 1, n).view({n, 1})).view({n});
  nll = nll.to(torch::kCPU).to(torch::kDouble);
  r.seconds = seconds_since(t0);
  r.scored = n;
  r.finite = bool(torch::isfinite(nll).all().item<bool>());
  r.mean_nll = nll.mean().item<double>();
  return r;
}

int measure(const Args& a) {
  if (a.threads > 0) torch::set_num_threads(a.threads);
  const torch::Device device(a.device);
  if (device.is_cuda() && !torch::cuda::is_available())
    throw Error("--device " + a.device + ": this LibTorch sees no CUDA device");
  LoadOptions lo;
  lo.device = device;
  lo.dtype = a.compute;
  lo.on_plan = [](const LoadPlan&) {};  // printed below, once

  json out;
  out["tool"] = "ssalab_load_bench";
  out["date"] = utc_now();
  out["model"] = a.model;
  out["loadavg_start"] = loadavg();
  const long nproc = ::sysconf(_SC_NPROCESSORS_ONLN);
  out["machine"] = {{"nproc", nproc},
                    {"cpu", cpu_model()},
                    {"mem_total_bytes", uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE))},
                    {"torch_threads", torch::get_num_threads()},
                    {"libtorch", TORCH_VERSION},
                    {"cuda_stats", gpu_stats_available(device)}};

  std::printf("ssalab_load_bench %s  (%s)\n", a.model.c_str(), out["date"].get<std::string>().c_str());
  std::printf("machine: %ld CPUs (%s), %s RAM; LibTorch %s, %d threads; device %s\n", nproc,
              out["machine"]["cpu"].get<std::string>().c_str(),
              gb(double(out["machine"]["mem_total_bytes"].get<uint64_t>())).c_str(), TORCH_VERSION,
              torch::get_num_threads(), device.str().c_str());

  // -------- plan
  auto t0 = Clock::now();
  LoadPlan plan = plan_checkpoint(a.model, lo);
  const double plan_s = seconds_since(t0);
  std::printf("plan: %.1f ms (config.json and safetensors headers, no weights read)\n  %s\n", plan_s * 1e3,
              plan.summary().c_str());
  out["plan"] = {{"seconds", plan_s},
                 {"summary", plan.summary()},
                 {"architecture", architecture_name(plan.config.arch)},
                 {"parameters", plan.parameters},
                 {"stored_dtype", plan.stored_dtype},
                 {"compute_dtype", c10::toString(plan.dtype)},
                 {"file_bytes", plan.file_bytes},
                 {"new_bytes", plan.new_bytes},
                 {"mapped_bytes", plan.mapped_bytes},
                 {"weight_files", plan.weight_files}};

  // Too few tokens for the model's sparse attention: said now, not after the loads.
  const SparseSpec spec = model_sparse_spec(plan.config);
  if (a.eval) {
    std::string problem = check_sparse_spec(spec, a.tokens - 1);
    if (!problem.empty())
      throw Error(std::to_string(a.tokens) + " tokens are too few for the model's sparse attention (" + problem +
                  "); give more --tokens");
  }

  // -------- loads
  const bool hwm_resets = reset_hwm();
  std::vector<LoadRow> rows;
  LoadedCheckpoint ck;
  for (int i = 0; i < a.loads; ++i) {
    LoadRow r;
    if (i == 0 && a.drop) r.cache_note = drop_caches(plan.weight_files);
    r.cached = cached_fraction(plan.weight_files);
    reset_hwm();
    gpu_reset_peak(device);
    t0 = Clock::now();
    ck = load_checkpoint(a.model, lo);
    sync_device(device);
    r.seconds = seconds_since(t0);
    r.hwm = vm_hwm();
    r.rss_after = vm_rss();
    r.gpu = gpu_mem(device);
    rows.push_back(r);
    if (i + 1 < a.loads) ck = LoadedCheckpoint{};  // the next load starts from nothing
  }
  auto cache_label = [](const LoadRow& r) {
    char buf[64];
    if (r.cached < 0) return std::string("page cache unknown");
    std::snprintf(buf, sizeof buf, "%s, %.0f%% cached", r.cached < 0.05 ? "cold" : r.cached > 0.95 ? "warm" : "partly cold",
                  r.cached * 100);
    return std::string(buf);
  };
  std::printf("\nload (wall, load_checkpoint; %s in %s, computing in %s on %s)\n", plan.stored_dtype.c_str(),
              gb(double(plan.file_bytes)).c_str(), c10::toString(plan.dtype), device.str().c_str());
  std::printf("  %-3s  %-24s  %9s  %16s  %10s  %s\n", "#", "weights before the load", "wall", "peak RSS (VmHWM)",
              "RSS after", "GPU peak alloc / reserved");
  json jl = json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const LoadRow& r = rows[i];
    std::printf("  %-3zu  %-24s  %7.2f s  %16s  %10s  %s\n", i + 1, cache_label(r).c_str(), r.seconds,
                gb(double(r.hwm)).c_str(), gb(double(r.rss_after)).c_str(), gpu_text(r.gpu).c_str());
    json j = {{"seconds", r.seconds},
              {"cached_fraction_before", r.cached < 0 ? json(nullptr) : json(r.cached)},
              {"cache", cache_label(r)},
              {"peak_rss_bytes", r.hwm},
              {"rss_after_bytes", r.rss_after},
              {"gpu", to_json(r.gpu)}};
    if (!r.cache_note.empty()) j["drop_caches"] = r.cache_note;
    jl.push_back(j);
  }
  if (a.drop) std::printf("  page cache dropped before load 1: %s\n", rows[0].cache_note.c_str());
  if (!hwm_resets) std::printf("  (VmHWM could not be reset: every peak is the process's peak so far)\n");
  out["loads"] = jl;
  out["peak_rss_resets"] = hwm_resets;

  // -------- eval
  int rc = 0;
  if (a.eval) {
    const ModelConfig& c = ck.config;
    std::mt19937_64 rng(1);
    std::vector<int32_t> ids(size_t(a.tokens));
    for (auto& t : ids) t = int32_t(rng() % uint64_t(c.vocab_size));
    const int window = a.tokens - 1;
    Transformer& model = *ck.model;
    model.eval();
    {  // warm-up (allocator, kernels, thread pool): 64 tokens, full attention
      torch::NoGradGuard no_grad;
      ForwardOptions fo;
      model.forward(torch::zeros({1, std::min<int64_t>(64, a.tokens)}, torch::kLong).to(device), fo);
      sync_device(device);
    }
    reset_hwm();
    gpu_reset_peak(device);
    std::vector<ModeRow> modes;
    if (!a.score_only) {
      modes.push_back(timed_pass(model, ids, AttnMode::Full, spec, device));
      modes.push_back(timed_pass(model, ids, AttnMode::Sparse, spec, device));
    }
    t0 = Clock::now();
    TokenScores s = score_tokens(model, ids, spec, window);
    const double score_s = seconds_since(t0);
    const uint64_t eval_hwm = vm_hwm();
    const GpuMem eval_gpu = gpu_mem(device);
    bool finite = true;
    for (float x : s.nll_full) finite = finite && std::isfinite(x);
    for (float x : s.nll_sparse) finite = finite && std::isfinite(x);
    for (const ModeRow& m : modes) finite = finite && m.finite;

    std::printf("\neval: %d random token ids (seed 1, uniform over %d), one window, %lld tokens scored per mode; "
                "sparse: block %d, k %d, %s; %d threads\n",
                a.tokens, c.vocab_size, (long long)window, spec.block_size, spec.top_k, to_string(spec.rule),
                torch::get_num_threads());
    std::printf("  %-34s  %9s  %9s  %19s  %s\n", "pass", "wall", "tokens/s", "mean NLL (nats)", "finite");
    json jm = json::array();
    for (const ModeRow& m : modes) {
      std::printf("  %-34s  %7.2f s  %9.1f  %19.5f  %s\n", (m.what + " attention, forward + NLL").c_str(), m.seconds,
                  double(m.scored) / m.seconds, m.mean_nll, m.finite ? "yes" : "NO");
      jm.push_back({{"mode", m.what},
                    {"seconds", m.seconds},
                    {"tokens_scored", m.scored},
                    {"tokens_per_s", double(m.scored) / m.seconds},
                    {"mean_nll", std::isfinite(m.mean_nll) ? json(m.mean_nll) : json(nullptr)},
                    {"finite", m.finite}});
    }
    const double lf = std::log(s.ppl_full), ls = std::log(s.ppl_sparse);
    char nll_text[64];
    std::snprintf(nll_text, sizeof nll_text, "%.5f / %.5f", lf, ls);
    std::printf("  %-34s  %7.2f s  %9.1f  %19s  %s\n", "score_tokens (full + sparse)", score_s,
                double(s.nll_full.size()) / score_s, nll_text, finite ? "yes" : "NO");
    double agree = 0;
    if (modes.size() == 2) {
      agree = std::max(std::abs(lf - modes[0].mean_nll), std::abs(ls - modes[1].mean_nll));
      std::printf("  (score_tokens' mean NLLs full / sparse; they differ from the timed passes' by at most %.2g nats)\n",
                  agree);
    }
    std::printf("  (tokens/s: tokens scored per second; score_tokens scores each token twice, full and sparse)\n");
    if (!s.sparse_note.empty()) std::printf("  note: %s\n", s.sparse_note.c_str());
    std::printf("  peak RSS during eval (VmHWM): %s; GPU peak alloc / reserved: %s\n", gb(double(eval_hwm)).c_str(),
                gpu_text(eval_gpu).c_str());
    out["eval"] = {{"tokens", a.tokens},
                   {"tokens_scored", window},
                   {"token_ids", "uniform random, std::mt19937_64 seed 1"},
                   {"threads", torch::get_num_threads()},
                   {"spec", {{"block_size", spec.block_size}, {"top_k", spec.top_k}, {"rule", to_string(spec.rule)}}},
                   {"passes", jm},
                   {"score_tokens",
                    {{"seconds", score_s},
                     {"mean_nll_full", std::isfinite(lf) ? json(lf) : json(nullptr)},
                     {"mean_nll_sparse", std::isfinite(ls) ? json(ls) : json(nullptr)},
                     {"ppl_full", std::isfinite(s.ppl_full) ? json(s.ppl_full) : json(nullptr)},
                     {"ppl_sparse", std::isfinite(s.ppl_sparse) ? json(s.ppl_sparse) : json(nullptr)}}},
                   {"max_nll_difference_vs_score_tokens", modes.size() == 2 ? json(agree) : json(nullptr)},
                   {"all_finite", finite},
                   {"peak_rss_bytes", eval_hwm},
                   {"gpu", to_json(eval_gpu)}};
    if (!finite) {
      std::fprintf(stderr, "ssalab_load_bench: non-finite NLLs\n");
      rc = 3;
    }
  }
  const uint64_t maxrss = ru_maxrss_bytes();
  std::printf("\nprocess peak RSS (getrusage ru_maxrss): %s\n", gb(double(maxrss)).c_str());
  std::printf("load average (1/5/15 min) at the start: %s, at the end: %s\n", out["loadavg_start"].get<std::string>().c_str(),
              loadavg().c_str());
  out["process_peak_rss_bytes"] = maxrss;
  out["loadavg_end"] = loadavg();
  if (!a.json_out.empty()) {
    write_file_atomic(a.json_out, out.dump(2) + "\n");
    std::printf("wrote %s\n", a.json_out.c_str());
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped through tee
  try {
    Args a = parse(argc, argv);
    return a.make_dir.empty() ? measure(a) : make(a);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "ssalab_load_bench: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ssalab_load_bench: %s\n", e.what());
    return 1;
  }
}
