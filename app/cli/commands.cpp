#include "app/cli/commands.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "engine/checkpoint/checkpoint.h"
#include "engine/eval/eval.h"
#include "engine/metrics/analysis.h"
#include "engine/model/transformer.h"
#include "engine/paradox/paradox.h"
#include "engine/report/chart.h"
#include "engine/train/run.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "views/view_math.h"

namespace ssalab::cli {

using nlohmann::json;

// "1e-3" -> number, "true" -> bool, "ssa" -> string: JSON's own parse decides.
static json parse_value(const std::string& v) {
  try {
    return json::parse(v);
  } catch (const std::exception&) {
    return json(v);
  }
}

void Settings::resolve() {
  json file;
  if (!config_file.empty()) {
    try {
      file = json::parse(read_file(config_file));
    } catch (const json::exception& e) {
      throw Error(config_file + " is not valid JSON (" + e.what() + ")");
    }
    if (file.contains("preset")) preset = file["preset"].get<std::string>();
  }
  json m = to_json(model_preset(preset)), t = to_json(TrainConfig{});
  auto merge = [](json& dst, const json& src, const std::string& what) {
    for (auto& [k, v] : src.items()) {
      if (!dst.contains(k)) throw Error("unknown " + what + " setting '" + k + "'");
      dst[k] = v;
    }
  };
  if (file.contains("model")) merge(m, file["model"], "model");
  if (file.contains("train")) merge(t, file["train"], "train");
  for (const std::string& o : overrides) {
    auto eq = o.find('='), dot = o.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq)
      throw Error("--set expects section.key=value (e.g. model.hidden_size=256), got '" + o + "'");
    std::string section = o.substr(0, dot), key = o.substr(dot + 1, eq - dot - 1);
    json patch = {{key, parse_value(o.substr(eq + 1))}};
    if (section == "model") merge(m, patch, "model");
    else if (section == "train") merge(t, patch, "train");
    else throw Error("--set: unknown section '" + section + "' (model | train)");
  }
  model = model_config_from_json(m);
  train = train_config_from_json(t);
  validate(train, model);
}

int cmd_train(const TrainArgs& a) {
  RunOptions o;
  o.model = a.settings.model;
  o.train = a.settings.train;
  o.corpus = a.corpus;
  o.tokenizer = a.tokenizer;
  o.cache_dir = a.cache_dir;
  o.out_dir = a.out_dir;
  o.resume = a.resume;
  o.stop_after = a.stop_after;
  o.progress = !a.quiet;
  std::fprintf(stderr, "training %s model (%.2fM parameters), method %s, %lld steps of %d x %d tokens -> %s\n",
               a.settings.preset.c_str(), o.model.num_parameters() / 1e6, to_string(o.train.method),
               (long long)o.train.steps, o.train.batch_size * o.train.grad_accum, o.train.seq_len, o.out_dir.c_str());
  RunResult r = run_training(o);
  json summary = {{"final_step", r.final_step},       {"seconds", r.seconds},
                  {"val_ppl_full", r.val_ppl_full},   {"val_ppl_sparse", r.val_ppl_sparse},
                  {"checkpoint", r.checkpoint},       {"metrics", a.out_dir + "/metrics.jsonl"}};
  if (!r.history.empty()) summary["final_loss"] = r.history.back().loss;
  write_file_atomic(a.out_dir + "/summary.json", summary.dump(2) + "\n");
  std::cout << summary.dump(2) << std::endl;
  return 0;
}

