#include "app/cli/commands.h"

#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "engine/checkpoint/checkpoint.h"
#include "engine/hub/hub.h"
#include "engine/eval/eval.h"
#include "engine/generate/generate.h"
#include "engine/metrics/analysis.h"
#include "engine/model/transformer.h"
#include "engine/paradox/paradox.h"
#include "engine/report/chart.h"
#include "engine/train/run.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/npy.h"
#include "engine/tokenizer/tokenizer.h"
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
  o.ranks = distributed::rank_info_from_environment();
  o.collective_timeout = std::chrono::milliseconds(int64_t(a.timeout_s * 1000));
  const bool lead = !o.ranks || o.ranks->rank == 0;
  if (o.ranks && lead)
    std::fprintf(stderr, "data-parallel: %d processes (rank 0 of %d writes %s)\n", o.ranks->world_size,
                 o.ranks->world_size, o.out_dir.c_str());
  if (lead)
    std::fprintf(stderr, "training %s model (%.2fM parameters), method %s, %lld steps of %d x %d tokens -> %s\n",
               a.settings.preset.c_str(), o.model.num_parameters() / 1e6, to_string(o.train.method),
               (long long)o.train.steps, o.train.batch_size * o.train.grad_accum, o.train.seq_len, o.out_dir.c_str());
  RunResult r = run_training(o);
  if (!lead) return 0;
  json summary = {{"final_step", r.final_step},       {"seconds", r.seconds},
                  {"val_ppl_full", r.val_ppl_full},   {"val_ppl_sparse", r.val_ppl_sparse},
                  {"checkpoint", r.checkpoint},       {"metrics", a.out_dir + "/metrics.jsonl"}};
  if (!r.history.empty()) summary["final_loss"] = r.history.back().loss;
  write_file_atomic(a.out_dir + "/summary.json", summary.dump(2) + "\n");
  std::cout << summary.dump(2) << std::endl;
  return 0;
}

// The tokenizer a model folder brings: tokenizer.json (as transformers runs
// it), else tokenizer.model.
static std::unique_ptr<tokenizer::Tokenizer> model_tokenizer(const LoadedCheckpoint& ck) {
  return tokenizer::load_tokenizer(ck.dir);
}

// The model's own selection (block size, k, rule, key pooling), with command-line overrides.
static SparseSpec inference_spec(const ModelConfig& c, int block_size, int top_k, const std::string& rule,
                                 const std::string& pooled_keys) {
  SparseSpec s = model_sparse_spec(c);
  if (block_size > 0) s.block_size = block_size;
  if (top_k > 0) s.top_k = top_k;
  if (!rule.empty()) s.rule = selection_rule_from_string(rule);
  if (!pooled_keys.empty()) s.pooled_keys = pooled_keys_from_string(pooled_keys);
  return s;
}

// Whitespace-separated integer token ids.
static std::vector<int32_t> read_token_ids(const std::string& path) {
  std::string text = read_file(path);
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    if (pos >= text.size()) break;
    size_t end = pos;
    while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    const std::string word = text.substr(pos, end - pos);
    char* stop = nullptr;
    errno = 0;
    const long long v = std::strtoll(word.c_str(), &stop, 10);
    if (*stop != '\0' || errno || v < 0 || v > INT32_MAX)
      throw Error(path + ": token " + std::to_string(ids.size()) + " is '" + word + "', not a token id");
    ids.push_back(int32_t(v));
    pos = end;
  }
  return ids;
}

