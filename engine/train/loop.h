// The one training loop. The CLI (run_training), the app's Session and the
// paradox lab all drive it: advance() is one step of the schedule — an
// optimizer step, validation when it is due, the metrics line appended, a
// checkpoint when it is due — and the caller decides between steps whether to
// go on, pause or stop (an iterator, so no callbacks reach into the caller).
#pragma once
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/train/trainer.h"

namespace ssalab {

struct LoopOptions {
  int64_t last_step = -1;       // stop after this step (-1: the config's steps)
  std::string metrics_path;     // append one JSON line per step here ("" = keep in memory only)
  std::string checkpoint_dir;   // save here every save_every steps and at last_step ("" = never)
  const Tokenizer* tokenizer = nullptr;  // saved with each checkpoint (needed with checkpoint_dir)
  nlohmann::json extra;         // free-form trainer_state.json fields (corpus, method, ...)
  bool validate = true;         // validation perplexity when due (data parallelism: rank 0 only)
};

class TrainingLoop {
 public:
  TrainingLoop(Trainer& trainer, LoopOptions opt);

  // True once the trainer reached last_step (or the config's steps).
  bool done() const;
  int64_t last_step() const;
  // One step of the schedule. Throws Error on a NaN/Inf loss (weights stay as
  // before the step; the message names the last checkpoint when there is one).
  MetricPoint advance();
  const std::vector<MetricPoint>& history() const { return history_; }
  // The validation perplexities of the latest validated step (NaN before one).
  double val_ppl_full() const { return val_full_; }
  double val_ppl_sparse() const { return val_sparse_; }
  // Where the latest checkpoint went ("" when none was written).
  const std::string& checkpoint() const { return saved_; }

 private:
  Trainer& trainer_;
  LoopOptions opt_;
  std::ofstream log_;
  std::vector<MetricPoint> history_;
  double val_full_ = NAN, val_sparse_ = NAN;
  std::string saved_;
};

// One metrics line (JSON) for the append-only log.
nlohmann::json to_json(const MetricPoint& m);

}  // namespace ssalab
