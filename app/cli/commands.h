// The `ssalab` subcommands. Each returns a process exit code:
//   0 ok, 1 runtime failure (bad data, NaN, I/O), 2 bad arguments/config.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"

namespace ssalab::cli {

// Model/train settings from a preset, a JSON config file ({"preset":..,
// "model": {..}, "train": {..}}), and `--set section.key=value` overrides,
// applied in that order.
struct Settings {
  std::string preset = "tiny";
  std::string config_file;
  std::vector<std::string> overrides;
  ModelConfig model;
  TrainConfig train;
  void resolve();  // fills model/train; throws Error on unknown keys or bad values
};

struct TrainArgs {
  Settings settings;
  std::string corpus, tokenizer, out_dir = "runs/train", resume, cache_dir = ".cache/ssalab";
  int64_t stop_after = -1;
  bool quiet = false;
  int nproc = 0;              // > 0: start this many local ranks (launch.h)
  double timeout_s = 600;     // how long a collective waits for the other ranks
};
int cmd_train(const TrainArgs& a);

struct EvalArgs {
  std::string checkpoint;  // our checkpoint, an HF model folder, or a hub id in the local cache
  std::string corpus;      // validation-split evaluation: the last 5% of this corpus
  std::string text_file;   // score the whole file (tokenised with the model's tokenizer)
  std::string token_ids;   // score whitespace-separated token ids from this file
  bool per_token = false;  // with --text-file / --token-ids: each token's NLL, full and sparse
  std::string rule;        // selection rule (topk | nsa-chunked); default: the model's
  std::string pooled_keys;  // pooled key precision (fp32 | bf16); "": the model's
  std::string out, cache_dir = ".cache/ssalab";
  int seq_len = 0, batches = 8, batch_size = 4;
  std::vector<int> top_ks, block_sizes;
  bool needle = false;
  std::vector<int> needle_contexts;
  int needle_trials = 5;
  std::string device = "auto";
};
int cmd_eval(const EvalArgs& a);

struct AnalyzeArgs {
  std::string checkpoint, text, text_file, out_dir = "runs/analyze", mode = "full", device = "auto";
  int top_k = 0, block_size = 0;  // 0: the checkpoint's
  std::string rule;               // "": the model's
  std::string pooled_keys;  // pooled key precision (fp32 | bf16); "": the model's
  bool png = true, log_scale = true, npy = true;
};
int cmd_analyze(const AnalyzeArgs& a);

struct GenerateArgs {
  std::string checkpoint;  // our checkpoint, an HF model folder, or a hub id in the local cache
  std::vector<std::string> prompts;  // one sequence each (a batch); --prompt-file adds one
  std::string prompt_file;
  bool sparse = false;     // sparse attention (the model's block size, k and rule unless given)
  int top_k = 0, block_size = 0;
  std::string rule;
  std::string pooled_keys;  // pooled key precision (fp32 | bf16); "": the model's
  int max_new_tokens = 64, num_samples = 1;
  double temperature = 0, top_p = 1.0;
  uint64_t seed = 0;
  bool ignore_eos = false;
  bool json = false;       // a JSON summary on stdout instead of streamed text
  std::string device = "auto";
};
int cmd_generate(const GenerateArgs& a);

struct TokenizerArgs {
  std::string action;    // train | encode | decode
  std::string source;    // encode/decode: model folder, hub id, tokenizer.json or .model
  std::string corpus, model, out, text, text_file, ids_file;
  bool special = false;  // encode: recognise special-token strings in the text and add BOS/EOS as the model does
  int vocab = 2048;
};
int cmd_tokenizer(const TokenizerArgs& a);

int cmd_info(const std::string& checkpoint);

struct ParadoxArgs {
  Settings settings;
  std::string corpus, out_dir = "runs/paradox", ship_dir, cache_dir = ".cache/ssalab", models_dir;
  int eval_batches = 8, probes = 4, needle_trials = 8;
  bool quiet = false;
  std::string command_line;  // recorded in the report so it can be regenerated
};
int cmd_paradox(const ParadoxArgs& a);

// (rows x cols) values as a colormapped PNG (viridis), written atomically.
void write_heatmap_png(const std::string& path, const float* values, int rows, int cols, bool log_scale, int scale_up);

}  // namespace ssalab::cli
