#include "engine/train/run.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#ifdef SSALAB_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "engine/checkpoint/checkpoint.h"
#include "engine/memory/estimate.h"
#include "engine/train/loop.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/hash.h"

namespace ssalab {

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
  const torch::Device device = resolve_device(opt.train.device);
  require_memory(training_step_memory(opt.model, opt.train, device),
                 "a training step (batch " + std::to_string(opt.train.batch_size) + " x " +
                     std::to_string(opt.train.seq_len) + " tokens)",
                 device);
  std::shared_ptr<distributed::ProcessGroup> group;
  if (opt.ranks && opt.ranks->world_size > 1) {
    validate_shard(opt.train, opt.ranks->world_size);  // before the rendezvous, which would wait for nothing
    // processes of one machine share its cores
    if (opt.train.threads <= 0 && opt.ranks->local_world_size > 1)
      torch::set_num_threads(std::max(1, int(std::thread::hardware_concurrency()) / opt.ranks->local_world_size));
#ifdef SSALAB_WITH_CUDA
    // one GPU per process of a machine: the current device serves every
    // allocation made with the index-less "cuda" device
    if (device.is_cuda()) c10::cuda::set_device(c10::DeviceIndex(opt.ranks->local_rank % torch::cuda::device_count()));
#endif
    group = distributed::ProcessGroup::connect(*opt.ranks, device, opt.collective_timeout);
  }
  const bool lead = !group || group->rank() == 0;
  const std::string ckpt_dir = opt.out_dir + "/checkpoint";
  // rank 0 trains the tokenizer and fills the token cache; the others read them
  auto prepare = [&] {
    PreparedData d = prepare_data(opt.corpus, opt.model.vocab_size, opt.cache_dir, opt.tokenizer);
    if (d.tokenizer.vocab_size() != opt.model.vocab_size)
      throw Error("tokenizer has " + std::to_string(d.tokenizer.vocab_size()) +
                  " pieces but the model's vocab_size is " + std::to_string(opt.model.vocab_size));
    return d;
  };
  PreparedData data;
  if (lead) {
    data = prepare();
    make_dirs(opt.out_dir);
    recover_directory(ckpt_dir);
  }
  if (group) group->barrier();
  if (!lead) data = prepare();

  auto model = std::make_shared<Transformer>(opt.model);
  model->init_weights(opt.train.seed);
  Trainer trainer(model, opt.train, data.tokens, DataShard{0, 1, group});
  std::string resume = opt.resume == "auto" ? (file_exists(ckpt_dir + "/trainer_state.json") ? ckpt_dir : "") : opt.resume;
  if (!resume.empty()) {
    trainer.resume(resume);
    if (lead) std::fprintf(stderr, "resumed from %s at step %lld\n", resume.c_str(), (long long)trainer.current_step());
  }
  if (lead)
    write_file_atomic(opt.out_dir + "/run_config.json",
                      nlohmann::json{{"model", to_json(opt.model)},
                                     {"train", to_json(opt.train)},
                                     {"corpus", data.corpus},
                                     {"processes", group ? group->size() : 1}}
                              .dump(2) + "\n");
  LoopOptions lo;
  lo.last_step = opt.stop_after;
  if (lead) {
    lo.metrics_path = opt.out_dir + "/metrics.jsonl";
    lo.checkpoint_dir = ckpt_dir;
  }
  lo.validate = lead;
  lo.tokenizer = &data.tokenizer;
  lo.extra = {{"corpus", data.corpus}};
  TrainingLoop loop(trainer, lo);

  RunResult res;
  const bool progress = opt.progress && lead;
  const bool tty = progress && ::isatty(2);
  const int64_t first = trainer.current_step(), total = opt.train.steps;
  auto loop_start = std::chrono::steady_clock::now();
  while (!loop.done()) {
    MetricPoint m;
    try {
      m = loop.advance();
    } catch (const Error&) {
      if (tty) std::fprintf(stderr, "\n");
      throw;
    }
    if (opt.on_step) opt.on_step(m);
    if (lead && group && m.step == first + 1)
      if (const distributed::GradientSync* sync = trainer.gradient_sync())
        std::fprintf(stderr, "data-parallel (%s): gradients in %zu buckets, %zu of them summed during the backward pass\n",
                     group->backend(), sync->bucket_count(), sync->overlapped_buckets());
    if (lead && group && m.step == first + 1)
      if (const distributed::OptimizerShard* zero = trainer.optimizer_shard()) {
        const auto [held, all] = zero->state_bytes(trainer.optimizer());
        std::fprintf(stderr, "optimizer state sharded (ZeRO-1): rank 0 holds %.2f of %.2f MiB of AdamW moments\n",
                     held / 1048576.0, all / 1048576.0);
      }
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_start).count();
    const bool print = progress && (tty || m.step % std::max(1, opt.train.log_every * 10) == 0 || m.step == total);
    if (print) print_progress(m, total, elapsed, m.step - first, tty);
  }
  res.history = loop.history();
  res.val_ppl_full = loop.val_ppl_full();
  res.val_ppl_sparse = loop.val_ppl_sparse();
  res.checkpoint = loop.checkpoint();
  if (tty) std::fprintf(stderr, "\n");
  res.final_step = trainer.current_step();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace ssalab
