// Shared fixtures for the engine tests: a small real-English corpus (the
// tutorial part of the Python docs from python3.11-doc) and a scratch folder.
#pragma once
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "engine/config.h"
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

}  // namespace ssalab::test
