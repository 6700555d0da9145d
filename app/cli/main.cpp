// ssalab: command-line entry point. With no arguments it opens the desktop
// app (when built with the GUI) on a live `tiny` SSA run; the subcommands
// train, evaluate, analyse and inspect models without a display.
#include <malloc.h>

#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "app/cli/commands.h"
#include "app/cli/launch.h"
#include "engine/util/crash_handler.h"
#include "engine/util/error.h"
#ifdef SSALAB_WITH_GUI
#include "app/gui/gui.h"
#endif

using namespace ssalab;

static void add_settings(CLI::App* cmd, cli::Settings& s) {
  cmd->add_option("--preset", s.preset, "model preset: tiny | small | base | 1b")->capture_default_str();
  cmd->add_option("--config", s.config_file, "JSON file {\"preset\", \"model\": {..}, \"train\": {..}}");
  cmd->add_option("--set", s.overrides, "override, e.g. --set train.steps=100 --set model.block_counts=8");
}

int main(int argc, char** argv) {
  install_crash_handler(argc, argv);
  // Keep freed memory in the heap: the analysis of long inputs allocates and
  // frees many same-sized buffers, and returning them to the kernel each time
  // makes page faults dominate (minutes of system time at 8K tokens).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"ssalab: train, measure and watch Sparse Sparse Attention (SSA) models"};
  app.require_subcommand(0, 1);

  cli::TrainArgs train;
  std::string method;
  auto* t = app.add_subcommand("train", "train a model (full | moba | ssa) on a text corpus");
  add_settings(t, train.settings);
  t->add_option("--method", method, "full | moba | ssa (shortcut for --set train.method=...)");
  t->add_option("--corpus", train.corpus, "text file or folder (default: Python 3.11 docs from python3.11-doc)");
  t->add_option("--tokenizer", train.tokenizer, "sentencepiece .model to use instead of training one");
  t->add_option("--out", train.out_dir, "run directory (metrics.jsonl, checkpoint/)")->capture_default_str();
  t->add_option("--resume", train.resume, "checkpoint directory to continue from, or 'auto'");
  t->add_option("--stop-after", train.stop_after, "stop after this step as if interrupted (resume later)");
  t->add_option("--cache", train.cache_dir, "tokenizer/token cache directory")->capture_default_str();
  t->add_flag("--quiet", train.quiet, "no progress bar");
  t->add_option("--nproc", train.nproc,
                "data-parallel: start this many processes on this machine (Gloo on the CPU, NCCL on GPUs); "
                "under torchrun or srun each process is one rank already")
      ->check(CLI::Range(1, 1024));
  t->add_option("--timeout", train.timeout_s, "data-parallel: seconds a rank waits for the others before the run ends")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  cli::EvalArgs ev;
  auto* e = app.add_subcommand("eval", "perplexity (full/sparse), k and block-size sweep, pass-key test");
  e->add_option("model", ev.checkpoint, "checkpoint or HF model folder, or a hub id in the local HF cache")->required();
  e->add_option("--text-file", ev.text_file, "score every token of this file (not a split)");
  e->add_option("--token-ids", ev.token_ids, "score whitespace-separated token ids from this file");
  e->add_flag("--per-token", ev.per_token, "with --text-file/--token-ids: each token's NLL, full and sparse");
  e->add_option("--rule", ev.rule, "selection rule: topk | nsa-chunked (default: the model's)");
  e->add_option("--pooled-keys", ev.pooled_keys, "pooled key precision: fp32 | bf16 (default: the model's)");
  e->add_option("--corpus", ev.corpus,
                "split evaluation: the held-out 5% of this corpus (default: the corpus the model was trained on)");
  e->add_option("--seq-len", ev.seq_len, "evaluation context (default: training seq_len)");
  e->add_option("--batches", ev.batches)->capture_default_str();
  e->add_option("--batch-size", ev.batch_size)->capture_default_str();
  e->add_option("--k", ev.top_ks, "top-k values to sweep (default: doubling up to the context)")->delimiter(',');
  e->add_option("--block-size", ev.block_sizes, "block sizes to sweep (default: the model's)")->delimiter(',');
  e->add_flag("--needle", ev.needle, "run the pass-key retrieval test at 1x, 2x, 4x the context");
  e->add_option("--needle-context", ev.needle_contexts, "pass-key context lengths")->delimiter(',');
  e->add_option("--needle-trials", ev.needle_trials)->capture_default_str();
  e->add_option("--device", ev.device, "auto | cpu | cuda")->capture_default_str();
  e->add_option("--out", ev.out, "also write the JSON here");
  e->add_option("--cache", ev.cache_dir, "tokenizer/token cache directory")->capture_default_str();

  cli::AnalyzeArgs an;
  auto* a = app.add_subcommand("analyze", "attention statistics and maps of a model on a text");
  a->add_option("model", an.checkpoint, "checkpoint or HF model folder, or a hub id in the local HF cache")->required();
  a->add_option("--text", an.text, "text to analyse");
  a->add_option("--text-file", an.text_file, "file with the text to analyse");
  a->add_option("--mode", an.mode, "inference stream: full | sparse")->capture_default_str();
  a->add_option("--k", an.top_k, "top-k (default: the model's)");
  a->add_option("--block-size", an.block_size, "block size (default: the model's)");
  a->add_option("--out", an.out_dir, "output directory (JSON, CSV, PNG)")->capture_default_str();
  a->add_flag("!--no-png", an.png, "skip the PNG heatmaps");
  a->add_flag("!--no-npy", an.npy, "skip the .npy arrays (maps, selections, per-token NLL)");
  a->add_option("--rule", an.rule, "selection rule: topk | nsa-chunked (default: the model's)");
  a->add_option("--pooled-keys", an.pooled_keys, "pooled key precision: fp32 | bf16 (default: the model's)");
  a->add_flag("!--linear", an.log_scale, "linear colour scale (default: log)");
  a->add_option("--device", an.device, "auto | cpu | cuda")->capture_default_str();

  cli::GenerateArgs gen;
  auto* gn = app.add_subcommand("generate", "generate text with a KV cache, full or sparse attention");
  gn->add_option("model", gen.checkpoint, "checkpoint or HF model folder, or a hub id in the local HF cache")->required();
  gn->add_option("--prompt", gen.prompts, "prompt text (give several for a batch)");
  gn->add_option("--prompt-file", gen.prompt_file, "a file holding one more prompt");
  gn->add_flag("--sparse", gen.sparse, "block-sparse attention: each new token reads k blocks of the cache");
  gn->add_option("--k", gen.top_k, "blocks per token (default: the model's)")->check(CLI::Range(1, 1 << 30));
  gn->add_option("--block-size", gen.block_size, "block size (default: the model's)")->check(CLI::Range(1, 1 << 30));
  gn->add_option("--rule", gen.rule, "selection rule: topk | nsa-chunked (default: the model's)");
  gn->add_option("--pooled-keys", gen.pooled_keys, "pooled key precision: fp32 | bf16 (default: the model's)");
  gn->add_option("--max-new-tokens", gen.max_new_tokens)->capture_default_str();
  gn->add_option("--temperature", gen.temperature, "0: greedy")->capture_default_str();
  gn->add_option("--top-p", gen.top_p, "nucleus sampling")->capture_default_str();
  gn->add_option("--seed", gen.seed, "sampling seed")->capture_default_str();
  gn->add_option("--num-samples", gen.num_samples, "sequences per prompt (a batch)")->capture_default_str();
  gn->add_flag("--ignore-eos", gen.ignore_eos, "do not stop at the model's end-of-sequence tokens");
  gn->add_flag("--json", gen.json, "print a JSON summary (tokens, text, timings) instead of the text");
  gn->add_option("--device", gen.device, "auto | cpu | cuda")->capture_default_str();

  cli::TokenizerArgs tk;
  auto* k = app.add_subcommand("tokenizer", "train a sentencepiece tokenizer, or encode / decode with a model's");
  k->add_option("action", tk.action, "train | encode | decode")->required();
  k->add_option("source", tk.source, "encode/decode: model folder, hub id, tokenizer.json or .model");
  k->add_option("--text-file", tk.text_file, "text to encode");
  k->add_option("--ids-file", tk.ids_file, "whitespace-separated ids to decode");
  k->add_flag("--special", tk.special, "encode: parse special tokens and add BOS/EOS; decode: keep special tokens");
  k->add_option("--corpus", tk.corpus, "text file or folder (default corpus if omitted)");
  k->add_option("--vocab", tk.vocab, "vocabulary size")->capture_default_str();
  k->add_option("--out", tk.out, "where to write the .model (train)");
  k->add_option("--model", tk.model, "tokenizer file (same as the source argument)");
  k->add_option("--text", tk.text, "text to encode (decode: ids)");

  cli::ParadoxArgs px;
  auto* p = app.add_subcommand("paradox", "train FullAttn, MoBA and SSA alike, measure them, write a report");
  add_settings(p, px.settings);
  p->add_option("--corpus", px.corpus, "text file or folder (default corpus if omitted)");
  p->add_option("--out", px.out_dir, "runs and report/ go here")->capture_default_str();
  p->add_option("--ship", px.ship_dir, "write the three fp16 checkpoints here (default: <out>/models)");
  p->add_option("--cache", px.cache_dir, "tokenizer/token cache directory")->capture_default_str();
  p->add_option("--eval-batches", px.eval_batches)->capture_default_str();
  p->add_option("--probes", px.probes, "validation windows analysed per model")->capture_default_str();
  p->add_option("--needle-trials", px.needle_trials)->capture_default_str();
  p->add_option("--models", px.models_dir,
                "measure these trained checkpoints DIR/{full,moba,ssa} (e.g. assets/models) instead of training");
  p->add_flag("--quiet", px.quiet, "no progress bars");

  std::string info_ckpt;
  auto* i = app.add_subcommand("info", "print a model's config, size and load plan (reads no weights)");
  i->add_option("model", info_ckpt, "checkpoint or HF model folder, or a hub id in the local HF cache")->required();

#ifdef SSALAB_WITH_GUI
  GuiOptions gui;
  cli::Settings gui_settings;
  std::string gui_method;
  auto* g = app.add_subcommand("gui", "open the desktop app (the default with no arguments)");
  add_settings(g, gui_settings);
  g->add_option("--method", gui_method, "full | moba | ssa");
  g->add_option("--corpus", gui.session.corpus, "text file or folder (default corpus if omitted)");
  g->add_option("--model,--checkpoint", gui.session.checkpoint,
                "open this model instead of a fresh one: an ssalab checkpoint, a model folder or a hub id in the "
                "local HF cache");
  g->add_option("--attach", gui.session.attach,
                "follow a training run another process writes in this folder (its curves and checkpoints), read-only");
  g->add_option("--compare", gui.compare_checkpoint, "second model for the Compare view (folder or hub id)");
  g->add_option("--work-dir", gui.session.work_dir, "session files (tokenizer cache, saves)")->capture_default_str();
  g->add_option("--demo", gui.demo_dir, "run the scripted demo, write screenshots and frame times here, exit");
  g->add_option("--demo-tokens", gui.demo_tokens, "probe length for the demo")->capture_default_str();
  g->add_option("--demo-lengths", gui.demo_lengths,
                "with --model: the probe lengths the demo analyses the model at (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  g->add_option("--paradox-models", gui.paradox_models, "folder of full/ moba/ ssa/ models for the Paradox view")
      ->capture_default_str();
  g->add_option("--random-use", gui.random_use_dir,
                "drive the app with random input and panel actions while training runs; results here, then exit");
  g->add_option("--random-seconds", gui.random_use_seconds, "how long --random-use runs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  g->add_option("--random-seed", gui.random_use_seed, "seed of --random-use")->capture_default_str();
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err);
  }

  try {
    if (*t) {
      if (!method.empty()) train.settings.overrides.push_back("train.method=\"" + method + "\"");
      train.settings.resolve();
      if (train.nproc > 0) return cli::launch_local_ranks(train.nproc, cli::without_nproc(argc, argv));
      return cli::cmd_train(train);
    }
    if (*e) return cli::cmd_eval(ev);
    if (*a) return cli::cmd_analyze(an);
    if (*gn) return cli::cmd_generate(gen);
    if (*k) return cli::cmd_tokenizer(tk);
    if (*i) return cli::cmd_info(info_ckpt);
    if (*p) {
      px.settings.resolve();
      for (int n = 0; n < argc; ++n) px.command_line += (n ? " " : "") + std::string(argv[n]);
      return cli::cmd_paradox(px);
    }
#ifdef SSALAB_WITH_GUI
    if (!method.empty() || !gui_method.empty())
      gui_settings.overrides.push_back("train.method=\"" + (gui_method.empty() ? method : gui_method) + "\"");
    gui_settings.resolve();
    gui.session.model = gui_settings.model;
    gui.session.train = gui_settings.train;
    return run_gui(gui);
#else
    std::cout << app.help() << "\n(this build has no GUI: rebuild with -DSSALAB_GUI=ON and imgui/glfw installed)\n";
    return 0;
#endif
  } catch (const Error& err) {
    std::fprintf(stderr, "ssalab: error: %s\n", err.what());
    return 1;
  } catch (const std::exception& err) {
    std::fprintf(stderr, "ssalab: unexpected error: %s\n", err.what());
    return 1;
  }
}