int cmd_eval(const EvalArgs& a) {
  LoadedCheckpoint ck = load_checkpoint(a.checkpoint);
  torch::Device dev = resolve_device(a.device);
  ck.model->to(dev);
  std::string corpus = a.corpus;
  if (corpus.empty() && ck.state && ck.state->extra.contains("corpus")) corpus = ck.state->extra["corpus"];
  PreparedData data = prepare_data(corpus, ck.config.vocab_size, a.cache_dir, [&] {
    std::string p = a.cache_dir + "/eval_tokenizer.model";
    make_dirs(a.cache_dir);
    write_file_atomic(p, ck.tokenizer.serialized());
    return p;
  }());
  EvalOptions eo;
  eo.seq_len = a.seq_len > 0 ? a.seq_len : (ck.state ? ck.state->train.seq_len : ck.config.max_position);
  eo.batches = a.batches;
  eo.batch_size = a.batch_size;
  std::vector<int> ks = a.top_ks, bss = a.block_sizes;
  if (bss.empty()) bss = {ck.config.block_size};
  if (ks.empty())  // the paper's RF sweep, scaled: k doubling from the trained k up to the whole context
    for (int k = std::max(1, ck.config.block_counts / 2); k * ck.config.block_size <= eo.seq_len; k *= 2) ks.push_back(k);
  PerplexityReport pr = evaluate_perplexity(*ck.model, data.tokens->val, eo, ks, bss);
  json out = {{"checkpoint", a.checkpoint}, {"seq_len", eo.seq_len}, {"perplexity", to_json(pr)}};
  if (a.needle) {
    std::vector<int> ctx = a.needle_contexts;
    if (ctx.empty()) ctx = {eo.seq_len, 2 * eo.seq_len, 4 * eo.seq_len};
    SparseSpec own{ck.config.block_size, ck.config.block_counts};
    auto full = passkey_test(*ck.model, ck.tokenizer, ctx, {0.1, 0.5, 0.9}, a.needle_trials, AttnMode::Full, own);
    auto sparse = passkey_test(*ck.model, ck.tokenizer, ctx, {0.1, 0.5, 0.9}, a.needle_trials, AttnMode::Sparse, own);
    full.insert(full.end(), sparse.begin(), sparse.end());
    out["passkey"] = to_json(full);
  }
  std::cout << out.dump(2) << std::endl;
  if (!a.out.empty()) write_file_atomic(a.out, out.dump(2) + "\n");
  return 0;
}

void write_heatmap_png(const std::string& path, const float* values, int rows, int cols, bool log_scale, int scale_up) {
  const views::Scale sc = log_scale ? views::Scale::Log : views::Scale::Linear;
  views::Range range = views::auto_range(values, size_t(rows) * cols, sc);
  std::vector<uint32_t> rgba(size_t(rows) * cols);
  views::colorize(values, rgba.size(), sc, range, rgba.data());
  const int W = cols * scale_up, H = rows * scale_up;
  std::vector<uint32_t> big(size_t(W) * H);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) big[size_t(y) * W + x] = rgba[size_t(y / scale_up) * cols + x / scale_up];
  write_png_atomic(path, big.data(), W, H);
}

