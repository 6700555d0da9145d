#include "engine/train/loop.h"

#include <algorithm>
#include <cmath>

#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

nlohmann::json to_json(const MetricPoint& m) {
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  return {{"step", m.step},           {"loss", num(m.loss)},
          {"ce_full", num(m.ce_full)}, {"ce_sparse", num(m.ce_sparse)},
          {"sparsity_loss", num(m.sparsity_loss)}, {"commitment_loss", num(m.commitment_loss)},
          {"grad_norm", num(m.grad_norm)}, {"lr", m.lr},
          {"tokens_per_s", num(m.tokens_per_s)}, {"val_ppl_full", num(m.val_ppl_full)},
          {"val_ppl_sparse", num(m.val_ppl_sparse)}};
}

TrainingLoop::TrainingLoop(Trainer& trainer, LoopOptions opt) : trainer_(trainer), opt_(std::move(opt)) {
  if (!opt_.checkpoint_dir.empty() && !opt_.tokenizer)
    throw Error("training loop: checkpoints need the tokenizer to save with them");
  if (!opt_.metrics_path.empty()) {
    log_.open(opt_.metrics_path, std::ios::app);
    if (!log_) throw Error("cannot open " + opt_.metrics_path + " for appending");
  }
}

int64_t TrainingLoop::last_step() const {
  const int64_t steps = trainer_.train_config().steps;
  return opt_.last_step >= 0 ? std::min<int64_t>(opt_.last_step, steps) : steps;
}

bool TrainingLoop::done() const { return trainer_.current_step() >= last_step(); }

MetricPoint TrainingLoop::advance() {
  MetricPoint m;
  try {
    m = trainer_.step();
  } catch (const Error& e) {
    if (saved_.empty() && !opt_.checkpoint_dir.empty() && file_exists(opt_.checkpoint_dir)) saved_ = opt_.checkpoint_dir;
    throw Error(std::string(e.what()) + (saved_.empty() ? "" : "; last good checkpoint: " + saved_));
  }
  // read after the step: the app may change the schedule between steps
  const TrainConfig& tc = trainer_.train_config();
  if (opt_.validate && ((tc.eval_every > 0 && m.step % tc.eval_every == 0) || m.step >= tc.steps)) {
    auto v = trainer_.validate(tc.eval_batches);
    m.val_ppl_full = val_full_ = v.first;
    m.val_ppl_sparse = val_sparse_ = v.second;
  }
  history_.push_back(m);
  if (log_.is_open()) {
    log_ << to_json(m).dump() << "\n";
    log_.flush();
  }
  const bool save_due = (tc.save_every > 0 && m.step % tc.save_every == 0) || m.step == last_step();
  // with a sharded optimizer every process takes part in a save; one writes it
  if (save_due) trainer_.gather_for_checkpoint();
  if (save_due && !opt_.checkpoint_dir.empty()) {
    trainer_.save(opt_.checkpoint_dir, *opt_.tokenizer, opt_.extra);
    saved_ = opt_.checkpoint_dir;
  }
  if (save_due) trainer_.release_gathered();
  return m;
}

}  // namespace ssalab
