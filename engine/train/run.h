// A whole training run as the CLI, the benchmark and the paradox lab use it
// (driving engine/train/loop.h, as the app's Session does): prepare data
// (tokenizer + token cache), build or resume the model, loop with a progress
// bar, append metrics to <out>/metrics.jsonl, validate and checkpoint
// periodically, stop cleanly on NaN with the last good checkpoint kept.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/data/corpus.h"
#include "engine/train/loop.h"

namespace ssalab {

struct PreparedData {
  Tokenizer tokenizer;
  std::shared_ptr<const TokenData> tokens;
  std::string corpus;
};

// Loads `tokenizer_path` when given, else trains (or reuses from cache_dir) a
// tokenizer of `vocab_size` pieces on the corpus; tokenises once into a cache.
PreparedData prepare_data(const std::string& corpus, int vocab_size, const std::string& cache_dir,
                          const std::string& tokenizer_path = "");

struct RunOptions {
  ModelConfig model;
  TrainConfig train;
  std::string corpus;            // empty: default corpus
  std::string tokenizer;         // optional .model to use instead of training one
  std::string cache_dir = ".cache/ssalab";
  std::string out_dir = "runs/train";
  std::string resume;            // checkpoint dir to continue from ("auto": out_dir/checkpoint if present)
  int64_t stop_after = -1;       // stop (and checkpoint) after this step, as if interrupted; -1: run to the end
  bool progress = true;          // terminal progress bar on stderr
  std::function<void(const MetricPoint&)> on_step;  // optional observer
  // Data parallelism: this process's place in the run (rank_info_from_environment)
  // and how long a collective may wait for the others. Rank 0 writes the
  // metrics, checkpoints and progress; every rank trains.
  std::optional<distributed::RankInfo> ranks;
  std::chrono::milliseconds collective_timeout{std::chrono::minutes(10)};
};

struct RunResult {
  int64_t final_step = 0;
  std::vector<MetricPoint> history;
  double val_ppl_full = NAN, val_ppl_sparse = NAN;
  double seconds = 0;
  std::string checkpoint;        // where the final checkpoint went
};

RunResult run_training(const RunOptions& opt);

}  // namespace ssalab
