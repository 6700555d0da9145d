#include "engine/session/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "engine/checkpoint/checkpoint.h"
#include "engine/memory/estimate.h"
#include "engine/model/transformer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/train/run.h"
#include "engine/train/loop.h"
#include "engine/train/metrics_log.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/priority.h"

namespace ssalab {

namespace {
bool same_spec(const SparseSpec& a, const SparseSpec& b) {
  return a.block_size == b.block_size && a.top_k == b.top_k && a.rule == b.rule;
}
}  // namespace

const char* to_string(RunState s) {
  switch (s) {
    case RunState::Idle: return "idle";
    case RunState::Running: return "running";
    case RunState::Paused: return "paused";
    case RunState::Done: return "done";
    default: return "error";
  }
}

std::string spec_problem(const ModelConfig& model, const TrainConfig* train, const SparseSpec& spec,
                         int64_t probe_tokens) {
  std::string why = attention_problem(probe_tokens, probe_tokens, model.num_heads, model.num_kv_heads, model.head_dim,
                                      spec);
  if (!why.empty() || !train) return why;
  ModelConfig m = model;
  m.block_size = spec.block_size;
  m.block_counts = spec.top_k;
  try {
    validate(*train, m);
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
  std::atomic<bool> cancel_loading{false};  // stops a model load (cancel_load())
  uint64_t idle_at = 0;  // `applied` the last time the worker had nothing pending
  std::shared_ptr<const Snapshot> snap = std::make_shared<Snapshot>();

  // --- owned by the worker thread
  PreparedData data;
  std::shared_ptr<Transformer> model;
  std::unique_ptr<StreamingGeneration> generation;       // the one running or the latest
  std::shared_ptr<const GenerationState> generation_view;  // what the snapshot shows of it
  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<TrainingLoop> training;  // no metrics file, no periodic checkpoints: the app saves on request
  // null while a model is open for inspection only
  std::shared_ptr<const tokenizer::Tokenizer> text;  // encodes the probe, names its tokens
  std::string source, summary;  // the open model: as the user named it, the load plan's line
  std::string loading;          // the model being loaded, "" when none
  double load_progress = -1;
  uint64_t load_tickets = 0, loads_done = 0;  // tickets: guarded by mu; done: worker
  RunState state = RunState::Idle;
  std::string status = "starting", error, spec_problem;
  SparseSpec spec;
  AttnMode inference = AttnMode::Full;
  std::vector<int> probe;
  std::string probe_text;     // as set ("" = the default probe)
  std::string probe_as_text;  // the probe decoded
  bool analysis_dirty = true;
  int64_t analyzed_step = -1;
  std::weak_ptr<Transformer> analysed_model;  // the weights `analysis` was made with (weak: a replaced model is freed)
  std::shared_ptr<const Analysis> analysis;
  int64_t version = 0;
  std::thread worker;

  // A run followed read-only (attach)
  struct AttachedRun {
    std::string dir;
    MetricsLog log;
    int64_t total_steps = 0;
    std::string checkpoint_stamp;  // trainer_state.json's time and size when last opened
    int64_t checkpoint_step = -1;
    std::string problem;
    std::chrono::steady_clock::time_point retry_at{};  // after a failed open
  };
  std::unique_ptr<AttachedRun> attached;
  int64_t opened_step = -1;  // the training step of the checkpoint open() last opened (-1: none)

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
    s->trainable = trainer != nullptr;
    s->model_source = source;
    s->model_summary = summary;
    s->tokenizer_info = text ? text->describe() : "";
    s->load_progress = load_progress;
    s->loads_done = loads_done;
    s->loading = loading;
    s->probe_text = probe_as_text;
    s->spec = spec;
    s->inference = inference;
    if (training) s->history = training->history();
    if (attached) {
      s->attached_run = attached->dir;
      s->attached_checkpoint_step = attached->checkpoint_step;
      s->attach_problem = attached->problem;
      s->history = attached->log.points();
      s->step = s->history.empty() ? std::max<int64_t>(0, attached->checkpoint_step) : s->history.back().step;
      if (attached->total_steps > 0) s->total_steps = attached->total_steps;
    }
    s->analysis = analysis;
    s->generation = generation_view;
    s->spec_problem = spec_problem;
    s->attention_fallback = last_fallback();
    if (analysis)
      for (int t : analysis->tokens) s->probe_pieces.push_back(text ? text->id_to_token(t) : std::string());
    std::lock_guard<std::mutex> lock(mu);
    snap = std::move(s);
  }

  Trainer& need_trainer() {
    if (trainer) return *trainer;
    if (model) throw Error(source + " is open for inspection: training and saving run on ssalab's own models");
    throw Error("nothing to train: the session failed to initialise");
  }

  void make_trainer() {
    training.reset();
    trainer = std::make_unique<Trainer>(model, opts.train, data.tokens);
    training = std::make_unique<TrainingLoop>(*trainer, LoopOptions{});
    spec = trainer->spec();
  }

  void init() {
    if (!opts.attach.empty()) {
      probe_text = opts.probe_text;
      attach(opts.attach);
      return;
    }
    if (!opts.checkpoint.empty()) {
      probe_text = opts.probe_text;
      open(opts.checkpoint);
      return;
    }
    status = "preparing data (tokenizer, token cache)";
    publish();
    data = prepare_data(opts.corpus, opts.model.vocab_size, opts.work_dir + "/cache");
    model = std::make_shared<Transformer>(opts.model);
    model->init_weights(opts.train.seed);
    make_trainer();
    text = tokenizer::wrap_sentencepiece(data.tokenizer, "(trained for this session)");
    set_probe_from_text(opts.probe_text);
    status = "ready: press start to train";
  }

  // Loads `src` and makes it the session's model. Everything that can fail
  // (the load, the tokenizer, the probe) runs before the current model is
  // replaced, so a failed or cancelled load leaves the session as it was.
  // `inspect_only`: also an ssalab checkpoint opens for inspection (a run
  // another process trains), with no data prepared and no trainer.
  void open(const std::string& src, bool inspect_only = false) {
    loading = src;
    load_progress = 0;
    status = "loading " + src;
    publish();
    struct Finished {
      Impl* s;
      ~Finished() { s->loading.clear(), s->load_progress = -1; }
    } finished{this};
    LoadOptions lo;
    lo.device = resolve_device(opts.train.device);  // where the session trains and analyses
    lo.cancel = &cancel_loading;
    lo.on_plan = [this](const LoadPlan& p) {
      status = "loading " + p.summary();
      publish();
    };
    double shown = 0;
    lo.on_progress = [this, &shown](double f) {
      load_progress = f;
      if (f - shown >= 0.02) shown = f, publish();
    };
    LoadedCheckpoint ck = load_checkpoint(src, lo);
    // Ours: a sentencepiece model and no tokenizer.json; such a model trains here.
    const bool sentencepiece = ck.tokenizer_json.empty() && ck.tokenizer.vocab_size() > 0;
    const bool ours = sentencepiece && !inspect_only;
    std::shared_ptr<const tokenizer::Tokenizer> tok;
    PreparedData new_data;
    if (sentencepiece && inspect_only) {
      tok = tokenizer::wrap_sentencepiece(ck.tokenizer, src);
    } else if (ours) {
      if (!data.tokens || ck.tokenizer.serialized() != data.tokenizer.serialized()) {
        status = "preparing data (token cache) for " + src;
        publish();
        new_data = prepare_data(opts.corpus, ck.config.vocab_size, opts.work_dir + "/cache", tokenizer_file(ck.tokenizer));
      }
      tok = tokenizer::wrap_sentencepiece(ck.tokenizer, src);
    } else {
      try {
        tok = tokenizer::load_tokenizer(ck.dir);
      } catch (const tokenizer::TokenizerError& e) {
        throw Error(src + ": the app shows text, so it needs the model's tokenizer (" + e.what() + ")");
      }
    }
    std::vector<int> new_probe = probe_for(probe_text, *tok, ck.config, ours ? &new_data : nullptr);

    if (ours) {
      if (new_data.tokens) data = std::move(new_data);
      model = ck.model;
      opts.model = ck.config;
      if (ck.state) opts.train = ck.state->train;
      make_trainer();
      // a training checkpoint resumes; a shipped model (weights and config, no optimizer) starts training anew
      if (ck.state && file_exists(ck.dir + "/optimizer.pt")) trainer->resume(ck.dir);
    } else {
      training.reset();
      trainer.reset();
      model = ck.model;
      opts.model = ck.config;
      spec = model_sparse_spec(ck.config);
      spec_problem.clear();
    }
    text = std::move(tok);
    source = src;
    summary = ck.plan.summary();
    state = RunState::Idle;
    error.clear();
    set_probe(std::move(new_probe));
    status = "loaded " + src + (ours || inspect_only ? "" : ": open for inspection (training runs on ssalab's own models)");
    opened_step = ck.state ? ck.state->step : -1;
  }

  void attach(const std::string& dir) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) throw Error("attach: " + dir + " is not a folder");
    if (!file_exists(dir + "/metrics.jsonl") && !file_exists(dir + "/run_config.json") &&
        !file_exists(dir + "/checkpoint/trainer_state.json"))
      throw Error("attach: " + dir + " is not a training run's folder (no metrics.jsonl, run_config.json or checkpoint/)");
    auto run = std::make_unique<AttachedRun>();
    run->dir = dir;
    run->log = MetricsLog(dir + "/metrics.jsonl");
    if (state == RunState::Running) state = RunState::Paused;
    attached = std::move(run);
    status = "attached to " + dir;
    follow_attached();
  }

  // One look at the followed run: new metrics lines, a new checkpoint.
  void follow_attached() {
    AttachedRun& run = *attached;
    bool changed = run.log.poll();
    if (run.total_steps == 0 && file_exists(run.dir + "/run_config.json")) {
      run.total_steps = -1;  // unreadable: the curves do without
      try {
        auto j = nlohmann::json::parse(read_file(run.dir + "/run_config.json"), nullptr, /*allow_exceptions=*/false);
        const nlohmann::json* steps = j.is_object() && j.contains("train") && j["train"].is_object() &&
                                              j["train"].contains("steps")
                                          ? &j["train"]["steps"]
                                          : nullptr;
        if (steps && steps->is_number_integer() && steps->get<int64_t>() > 0) run.total_steps = steps->get<int64_t>();
      } catch (const Error&) {
      }
    }
    const std::string state_file = run.dir + "/checkpoint/trainer_state.json";
    std::error_code ec;
    const auto when = std::filesystem::last_write_time(state_file, ec);
    const auto size = ec ? 0 : std::filesystem::file_size(state_file, ec);
    const std::string stamp = ec ? "" : std::to_string(when.time_since_epoch().count()) + "/" + std::to_string(size);
    const auto now = std::chrono::steady_clock::now();
    if (!stamp.empty() && stamp != run.checkpoint_stamp && now >= run.retry_at) {
      try {
        open(run.dir + "/checkpoint", /*inspect_only=*/true);
        run.checkpoint_stamp = stamp;
        run.checkpoint_step = opened_step;
        run.problem.clear();
      } catch (const std::exception& e) {
        // caught half-way through being replaced, or broken: the model open
        // stays, and it is tried again a little later
        run.problem = e.what();
        run.retry_at = now + std::chrono::seconds(2);
      }
      changed = true;
    }
    if (changed) {
      status = "attached to " + run.dir + ": step " +
               std::to_string(run.log.points().empty() ? 0 : run.log.points().back().step) +
               (run.checkpoint_step >= 0 ? ", views at the checkpoint of step " + std::to_string(run.checkpoint_step)
                                         : ", no checkpoint yet");
      publish();
    }
  }

  std::string tokenizer_file(const Tokenizer& tok) {
    std::string path = opts.work_dir + "/cache/loaded_tokenizer.model";
    make_dirs(opts.work_dir + "/cache");
    write_file_atomic(path, tok.serialized());
    return path;
  }

  // The probe for `text` ("" = the default) in `tok`'s ids, checked against
  // the model's vocabulary. The default is the start of the validation split
  // for a model of ours (`own_data`: the data it trains on, or null to use
  // the session's), else the start of the corpus's last document.
  std::vector<int> probe_for(const std::string& text_in, const tokenizer::Tokenizer& tok, const ModelConfig& mc,
                             const PreparedData* own_data) const {
    std::vector<int> ids;
    const bool ours = own_data != nullptr;
    if (!text_in.empty()) {
      for (int32_t id : tok.encode(text_in, /*add_special_tokens=*/!ours)) ids.push_back(id);
      if (ids.empty()) throw Error("probe text has no tokens");
    } else if (ours) {
      const PreparedData& d = own_data->tokens ? *own_data : data;
      const auto& val = d.tokens->val;
      ids.assign(val.begin(), val.begin() + std::min<size_t>(val.size(), size_t(opts.probe_tokens)));
    } else {
      std::vector<Document> docs = read_corpus(opts.corpus.empty() ? default_corpus_path() : opts.corpus);
      const std::string& doc = docs.back().text;
      size_t n = std::min(doc.size(), size_t(opts.probe_tokens) * 8);
      while (n < doc.size() && (static_cast<unsigned char>(doc[n]) & 0xC0) == 0x80) --n;  // whole characters
      for (int32_t id : tok.encode(std::string_view(doc).substr(0, n))) ids.push_back(id);
      if (ids.size() > size_t(opts.probe_tokens)) ids.resize(size_t(opts.probe_tokens));
    }
    if (ids.size() > 32768) ids.resize(32768);
    for (int id : ids)
      if (id < 0 || id >= mc.vocab_size)
        throw Error("the probe's token id " + std::to_string(id) + " is outside the model's vocabulary (" +
                    std::to_string(mc.vocab_size) + ")");
    return ids;
  }

  void set_probe(std::vector<int> ids) {
    probe = std::move(ids);
    probe_as_text = text ? text->decode(std::vector<int32_t>(probe.begin(), probe.end())) : "";
    analysis_dirty = true;
  }

  void set_probe_from_text(const std::string& t) {
    std::vector<int> ids = probe_for(t, *text, model->config(), trainer ? &data : nullptr);
    probe_text = t;
    set_probe(std::move(ids));
  }

  void set_spec(SparseSpec s) {
    const ModelConfig& mc = model ? model->config() : opts.model;
    std::string problem =
        ssalab::spec_problem(mc, trainer ? &trainer->train_config() : nullptr, s, int64_t(probe.size()));
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
    const int64_t step = trainer ? trainer->current_step() : 0;
    // only the selection changed since the last analysis of these weights and
    // tokens under full inference: its kept q and k still hold (reanalyze())
    const bool selection_only = analysis && analysed_model.lock() == model && analyzed_step == step &&
                                inference == AttnMode::Full && analysis->inference == AttnMode::Full &&
                                analysis->tokens == probe && !analysis->layers.empty() &&
                                analysis->layers[0].q.defined() && !same_spec(analysis->spec, spec);
    if (!selection_only) {
      analysis = std::make_shared<const Analysis>(analyze(*model, req));
    } else {
      // The slider's change reaches the views with selection and statistics
      // alone; the sparse stream's token losses (a forward pass) follow in a
      // second publication. The full stream's do not depend on the selection.
      req.token_losses = false;
      Analysis fresh = reanalyze(*model, *analysis, req);
      fresh.nll_full = analysis->nll_full;
      analysis = std::make_shared<const Analysis>(std::move(fresh));
      publish();
      auto with_losses = std::make_shared<Analysis>(*analysis);
      const auto t0 = std::chrono::steady_clock::now();
      with_losses->nll_sparse = stream_token_nll(*model, probe, AttnMode::Sparse, spec);
      with_losses->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      analysis = std::move(with_losses);
    }
    analysis_dirty = false;
    analysed_model = model;
    analyzed_step = step;
  }

  bool generating() const { return generation && generation->running(); }

  void start_generation(const GenerationRequest& r) {
    if (!model || !text) throw Error("no model to generate with yet");
    if (state == RunState::Running) state = RunState::Paused;  // the cache needs weights that hold still
    generation.reset();  // a running one ends here, its cache freed before the new one is taken
    // as the probe is read: ssalab's own models were trained without BOS,
    // others get what their tokenizer adds
    generation = std::make_unique<StreamingGeneration>(model, text, r, spec, /*add_special_tokens=*/!trainer);
    status = "generating";
    publish_generation();
  }

  void stop_generation(const std::string& why) {
    if (!generating()) return;
    generation->stop(why);
    publish_generation();
  }

  void generation_step() {
    if (generation->model() != model.get() || state == RunState::Running) {
      stop_generation(state == RunState::Running ? "stopped: training changes the weights"
                                                 : "stopped: the model changed");
      return;
    }
    generation->step();
    if (!generation->running()) status = "generated " + std::to_string(generation->state().new_ids.size()) + " tokens (" + generation->state().stop_reason + ")";
    publish_generation();
  }

  void publish_generation() {
    generation_view = std::make_shared<const GenerationState>(generation->state());
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
        if (commands.empty() && (!analysis_dirty || !model) && !generating()) {
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
      if (attached) {
        try {
          follow_attached();
        } catch (const std::exception& e) {
          attached->problem = e.what();
        }
      }
      if (!model) continue;  // initialisation failed or nothing to show yet; only load or attach can help
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
        if (generating()) {
          generation_step();
          publish();
        }
      } catch (const std::exception& e) {
        if (generating()) generation->stop(std::string("error: ") + e.what()), publish_generation();
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
    if (s->attached)
      throw Error("attached to " + s->attached->dir + ", which another process trains: detach to train here");
    s->need_trainer();
    const TrainConfig& tc = s->trainer->train_config();
    require_memory(training_step_memory(s->trainer->model().config(), tc, s->trainer->device()),
                   "a training step (batch " + std::to_string(tc.batch_size) + " x " + std::to_string(tc.seq_len) +
                       " tokens)",
                   s->trainer->device());
    if (s->trainer->current_step() >= s->trainer->train_config().steps)
      throw Error("training already reached its " + std::to_string(s->trainer->train_config().steps) + " steps");
    s->state = RunState::Running;
    s->error.clear();
  });
}
void Session::generate(const GenerationRequest& request) {
  Impl* s = impl_.get();
  s->post([s, request] { s->start_generation(request); });
}

