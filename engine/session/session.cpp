#include "engine/session/session.h"

#include <chrono>
#include <cmath>

#include "engine/checkpoint/checkpoint.h"
#include "engine/model/transformer.h"
#include "engine/train/run.h"
#include "engine/train/loop.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/priority.h"

namespace ssalab {

const char* to_string(RunState s) {
  switch (s) {
    case RunState::Idle: return "idle";
    case RunState::Running: return "running";
    case RunState::Paused: return "paused";
    case RunState::Done: return "done";
    default: return "error";
  }
}

std::string spec_problem(const ModelConfig& model, const TrainConfig& train, const SparseSpec& spec,
                         int64_t probe_tokens) {
  std::string why = attention_problem(probe_tokens, probe_tokens, model.num_heads, model.num_kv_heads, model.head_dim,
                                      spec);
  if (!why.empty()) return why;
  ModelConfig m = model;
  m.block_size = spec.block_size;
  m.block_counts = spec.top_k;
  try {
    validate(train, m);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

struct Session::Impl {
  SessionOptions opts;

  // --- shared with callers, guarded by mu
  mutable std::mutex mu;
  mutable std::condition_variable wake, idle;
  std::deque<std::function<void()>> commands;
  uint64_t queued = 0, applied = 0;
  bool quit = false;
  std::atomic<bool> cancel{false};  // stops a running analysis when the session closes
  uint64_t idle_at = 0;  // `applied` the last time the worker had nothing pending
  std::shared_ptr<const Snapshot> snap = std::make_shared<Snapshot>();

  // --- owned by the worker thread
  PreparedData data;
  std::shared_ptr<Transformer> model;
  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<TrainingLoop> training;  // no metrics file, no periodic checkpoints: the app saves on request
  RunState state = RunState::Idle;
  std::string status = "starting", error, spec_problem;
  SparseSpec spec;
  AttnMode inference = AttnMode::Full;
  std::vector<int> probe;
  std::string probe_text;
  bool analysis_dirty = true;
  int64_t analyzed_step = -1;
  std::shared_ptr<const Analysis> analysis;
  int64_t version = 0;
  std::thread worker;

  void post(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(mu);
      commands.push_back(std::move(f));
      ++queued;
    }
    wake.notify_all();
  }

  void publish() {
    auto s = std::make_shared<Snapshot>();
    s->version = ++version;
    s->state = state;
    s->status = status;
    s->error = error;
    s->step = trainer ? trainer->current_step() : 0;
    s->model = model ? model->config() : opts.model;
    s->train = trainer ? trainer->train_config() : opts.train;
    s->total_steps = s->train.steps;
    s->spec = spec;
    s->inference = inference;
    if (training) s->history = training->history();
    s->analysis = analysis;
    s->spec_problem = spec_problem;
    s->attention_fallback = last_fallback();
    if (analysis)
      for (int t : analysis->tokens) s->probe_pieces.push_back(data.tokenizer.piece(t));
    std::lock_guard<std::mutex> lock(mu);
    snap = std::move(s);
  }

  void make_trainer() {
    training.reset();
    trainer = std::make_unique<Trainer>(model, opts.train, data.tokens);
    training = std::make_unique<TrainingLoop>(*trainer, LoopOptions{});
    spec = trainer->spec();
  }

  void init() {
    status = "preparing data (tokenizer, token cache)";
    publish();
    if (!opts.checkpoint.empty()) {
      LoadedCheckpoint ck = load_checkpoint(opts.checkpoint);
      opts.model = ck.config;
      data = prepare_data(opts.corpus, ck.config.vocab_size, opts.work_dir + "/cache", tokenizer_file(ck.tokenizer));
      model = ck.model;
    } else {
      data = prepare_data(opts.corpus, opts.model.vocab_size, opts.work_dir + "/cache");
      model = std::make_shared<Transformer>(opts.model);
      model->init_weights(opts.train.seed);
    }
    make_trainer();
    set_probe_from_text(opts.probe_text);
    status = opts.checkpoint.empty() ? "ready: press start to train" : "loaded " + opts.checkpoint;
  }

  std::string tokenizer_file(const Tokenizer& tok) {
    std::string path = opts.work_dir + "/cache/loaded_tokenizer.model";
    make_dirs(opts.work_dir + "/cache");
    write_file_atomic(path, tok.serialized());
    return path;
  }

  void set_probe_from_text(const std::string& text) {
    probe_text = text;
    if (!text.empty()) {
      probe = data.tokenizer.encode(text);
      if (probe.empty()) throw Error("probe text has no tokens");
    } else {
      const auto& val = data.tokens->val;
      probe.assign(val.begin(), val.begin() + std::min<size_t>(val.size(), size_t(opts.probe_tokens)));
    }
    if (probe.size() > 32768) probe.resize(32768);
    analysis_dirty = true;
  }

  void set_spec(SparseSpec s) {
    const ModelConfig& mc = model ? model->config() : opts.model;
    std::string problem = ssalab::spec_problem(mc, trainer ? trainer->train_config() : opts.train, s, int64_t(probe.size()));
    if (problem.empty() && trainer) {
      try {
        trainer->set_spec(s);
      } catch (const Error& e) {
        problem = e.what();
      }
    }
    spec_problem = problem;
    if (problem.empty()) {
      spec = s;
      analysis_dirty = true;
    }
  }

  void run_analysis() {
    AnalysisRequest req;
    req.tokens = probe;
    req.inference = inference;
    req.spec = spec;
    req.cancel = &cancel;
    req.token_losses = true;  // the Text probe colours tokens by what sparse attention costs them
    analysis = std::make_shared<const Analysis>(analyze(*model, req));
    analysis_dirty = false;
    analyzed_step = trainer ? trainer->current_step() : 0;
  }

  void train_one_step() {
    MetricPoint m = training->advance();
    status = "training: step " + std::to_string(m.step) + "/" + std::to_string(trainer->train_config().steps);
    if (training->done()) {
      state = RunState::Done;
      status = "finished " + std::to_string(m.step) + " steps";
      analysis_dirty = true;
    }
  }

  void loop() {
    if (opts.background_priority) lower_this_thread_priority();
    for (;;) {
      std::deque<std::function<void()>> todo;
      {
        std::unique_lock<std::mutex> lock(mu);
        if (commands.empty() && (!analysis_dirty || !model)) {
          idle_at = applied;
          idle.notify_all();
          if (!quit && state != RunState::Running) wake.wait_for(lock, std::chrono::milliseconds(200));
        }
        if (quit) break;
        todo.swap(commands);
      }
      for (auto& f : todo) {
        try {
          f();
        } catch (const std::exception& e) {
          error = e.what();
          status = "error: " + error;
        }
        std::lock_guard<std::mutex> lock(mu);
        ++applied;
      }
      if (!todo.empty()) publish();
      if (!model) continue;  // initialisation failed; only load can help
      try {
        if (state == RunState::Running) {
          train_one_step();
          if (trainer->current_step() - analyzed_step >= std::max(1, opts.analyze_every)) analysis_dirty = true;
          publish();
        }
        if (analysis_dirty) {
          run_analysis();
          publish();
        }
      } catch (const std::exception& e) {
        error = e.what();
        status = "error: " + error;
        if (state == RunState::Running) state = RunState::Error;
        analysis_dirty = false;
        publish();
      }
    }
  }
};

Session::Session(SessionOptions opts) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  Impl* s = impl_.get();
  s->post([s] { s->init(); });
  s->worker = std::thread([s] { s->loop(); });
}

Session::~Session() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->quit = true;
    impl_->cancel = true;
  }
  impl_->wake.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

