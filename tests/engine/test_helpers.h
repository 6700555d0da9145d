// Shared fixtures for the engine tests: a small real-English corpus (the
// tutorial part of the Python docs from python3.11-doc) and a scratch folder.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/config.h"
#include "engine/train/run.h"
#include "engine/util/files.h"

namespace ssalab::test {

// SSALAB_TEST_CORPUS overrides it (the GPU machine has no python3.11-doc).
inline std::string small_corpus() {
  const char* env = std::getenv("SSALAB_TEST_CORPUS");
  return env ? env : "/usr/share/doc/python3.11/html/_sources/tutorial";
}
// A file or folder of the Hugging Face fixtures (tests/fixtures/hf).
inline std::string hf_fixture(const std::string& name) {
  return std::string(SSALAB_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
}
inline std::string cache_dir() { return (std::filesystem::temp_directory_path() / "ssalab-test-cache").string(); }

// A fresh empty directory under /tmp, unique per call.
inline std::string scratch_dir(const std::string& name) {
  static int counter = 0;
  auto p = std::filesystem::temp_directory_path() /
           ("ssalab-test-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  ssalab::remove_tree(p.string());
  std::filesystem::create_directories(p);
  return p.string();
}

// A very small model for fast tests (a few ms per step).
inline ModelConfig micro_model(int vocab = 512) {
  ModelConfig c = model_preset("tiny");
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position = 64;
  c.block_size = 8;
  c.block_counts = 3;
  return c;
}

// A micro model the CUDA kernels take: head dim 64, one KV group, block 16, k 4.
inline ModelConfig kernel_micro_model() {
  ModelConfig c = micro_model();
  c.head_dim = 64;
  c.num_kv_heads = 1;
  c.block_size = 16;
  c.block_counts = 4;
  return c;
}

// Every family the builder runs, as a micro model: ours (gated llama-nsa),
// the NSA baseline's branches, Llama with biases and untied, Mistral, Qwen2, Qwen3.
inline std::vector<std::pair<std::string, ModelConfig>> family_micro_models() {
  ModelConfig base = micro_model(97);
  base.max_position = 256;
  std::vector<std::pair<std::string, ModelConfig>> f;
  f.emplace_back("llama-nsa gated (ours)", base);
  ModelConfig c = base;
  c.window_size = 6;  // NSA baseline: compression and sliding-window branches
  f.emplace_back("llama-nsa with NSA branches", c);
  c = base;
  c.arch = Arch::Llama, c.gate = false, c.tied_embeddings = false, c.qkv_bias = c.o_bias = c.mlp_bias = true;
  f.emplace_back("llama, biases, untied", c);
  c = base;
  c.arch = Arch::Mistral, c.gate = false, c.sliding_window = 4096;
  f.emplace_back("mistral", c);
  c = base;
  c.arch = Arch::Qwen2, c.gate = false, c.qkv_bias = true;
  f.emplace_back("qwen2", c);
  c = base;
  c.arch = Arch::Qwen3, c.gate = false, c.qk_norm = true, c.head_dim = 16;
  f.emplace_back("qwen3", c);
  return f;
}

inline TrainConfig micro_train(int steps) {
  TrainConfig t;
  t.steps = steps;
  t.batch_size = 4;
  t.seq_len = 64;
  t.eval_every = 0;
  t.eval_batches = 2;
  t.lr = 3e-3;
  t.device = "cpu";
  return t;
}

// A whole run of the micro model on the small corpus into `out`, quiet.
inline RunOptions micro_run(const std::string& out, int steps, Method method = Method::Ssa) {
  RunOptions o;
  o.model = micro_model();
  o.train = micro_train(steps);
  o.train.method = method;
  o.corpus = small_corpus();
  o.cache_dir = cache_dir();
  o.out_dir = out;
  o.progress = false;
  return o;
}

// What a run of the ssalab binary (SSALAB_BINARY) did.
struct CommandResult {
  int code = -1;          // exit status, -1 when it died of a signal
  std::string output;     // stdout and stderr
  double peak_mib = 0;    // its peak resident size
};

// Runs the ssalab binary with `args`; `env`: assignments put before it, e.g.
// "SSALAB_MEMORY_LIMIT=40M".
inline CommandResult run_ssalab(const std::string& args, const std::string& env = "") {
  static int counter = 0;
  const std::string log = (std::filesystem::temp_directory_path() /
                           ("ssalab-run-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log"))
                              .string();
  const std::string cmd = env + (env.empty() ? "" : " ") + "exec " + std::string(SSALAB_BINARY) + " " + args + " > " +
                          log + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  rusage usage{};
  ::wait4(pid, &status, 0, &usage);
  CommandResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.peak_mib = double(usage.ru_maxrss) / 1024.0;
  r.output = read_file(log);
  std::filesystem::remove(log);
  return r;
}

}  // namespace ssalab::test