void Session::stop_generation() {
  Impl* s = impl_.get();
  s->post([s] { s->stop_generation("stopped"); });
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
  s->post([s, m] { s->need_trainer().mutable_train_config().method = m; });
}
void Session::set_p_full(double p) {
  Impl* s = impl_.get();
  s->post([s, p] {
    if (!(p >= 0 && p <= 1)) throw Error("p must be in [0, 1]");
    s->need_trainer().mutable_train_config().p_full = p;
  });
}
void Session::set_alpha(double a) {
  Impl* s = impl_.get();
  s->post([s, a] {
    if (!(a >= 0 && std::isfinite(a))) throw Error("alpha must be finite and >= 0");
    s->need_trainer().mutable_train_config().alpha = a;
  });
}
void Session::set_lr(double lr) {
  Impl* s = impl_.get();
  s->post([s, lr] {
    if (!(lr > 0 && std::isfinite(lr))) throw Error("lr must be positive");
    s->need_trainer().mutable_train_config().lr = lr;
  });
}
void Session::change_spec(std::function<void(SparseSpec&)> change) {
  Impl* s = impl_.get();
  s->post([s, change] {
    SparseSpec spec = s->spec;
    change(spec);
    s->set_spec(spec);
  });
}
void Session::set_top_k(int k) {
  change_spec([k](SparseSpec& spec) { spec.top_k = k; });
}
void Session::set_block_size(int bs) {
  change_spec([bs](SparseSpec& spec) { spec.block_size = bs; });
}
void Session::set_selection_rule(SelectionRule r) {
  change_spec([r](SparseSpec& spec) { spec.rule = r; });
}
void Session::set_pooled_keys(PooledKeys p) {
  change_spec([p](SparseSpec& spec) { spec.pooled_keys = p; });
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
    for (int id : tokens)
      if (!s->model || id < 0 || id >= s->model->config().vocab_size)
        throw Error("probe token id " + std::to_string(id) + " is outside the model's vocabulary");
    s->set_probe(tokens);
  });
}
void Session::save(const std::string& dir) {
  Impl* s = impl_.get();
  s->post([s, dir] {
    s->need_trainer().save(dir, s->data.tokenizer, {{"corpus", s->data.corpus}});
    s->status = "saved " + dir;
  });
}
uint64_t Session::load(const std::string& dir_or_id) {
  Impl* s = impl_.get();
  s->cancel_loading = false;  // a cancel meant for an earlier load does not stop this one
  uint64_t ticket;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    ticket = ++s->load_tickets;
  }
  s->post([s, dir_or_id, ticket] {
    struct Answered {
      Impl* s;
      uint64_t ticket;
      ~Answered() { s->loads_done = ticket; }  // also when open() throws: the error goes out with it
    } answered{s, ticket};
    s->open(dir_or_id);
    s->attached.reset();  // the model the user opened replaces the followed run
  });
  return ticket;
}
void Session::attach(const std::string& run_dir) {
  Impl* s = impl_.get();
  s->post([s, run_dir] { s->attach(run_dir); });
}
void Session::detach() {
  Impl* s = impl_.get();
  s->post([s] {
    if (!s->attached) return;
    s->status = "detached from " + s->attached->dir;
    s->attached.reset();
  });
}
void Session::cancel_load() { impl_->cancel_loading = true; }
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