void Session::start() {
  Impl* s = impl_.get();
  s->post([s] {
    if (!s->trainer) throw Error("nothing to train: the session failed to initialise");
    if (s->trainer->current_step() >= s->trainer->train_config().steps)
      throw Error("training already reached its " + std::to_string(s->trainer->train_config().steps) + " steps");
    s->state = RunState::Running;
    s->error.clear();
  });
}
void Session::pause() {
  Impl* s = impl_.get();
  s->post([s] {
    if (s->state == RunState::Running) s->state = RunState::Paused, s->status = "paused";
  });
}
void Session::resume() {
  Impl* s = impl_.get();
  s->post([s] {
    if (s->state == RunState::Paused) s->state = RunState::Running;
  });
}
void Session::stop() {
  Impl* s = impl_.get();
  s->post([s] {
    if (s->state == RunState::Running || s->state == RunState::Paused) {
      s->state = RunState::Done;
      s->status = "stopped at step " + std::to_string(s->trainer->current_step());
      s->analysis_dirty = true;
    }
  });
}
void Session::set_method(Method m) {
  Impl* s = impl_.get();
  s->post([s, m] { s->trainer->mutable_train_config().method = m; });
}
void Session::set_p_full(double p) {
  Impl* s = impl_.get();
  s->post([s, p] {
    if (!(p >= 0 && p <= 1)) throw Error("p must be in [0, 1]");
    s->trainer->mutable_train_config().p_full = p;
  });
}
void Session::set_alpha(double a) {
  Impl* s = impl_.get();
  s->post([s, a] {
    if (!(a >= 0 && std::isfinite(a))) throw Error("alpha must be finite and >= 0");
    s->trainer->mutable_train_config().alpha = a;
  });
}
void Session::set_lr(double lr) {
  Impl* s = impl_.get();
  s->post([s, lr] {
    if (!(lr > 0 && std::isfinite(lr))) throw Error("lr must be positive");
    s->trainer->mutable_train_config().lr = lr;
  });
}
void Session::set_top_k(int k) {
  Impl* s = impl_.get();
  s->post([s, k] { s->set_spec({s->spec.block_size, k, s->spec.rule}); });
}
void Session::set_block_size(int bs) {
  Impl* s = impl_.get();
  s->post([s, bs] { s->set_spec({bs, s->spec.top_k, s->spec.rule}); });
}
void Session::set_selection_rule(SelectionRule r) {
  Impl* s = impl_.get();
  s->post([s, r] { s->set_spec({s->spec.block_size, s->spec.top_k, r}); });
}
void Session::set_inference(AttnMode m) {
  Impl* s = impl_.get();
  s->post([s, m] {
    s->inference = m;
    s->analysis_dirty = true;
  });
}
void Session::set_probe_text(const std::string& text) {
  Impl* s = impl_.get();
  s->post([s, text] { s->set_probe_from_text(text); });
}
void Session::set_probe_tokens(const std::vector<int>& tokens) {
  Impl* s = impl_.get();
  s->post([s, tokens] {
    if (tokens.empty()) throw Error("probe has no tokens");
    s->probe = tokens;
    s->analysis_dirty = true;
  });
}
void Session::save(const std::string& dir) {
  Impl* s = impl_.get();
  s->post([s, dir] {
    s->trainer->save(dir, s->data.tokenizer, {{"corpus", s->data.corpus}});
    s->status = "saved " + dir;
  });
}
void Session::load(const std::string& dir) {
  Impl* s = impl_.get();
  s->post([s, dir] {
    LoadedCheckpoint ck = load_checkpoint(dir);  // throws before anything changes
    if (ck.tokenizer.serialized() != s->data.tokenizer.serialized())
      s->data = prepare_data(s->opts.corpus, ck.config.vocab_size, s->opts.work_dir + "/cache",
                             s->tokenizer_file(ck.tokenizer));
    s->model = ck.model;
    s->opts.model = ck.config;
    if (ck.state) s->opts.train = ck.state->train;
    s->make_trainer();
    if (ck.state) s->trainer->resume(dir);
    s->state = RunState::Idle;
    s->set_probe_from_text(s->probe_text);
    s->status = "loaded " + dir;
  });
}
void Session::request_analysis() {
  Impl* s = impl_.get();
  s->post([s] { s->analysis_dirty = true; });
}

std::shared_ptr<const Snapshot> Session::snapshot() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->snap;
}

void Session::wait_idle() const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  const uint64_t target = impl_->queued;
  impl_->idle.wait(lock, [&] { return impl_->quit || impl_->idle_at >= target; });
}

}  // namespace ssalab
