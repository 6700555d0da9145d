#include "engine/train/run.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/checkpoint/checkpoint.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

static uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

PreparedData prepare_data(const std::string& corpus_in, int vocab_size, const std::string& cache_dir,
                          const std::string& tokenizer_path) {
  PreparedData d;
  d.corpus = corpus_in.empty() ? default_corpus_path() : corpus_in;
  std::vector<Document> docs = read_corpus(d.corpus);
  std::string abs = std::filesystem::absolute(d.corpus).lexically_normal().string();
  char key[32];
  std::snprintf(key, sizeof key, "%016llx", (unsigned long long)fnv1a(abs));
  make_dirs(cache_dir);
  if (!tokenizer_path.empty()) {
    d.tokenizer = Tokenizer::load(tokenizer_path);
  } else {
    std::string path = cache_dir + "/tok-" + key + "-v" + std::to_string(vocab_size) + ".model";
    if (file_exists(path)) {
      try {
        d.tokenizer = Tokenizer::load(path);
      } catch (const Error&) {
        d.tokenizer = Tokenizer::train(docs, vocab_size, path);  // corrupt cache: retrain
      }
    } else {
      d.tokenizer = Tokenizer::train(docs, vocab_size, path);
    }
  }
  char tkey[32];
  std::snprintf(tkey, sizeof tkey, "%016llx", (unsigned long long)fnv1a(d.tokenizer.serialized()));
  std::string cache = cache_dir + "/tokens-" + key + "-" + tkey + ".bin";
  d.tokens = std::make_shared<TokenData>(load_token_data(docs, d.corpus, d.tokenizer, cache));
  return d;
}

nlohmann::json to_json(const MetricPoint& m) {
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  return {{"step", m.step},           {"loss", num(m.loss)},
          {"ce_full", num(m.ce_full)}, {"ce_sparse", num(m.ce_sparse)},
          {"sparsity_loss", num(m.sparsity_loss)}, {"commitment_loss", num(m.commitment_loss)},
          {"grad_norm", num(m.grad_norm)}, {"lr", m.lr},
          {"tokens_per_s", num(m.tokens_per_s)}, {"val_ppl_full", num(m.val_ppl_full)},
          {"val_ppl_sparse", num(m.val_ppl_sparse)}};
}

static std::string fmt_time(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  return buf;
}

static void print_progress(const MetricPoint& m, int64_t total, double elapsed, int64_t done_here, bool tty) {
  const int width = 24;
  int filled = int(width * double(m.step) / double(total));
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  double eta = done_here > 0 ? elapsed / done_here * double(total - m.step) : 0;
  std::fprintf(stderr, "%s[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s%s", tty ? "\r" : "", bar.c_str(),
               (long long)m.step, (long long)total, m.loss, m.tokens_per_s, fmt_time(eta).c_str(), tty ? "" : "\n");
  std::fflush(stderr);
}

RunResult run_training(const RunOptions& opt) {
  auto t_start = std::chrono::steady_clock::now();
  validate(opt.train, opt.model);
  opt.model.validate();
  PreparedData data = prepare_data(opt.corpus, opt.model.vocab_size, opt.cache_dir, opt.tokenizer);
  if (data.tokenizer.vocab_size() != opt.model.vocab_size)
    throw Error("tokenizer has " + std::to_string(data.tokenizer.vocab_size()) + " pieces but the model's vocab_size is " +
                std::to_string(opt.model.vocab_size));
  make_dirs(opt.out_dir);
  const std::string ckpt_dir = opt.out_dir + "/checkpoint";
  recover_directory(ckpt_dir);

  auto model = std::make_shared<Transformer>(opt.model);
  model->init_weights(opt.train.seed);
  Trainer trainer(model, opt.train, data.tokens);
  std::string resume = opt.resume == "auto" ? (file_exists(ckpt_dir + "/trainer_state.json") ? ckpt_dir : "") : opt.resume;
  if (!resume.empty()) {
    trainer.resume(resume);
    std::fprintf(stderr, "resumed from %s at step %lld\n", resume.c_str(), (long long)trainer.current_step());
  }
  nlohmann::json extra = {{"corpus", data.corpus}};
  std::ofstream log(opt.out_dir + "/metrics.jsonl", std::ios::app);
  if (!log) throw Error("cannot open " + opt.out_dir + "/metrics.jsonl for appending");
  write_file_atomic(opt.out_dir + "/run_config.json",
                    nlohmann::json{{"model", to_json(opt.model)}, {"train", to_json(opt.train)}, {"corpus", data.corpus}}
                            .dump(2) + "\n");

  RunResult res;
  const TrainConfig& tc = opt.train;
  const bool tty = opt.progress && ::isatty(2);
  const int64_t first = trainer.current_step();
  const int64_t last = opt.stop_after >= 0 ? std::min<int64_t>(opt.stop_after, tc.steps) : tc.steps;
  auto loop_start = std::chrono::steady_clock::now();
  while (trainer.current_step() < last) {
    MetricPoint m;
    try {
      m = trainer.step();
    } catch (const Error& e) {
      if (tty) std::fprintf(stderr, "\n");
      throw Error(std::string(e.what()) + (file_exists(ckpt_dir) ? "; last good checkpoint: " + ckpt_dir : ""));
    }
    const bool final_step = m.step == tc.steps;
    if ((tc.eval_every > 0 && m.step % tc.eval_every == 0) || final_step) {
      auto v = trainer.validate(tc.eval_batches);
      m.val_ppl_full = v.first;
      m.val_ppl_sparse = v.second;
      res.val_ppl_full = v.first;
      res.val_ppl_sparse = v.second;
    }
    res.history.push_back(m);
    log << to_json(m).dump() << "\n";
    log.flush();
    if (opt.on_step) opt.on_step(m);
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_start).count();
    const bool print = opt.progress && (tty || m.step % std::max(1, tc.log_every * 10) == 0 || final_step);
    if (print) print_progress(m, tc.steps, elapsed, m.step - first, tty);
    if ((tc.save_every > 0 && m.step % tc.save_every == 0) || m.step == last) {
      trainer.save(ckpt_dir, data.tokenizer, extra);
      res.checkpoint = ckpt_dir;
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  res.final_step = trainer.current_step();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace ssalab