// A text as the model reads it: our checkpoints' sentencepiece ids as they
// were trained (no BOS); an HF folder's tokenizer.json the way transformers
// encodes it (BOS as tokenizer_config.json says).
static std::vector<int32_t> encode_for_model(const LoadedCheckpoint& ck, const std::string& text) {
  if (!ck.tokenizer.serialized().empty()) {
    std::vector<int> ids = ck.tokenizer.encode(text);
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  return model_tokenizer(ck)->encode(text, /*add_special_tokens=*/true);
}

// eval --text-file / --token-ids: every token of one text, full and sparse.
static int eval_whole_text(const EvalArgs& a, LoadedCheckpoint& ck) {
  if (!a.text_file.empty() && !a.token_ids.empty()) throw Error("eval: give --text-file or --token-ids, not both");
  std::vector<int32_t> ids;
  std::string source;
  if (!a.text_file.empty()) {
    ids = encode_for_model(ck, read_file(a.text_file));
    source = "the whole of " + a.text_file;
  } else {
    ids = read_token_ids(a.token_ids);
    source = "the token ids of " + a.token_ids;
  }
  const int window = a.seq_len > 0 ? a.seq_len : (ck.state ? ck.state->train.seq_len : ck.config.max_position);
  SparseSpec spec = inference_spec(ck.config, a.block_sizes.empty() ? 0 : a.block_sizes[0],
                                   a.top_ks.empty() ? 0 : a.top_ks[0], a.rule, a.pooled_keys);
  TokenScores scores = score_tokens(*ck.model, ids, spec, window);
  json out = {{"model", a.checkpoint}, {"evaluated_on", source}, {"scores", to_json(scores, a.per_token)}};
  std::cout << out.dump(2) << std::endl;
  if (!a.out.empty()) write_file_atomic(a.out, out.dump(2) + "\n");
  return 0;
}

int cmd_eval(const EvalArgs& a) {
  LoadOptions lo;
  lo.device = resolve_device(a.device);
  LoadedCheckpoint ck = load_checkpoint(a.checkpoint, lo);
  if (!a.text_file.empty() || !a.token_ids.empty()) return eval_whole_text(a, ck);
  if (a.per_token) throw Error("eval --per-token scores a text: add --text-file or --token-ids");
  if (ck.tokenizer.serialized().empty())
    throw Error(a.checkpoint + " has no sentencepiece tokenizer for the corpus split evaluation; score a text with "
                "--text-file or --token-ids");
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
  json out = {{"checkpoint", a.checkpoint},
              {"evaluated_on", "the validation split of " + data.corpus +
                                   " (documents hashed into the held-out 5%; windows of seq_len)"},
              {"seq_len", eo.seq_len},
              {"selection_rule", to_string(model_sparse_spec(ck.config).rule)},
              {"perplexity", to_json(pr)}};
  if (a.needle) {
    std::vector<int> ctx = a.needle_contexts;
    if (ctx.empty()) ctx = {eo.seq_len, 2 * eo.seq_len, 4 * eo.seq_len};
    SparseSpec own = model_sparse_spec(ck.config);
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

// The analysis's arrays as .npy files: per layer the block-pooled maps
// (H, cells, cells), the per-row statistics (H, T) and the selected blocks
// (Hkv, T, K); the tokens and, when given, each token's NLL under full and
// sparse inference (T-1).
static void write_analysis_npy(const std::string& dir, const Analysis& an, const TokenScores* scores) {
  const int64_t H = an.num_heads, T = an.T, nc = an.n_cells;
  std::vector<int32_t> tokens(an.tokens.begin(), an.tokens.end());
  write_npy(dir + "/tokens.npy", tokens.data(), {T});
  for (int l = 0; l < an.num_layers; ++l) {
    const LayerAnalysis& L = an.layers[size_t(l)];
    const std::string pre = dir + "/layer" + std::to_string(l) + "_";
    for (auto [name, which] : {std::pair{"map_full", CellMap::Full}, std::pair{"map_sparse", CellMap::Sparse},
                               std::pair{"map_dropped", CellMap::Dropped}})
      write_npy(pre + name + ".npy", L.map(which).data(), {H, nc, nc});
    for (auto [name, which] : {std::pair{"row_sparsity", RowStat::Sparsity}, std::pair{"row_entropy", RowStat::Entropy},
                               std::pair{"row_sink_token", RowStat::SinkToken}})
      write_npy(pre + name + ".npy", L.row(which).data(), {H, T});
    const int64_t K = T > 0 ? int64_t(L.selected.size()) / (int64_t(an.num_kv_heads) * T) : 0;
    write_npy(pre + "selected_blocks.npy", L.selected.data(), {an.num_kv_heads, T, K});
  }
  if (scores) {
    write_npy(dir + "/nll_full.npy", scores->nll_full.data(), {int64_t(scores->nll_full.size())});
    if (!scores->nll_sparse.empty())
      write_npy(dir + "/nll_sparse.npy", scores->nll_sparse.data(), {int64_t(scores->nll_sparse.size())});
  }
}

int cmd_analyze(const AnalyzeArgs& a) {
  LoadOptions lo;
  lo.device = resolve_device(a.device);
  LoadedCheckpoint ck = load_checkpoint(a.checkpoint, lo);
  std::string text = a.text;
  if (!a.text_file.empty()) text = read_file(a.text_file);
  if (text.empty()) throw Error("analyze needs --text or --text-file");
  AnalysisRequest req;
  std::vector<int32_t> ids = encode_for_model(ck, text);
  req.tokens.assign(ids.begin(), ids.end());
  req.inference = attn_mode_from_string(a.mode);
  req.spec = inference_spec(ck.config, a.block_size, a.top_k, a.rule, a.pooled_keys);
  Analysis an = analyze(*ck.model, req);
  make_dirs(a.out_dir);
  json j = to_json(an);
  j["checkpoint"] = a.checkpoint;
  j["selection_rule"] = to_string(req.spec.rule);
  std::optional<TokenScores> scores;
  if (a.npy && ids.size() >= 2) {
    scores = score_tokens(*ck.model, ids, req.spec, int(ids.size()) - 1);
    j["per_token"] = to_json(*scores, false);
  }
  write_file_atomic(a.out_dir + "/analysis.json", j.dump(2) + "\n");
  write_file_atomic(a.out_dir + "/analysis.csv", to_csv(an));
  if (a.npy) write_analysis_npy(a.out_dir, an, scores ? &*scores : nullptr);
  if (a.png) {
    const int nc = an.n_cells, H = an.num_heads;
    const int up = std::max(1, 512 / std::max(1, nc));
    for (int l = 0; l < an.num_layers; ++l) {
      const auto& L = an.layers[l];
      // mean over heads, then one PNG per map kind
      for (auto [name, which] : {std::pair{"full", CellMap::Full}, std::pair{"sparse", CellMap::Sparse},
                                 std::pair{"dropped", CellMap::Dropped}}) {
        const std::vector<float> heads = L.map(which);
        std::vector<float> mean(size_t(nc) * nc, 0.f);
        for (int h = 0; h < H; ++h)
          for (size_t i = 0; i < mean.size(); ++i) mean[i] += heads[size_t(h) * nc * nc + i] / H;
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
  std::printf("mean AttnSparsity %.4f, mean entropy %.4f nats over %lld tokens (k=%d, block=%d, rule %s, %s inference)\n",
              an.mean_sparsity(), an.mean_entropy(), (long long)an.T, an.spec.top_k, an.spec.block_size,
              to_string(an.spec.rule), to_string(an.inference));
  if (!an.layers.empty() && j["layers"][0].contains("selection_locality")) {
    // what a kernel sharing a query tile's blocks would save on this text
    // (the per-layer figures to_json() computed for analysis.json)
    double overlap = 0, distinct = 0, reuse = 0;
    for (const json& layer : j["layers"]) {
      const json& loc = layer["selection_locality"];
      overlap += loc["neighbour_overlap"].get<double>() / an.num_layers;
      distinct += loc["tile_distinct_blocks"].get<double>() / an.num_layers;
      reuse += loc["tile_selections_per_block"].get<double>() / an.num_layers;
    }
    std::printf("selections: neighbouring queries share %.1f%% of their blocks; 64 consecutive queries select %.1f "
                "distinct blocks, each %.1f times (means over layers and KV heads)\n",
                100 * overlap, distinct, reuse);
  }
  std::printf("wrote %s/analysis.json, analysis.csv%s%s\n", a.out_dir.c_str(),
              a.png ? ", layer*_{full,sparse,dropped}.png" : "", a.npy ? ", *.npy arrays" : "");
  return 0;
}

// Text of `ids` for printing as tokens arrive: ids the tokenizer decodes to an
// incomplete UTF-8 sequence (U+FFFD at the end) wait for the next token.
static std::string decode_for_model(const LoadedCheckpoint& ck, const tokenizer::Tokenizer* hf,
                                    const std::vector<int32_t>& ids) {
  if (!hf) return ck.tokenizer.decode(std::vector<int>(ids.begin(), ids.end()));
  return hf->decode(ids, /*skip_special_tokens=*/true);
}

int cmd_generate(const GenerateArgs& a) {
  std::vector<std::string> texts = a.prompts;
  if (!a.prompt_file.empty()) texts.push_back(read_file(a.prompt_file));
  if (texts.empty()) throw Error("generate needs --prompt TEXT or --prompt-file FILE");
  if (a.num_samples < 1) throw Error("--num-samples must be >= 1");
  GenerateOptions o;
  o.mode = a.sparse ? AttnMode::Sparse : AttnMode::Full;
  o.max_new_tokens = a.max_new_tokens;
  o.sampling = {a.temperature, a.top_p, a.seed};
  validate(o.sampling);  // before the model is loaded
  if (o.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1");
  LoadOptions lo;
  lo.device = resolve_device(a.device);
  LoadedCheckpoint ck = load_checkpoint(a.checkpoint, lo);
  o.spec = inference_spec(ck.config, a.block_size, a.top_k, a.rule, a.pooled_keys);
  std::unique_ptr<tokenizer::Tokenizer> hf;
  if (ck.tokenizer.serialized().empty()) hf = model_tokenizer(ck);
  if (!a.ignore_eos) o.stop_tokens = stop_tokens_for(ck.config, hf ? hf->eos_id() : ck.tokenizer.eos_id());
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& t : texts)
    for (int s = 0; s < a.num_samples; ++s) prompts.push_back(encode_for_model(ck, t));
  const bool stream = !a.json && prompts.size() == 1;
  std::string printed;
  if (stream) {
    std::cout << texts[0] << std::flush;
  }
  std::vector<int32_t> so_far;
  GenerateResult r = generate(*ck.model, prompts, o, [&](const GenerateStep& step) {
    if (!stream || step.tokens[0] < 0) return true;
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), step.tokens[0]) != o.stop_tokens.end()) return true;
    so_far.push_back(step.tokens[0]);
    std::string text = decode_for_model(ck, hf.get(), so_far);
    const bool incomplete = text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
    if (!incomplete && text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
    return true;
  });
  auto text_of = [&](const std::vector<int32_t>& ids) {
    std::vector<int32_t> shown;
    for (int32_t id : ids)
      if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), id) == o.stop_tokens.end()) shown.push_back(id);
    return decode_for_model(ck, hf.get(), shown);
  };
  if (stream) {
    std::string text = text_of(r.tokens[0]);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0)
      std::cout << text.substr(printed.size());
    std::cout << std::endl;
  }
  json seqs = json::array();
  for (size_t b = 0; b < prompts.size(); ++b)
    seqs.push_back({{"prompt", texts[b / size_t(a.num_samples)]},
                    {"prompt_tokens", prompts[b].size()},
                    {"token_ids", r.tokens[b]},
                    {"text", text_of(r.tokens[b])},
                    {"stop", r.stop_reason[b]}});
  json summary = {{"model", a.checkpoint},
                  {"attention", to_string(o.mode)},
                  {"device", lo.device.str()},
                  {"prefill_seconds", r.prefill_seconds},
                  {"decode_seconds", r.decode_seconds},
                  {"decode_steps", r.decode_steps},
                  {"tokens_per_second", r.tokens_per_second()},
                  {"sequences", seqs}};
  if (o.mode == AttnMode::Sparse)
    summary["selection"] = {{"block_size", o.spec.block_size}, {"top_k", o.spec.top_k},
                            {"rule", to_string(o.spec.rule)}, {"pooled_keys", to_string(o.spec.pooled_keys)}};
  if (a.json) {
    std::cout << summary.dump(2) << std::endl;
  } else {
    if (!stream)
      for (auto& s : seqs) std::cout << s["prompt"].get<std::string>() << s["text"].get<std::string>() << "\n---\n";
    std::fprintf(stderr, "%s attention%s: %lld prompt tokens in %.3f s, %lld decoding steps x %zu sequences in %.3f s (%.1f tokens/s)\n",
                 to_string(o.mode),
                 o.mode == AttnMode::Sparse
                     ? (" (k " + std::to_string(o.spec.top_k) + ", block " + std::to_string(o.spec.block_size) + ", " +
                        to_string(o.spec.rule) + ", " + to_string(o.spec.pooled_keys) + " pooled keys)").c_str()
                     : "",
                 (long long)r.prompt_tokens, r.prefill_seconds, (long long)r.decode_steps, prompts.size(),
                 r.decode_seconds, r.tokens_per_second());
  }
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
  if (a.action != "encode" && a.action != "decode")
    throw Error("tokenizer: unknown action '" + a.action + "' (train | encode | decode)");
  std::string source = !a.source.empty() ? a.source : a.model;
  if (source.empty()) throw Error("tokenizer " + a.action + " needs a model folder, hub id or tokenizer file");
  // a hub id names a cached snapshot; a path is used as it is
  if (looks_like_hub_id(source) && !file_exists(source)) source = resolve_model(source).dir;
  std::unique_ptr<tokenizer::Tokenizer> tok = tokenizer::load_tokenizer(source);
  if (a.action == "encode") {
    std::string text = a.text_file.empty() ? a.text : read_file(a.text_file);
    tokenizer::EncodeOptions eo;
    eo.add_special_tokens = a.special;
    eo.parse_special = a.special;
    json ids = tok->encode(text, eo);
    std::cout << json{{"tokenizer", tok->describe()}, {"ids", ids}}.dump() << std::endl;
    return 0;
  }
  std::vector<int32_t> ids = a.ids_file.empty() ? std::vector<int32_t>{} : read_token_ids(a.ids_file);
  if (a.ids_file.empty()) {
    std::istringstream in(a.text);  // --text "1 2 3"
    for (long long v; in >> v;) ids.push_back(int32_t(v));
  }
  std::cout << json{{"tokenizer", tok->describe()}, {"text", tok->decode(ids, !a.special)}}.dump() << std::endl;
  return 0;
}