int cmd_analyze(const AnalyzeArgs& a) {
  LoadedCheckpoint ck = load_checkpoint(a.checkpoint);
  ck.model->to(resolve_device(a.device));
  std::string text = a.text;
  if (!a.text_file.empty()) text = read_file(a.text_file);
  if (text.empty()) throw Error("analyze needs --text or --text-file");
  AnalysisRequest req;
  req.tokens = ck.tokenizer.encode(text);
  req.inference = attn_mode_from_string(a.mode);
  req.spec = {a.block_size > 0 ? a.block_size : ck.config.block_size, a.top_k > 0 ? a.top_k : ck.config.block_counts};
  Analysis an = analyze(*ck.model, req);
  make_dirs(a.out_dir);
  json j = to_json(an);
  j["checkpoint"] = a.checkpoint;
  write_file_atomic(a.out_dir + "/analysis.json", j.dump(2) + "\n");
  write_file_atomic(a.out_dir + "/analysis.csv", to_csv(an));
  if (a.png) {
    const int nc = an.n_cells, H = an.num_heads;
    const int up = std::max(1, 512 / std::max(1, nc));
    for (int l = 0; l < an.num_layers; ++l) {
      const auto& L = an.layers[l];
      // mean over heads, then one PNG per map kind
      for (auto [name, src] : {std::pair<const char*, const std::vector<float>*>{"full", &L.map_full},
                               {"sparse", &L.map_sparse}, {"dropped", &L.map_dropped}}) {
        std::vector<float> mean(size_t(nc) * nc, 0.f);
        for (int h = 0; h < H; ++h)
          for (size_t i = 0; i < mean.size(); ++i) mean[i] += (*src)[size_t(h) * nc * nc + i] / H;
        write_heatmap_png(a.out_dir + "/layer" + std::to_string(l) + "_" + name + ".png", mean.data(), nc, nc,
                          a.log_scale, up);
      }
    }
  }
  std::printf("%-6s %-5s %-10s %-9s %-9s %-9s %-9s\n", "layer", "head", "sparsity", "dropped", "entropy", "sink_tok",
              "sink_blk");
  for (int l = 0; l < an.num_layers; ++l)
    for (int h = 0; h < an.num_heads; ++h) {
      const HeadStats& s = an.layers[l].heads[h];
      std::printf("%-6d %-5d %-10.4f %-9.4f %-9.4f %-9.4f %-9.4f\n", l, h, s.sparsity, s.dropped, s.entropy,
                  s.sink_token, s.sink_block);
    }
  std::printf("mean AttnSparsity %.4f, mean entropy %.4f nats over %lld tokens (k=%d, block=%d, %s inference)\n",
              an.mean_sparsity(), an.mean_entropy(), (long long)an.T, an.spec.top_k, an.spec.block_size,
              to_string(an.inference));
  std::printf("wrote %s/analysis.json, analysis.csv%s\n", a.out_dir.c_str(), a.png ? " and layer*_{full,sparse,dropped}.png" : "");
  return 0;
}

int cmd_tokenizer(const TokenizerArgs& a) {
  if (a.action == "train") {
    if (a.out.empty()) throw Error("tokenizer train needs --out FILE.model");
    auto docs = read_corpus(a.corpus.empty() ? default_corpus_path() : a.corpus);
    Tokenizer tok = Tokenizer::train(docs, a.vocab, a.out);
    std::printf("trained %d-piece tokenizer on %zu documents -> %s\n", tok.vocab_size(), docs.size(), a.out.c_str());
    return 0;
  }
  if (a.action == "encode") {
    Tokenizer tok = Tokenizer::load(a.model);
    json ids = json::array(), pieces = json::array();
    for (int id : tok.encode(a.text)) ids.push_back(id), pieces.push_back(tok.piece(id));
    std::cout << json{{"ids", ids}, {"pieces", pieces}}.dump() << std::endl;
    return 0;
  }
  throw Error("tokenizer: unknown action '" + a.action + "' (train | encode)");
}

int cmd_info(const std::string& checkpoint) {
  LoadedCheckpoint ck = load_checkpoint(checkpoint);
  json j = {{"config", to_json(ck.config)}, {"parameters", ck.config.num_parameters()},
            {"tokenizer_pieces", ck.tokenizer.vocab_size()}};
  if (ck.state) j["trainer_state"] = {{"step", ck.state->step}, {"train", to_json(ck.state->train)}};
  std::cout << j.dump(2) << std::endl;
  return 0;
}

int cmd_paradox(const ParadoxArgs& a) {
  ParadoxOptions o;
  o.model = a.settings.model;
  o.train = a.settings.train;
  o.corpus = a.corpus;
  o.cache_dir = a.cache_dir;
  o.out_dir = a.out_dir;
  o.ship_dir = a.ship_dir;
  o.eval_batches = a.eval_batches;
  o.probes = a.probes;
  o.needle_trials = a.needle_trials;
  o.progress = !a.quiet;
  json res = run_paradox(o);
  res["command"] = a.command_line;
  write_paradox_report(res, a.out_dir + "/report");
  for (auto& c : res["claims"])
    std::printf("claim %d: %s -> %s\n  %s\n", c["id"].get<int>(), c["claim"].get<std::string>().c_str(),
                c["holds"].get<bool>() ? "holds" : "does not hold", c["detail"].get<std::string>().c_str());
  std::printf("report: %s/report/report.md (%.0f s)\n", a.out_dir.c_str(), res["seconds"].get<double>());
  return 0;
}

}  // namespace ssalab::cli
