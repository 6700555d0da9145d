// The sparsity-paradox lab: train FullAttn, MoBA (sparse only) and SSA models
// with identical data, steps, seed and size; measure them the way the paper
// does; write a report (Markdown, PNG plots, raw JSON) that states each of
// the paper's five qualitative claims and whether it holds at this scale.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"

namespace ssalab {

struct ParadoxOptions {
  ModelConfig model;
  TrainConfig train;            // method is set per model
  std::string corpus;           // empty: default corpus
  std::string cache_dir = ".cache/ssalab";
  std::string out_dir = "runs/paradox";  // <out>/<method>/ training runs, <out>/report/
  std::string ship_dir;         // optional: fp16 checkpoints of the three models go here
  std::string models_dir;       // optional: measure the trained checkpoints <dir>/{full,moba,ssa} instead of
                                // training (model shape, training length and tokenizer come from them)
  int eval_batches = 8;         // validation windows per perplexity (x4 sequences)
  int probes = 4;               // validation windows analysed for sparsity/entropy
  int needle_trials = 8;
  bool progress = true;
};

// Trains (or reuses finished runs in out_dir, or takes models_dir's
// checkpoints), evaluates, writes the report.
// Returns the results JSON that the report was made from.
nlohmann::json run_paradox(const ParadoxOptions& opt);

// The five claims judged from a results JSON (as run_paradox writes it).
nlohmann::json judge_claims(const nlohmann::json& results);
// Markdown + PNG plots + results.json into `dir`, from results alone.
void write_paradox_report(const nlohmann::json& results, const std::string& dir);

}  // namespace ssalab