int cmd_info(const std::string& checkpoint) {
  // from config.json and the safetensors headers only: nothing is allocated
  LoadPlan plan = plan_checkpoint(checkpoint);
  json j = {{"config", to_json(plan.config)},   {"parameters", plan.parameters},
            {"dir", plan.dir},                  {"stored_dtype", plan.stored_dtype},
            {"weight_files", plan.weight_files}, {"file_bytes", plan.file_bytes},
            {"load_plan", plan.summary()},      {"selection_rule", to_string(model_sparse_spec(plan.config).rule)}};
  if (!plan.hub_id.empty()) j["hub_id"] = plan.hub_id;
  if (file_exists(plan.dir + "/trainer_state.json")) {
    try {
      json st = json::parse(read_file(plan.dir + "/trainer_state.json"));
      j["trainer_state"] = st;
    } catch (const std::exception& e) {
      throw Error(plan.dir + "/trainer_state.json is not valid JSON (" + e.what() + ")");
    }
  }
  try {
    std::unique_ptr<tokenizer::Tokenizer> tok = tokenizer::load_tokenizer(plan.dir);
    j["tokenizer"] = tok->describe();
    j["tokenizer_pieces"] = tok->vocab_size();
  } catch (const Error& e) {
    j["tokenizer"] = std::string("none: ") + e.what();
  }
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
  o.models_dir = a.models_dir;
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
