// Session: the GUI's handle on the engine.
//
// Training runs on a worker thread. The UI sends commands (start, pause, set k,
// ...) that the worker applies at step boundaries, and reads immutable
// snapshots that the worker publishes: snapshot() copies one shared_ptr under
// a mutex held for a pointer copy only, so a reader never waits for a step.
// Analysis (attention maps and statistics for the probe text) runs on the
// same worker between steps, on the current weights: at once when the probe
// or the inference settings change, and every `analyze_every` training steps.
// Closing the session cancels an analysis in flight.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/config.h"
#include "engine/generate/stream.h"
#include "engine/metrics/analysis.h"
#include "engine/train/trainer.h"  // MetricPoint

namespace ssalab {

enum class RunState { Idle, Running, Paused, Done, Error };
const char* to_string(RunState s);

struct Snapshot {
  int64_t version = 0;        // increases with every publish
  RunState state = RunState::Idle;
  std::string status;         // one line for the status bar
  std::string error;          // last error, empty if none
  int64_t step = 0, total_steps = 0;
  ModelConfig model;
  TrainConfig train;
  SparseSpec spec;            // inference selection settings
  AttnMode inference = AttnMode::Full;
  std::vector<MetricPoint> history;  // every logged step, oldest first
  std::shared_ptr<const Analysis> analysis;  // of the probe text; may be null
  std::vector<std::string> probe_pieces;     // token strings of the probe
  std::string spec_problem;   // why the current spec cannot run (empty = fine)
  std::string attention_fallback;  // why CUDA attention ran on the reference path (empty = it did not)
  // The model open now: where it came from ("" for a fresh model), the load
  // plan's one-line summary, its tokenizer, and whether it can be trained
  // here (a fresh model or an ssalab checkpoint; any other model is open for
  // inspection only: analysis, k and block size, no training).
  std::string model_source, model_summary, tokenizer_info;
  bool trainable = true;
  double load_progress = -1;  // 0..1 while a model loads, else -1
  uint64_t loads_done = 0;    // load() tickets answered (opened, failed or cancelled)
  std::string loading;        // what is loading ("" when nothing is)
  std::string probe_text;     // the probe as text (other models re-encode it)
  // A run another process trains, followed (Session::attach): its folder,
  // the step of the checkpoint the views show (-1: none yet), and why the
  // latest checkpoint could not be opened ("" when it could).
  std::string attached_run;
  int64_t attached_checkpoint_step = -1;
  std::string attach_problem;
  // The latest generation (Session::generate), as it streams; null before any.
  std::shared_ptr<const GenerationState> generation;
};

struct SessionOptions {
  ModelConfig model = model_preset("tiny");
  TrainConfig train;
  std::string corpus;          // empty: default corpus
  std::string work_dir = "runs/session";  // tokenizer, token cache, checkpoints
  std::string checkpoint;      // open this model (folder or cached hub id) instead of a fresh one (optional)
  std::string attach;          // follow this run folder (Session::attach) instead of training a fresh model
  std::string probe_text;      // empty: a validation sample
  int probe_tokens = 256;      // length of the default probe
  int analyze_every = 10;      // steps between automatic analyses
  // Run the worker (and the LibTorch threads it starts) below the caller's
  // priority, so a UI thread stays responsive while training saturates the cores.
  bool background_priority = false;
};

// Why `spec` cannot be used ("" when it can): for inference on `probe_tokens`
// tokens, the attention backends' answer (attention_problem), then for
// training with `train`, the training config's validation. The session, the
// Controls and the scripted demo all ask this one function.
// `train` null: a model open for inspection, only the attention's answer.
std::string spec_problem(const ModelConfig& model, const TrainConfig* train, const SparseSpec& spec,
                         int64_t probe_tokens);
inline std::string spec_problem(const ModelConfig& model, const TrainConfig& train, const SparseSpec& spec,
                                int64_t probe_tokens) {
  return spec_problem(model, &train, spec, probe_tokens);
}

class Session {
 public:
  explicit Session(SessionOptions opts);
  ~Session();  // stops and joins the worker
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Commands: queued, applied by the worker at the next step boundary.
  void start();
  void pause();
  void resume();
  void stop();
  void set_method(Method m);
  void set_p_full(double p);
  void set_alpha(double a);
  void set_lr(double lr);
  void set_top_k(int k);
  void set_block_size(int bs);
  void set_selection_rule(SelectionRule r);
  void set_pooled_keys(PooledKeys p);
  void set_inference(AttnMode m);
  void set_probe_text(const std::string& text);
  void set_probe_tokens(const std::vector<int>& tokens);
  void save(const std::string& dir);
  // Opens a model in place of the current one: an ssalab checkpoint (training
  // resumes from it), or any model folder / cached hub id load_checkpoint
  // reads (inspection only). Progress shows in Snapshot::load_progress; on
  // failure or cancel the current model stays. Returns a ticket: the load
  // has been answered once Snapshot::loads_done reaches it; then
  // model_source == dir_or_id if it opened, else `error` says why.
  uint64_t load(const std::string& dir_or_id);
  // Stops a load in progress (between tensors); takes effect at once.
  void cancel_load();
  void request_analysis();
  // Follows a training run that another process writes in `run_dir` (a
  // cluster job on a shared disk, `ssalab train` in a terminal), read-only:
  // the curves follow its metrics.jsonl as it grows, and each checkpoint it
  // writes is opened for inspection (analysis, k, block size) as it appears.
  // Training in this session stops. Ends with detach() or a load().
  void attach(const std::string& run_dir);
  void detach();
  // Generates after `request.prompt` with the session's model and selection
  // (k, block size, rule), a token per worker turn, published in
  // Snapshot::generation. Training pauses first (the weights must hold still
  // for the cache); a new request replaces a running one. Stops on a stop
  // token, at max_new_tokens, with stop_generation(), or when the model changes.
  void generate(const GenerationRequest& request);
  void stop_generation();

  std::shared_ptr<const Snapshot> snapshot() const;
  // Blocks until the worker has applied every command queued so far (tests, scripted demo).
  void wait_idle() const;

 private:
  // Queues `change` of one field of the current sparse spec; the others stay.
  void change_spec(std::function<void(SparseSpec&)> change);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssalab
