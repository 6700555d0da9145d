// Evaluation: perplexity under full and sparse inference, the inference-time
// sweep of top-k and block size (the paper's RF 256..4096 sweep, scaled to the
// model), and a synthetic pass-key (needle-in-a-haystack) retrieval test.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/attention/attention.h"
#include "engine/config.h"
#include "engine/data/corpus.h"

namespace ssalab {

class Transformer;

struct SweepPoint {
  int block_size = 0, top_k = 0;
  int receptive_field = 0;  // block_size * top_k
  double ppl = 0;
  std::string skipped;      // why this setting could not run (empty if it ran)
};

struct EvalOptions {
  int seq_len = 256;
  int batches = 8;
  int batch_size = 4;
};

// Full-attention ppl, then sparse ppl for every (block size, k) pair.
struct PerplexityReport {
  double full = 0;
  double sparse = 0;  // at the model's own spec
  std::vector<SweepPoint> sweep;
};
PerplexityReport evaluate_perplexity(Transformer& model, const std::vector<int32_t>& val, const EvalOptions& opt,
                                     const std::vector<int>& top_ks, const std::vector<int>& block_sizes);

struct NeedleResult {
  int context = 0;
  double depth = 0;           // where the key sits, 0 = start, 1 = end
  std::string mode;           // full | sparse
  int trials = 0;
  double accuracy = 0;        // all key digits predicted (greedy) correctly
  double digit_accuracy = 0;  // share of key digits predicted correctly
  double mean_logprob = 0;    // of the key digits, nats per digit
  // The key generated, not scored: greedy decoding with the KV cache after
  // the question (engine/generate), right when its text starts with the key.
  double generated_accuracy = 0;
  std::string generated_example;  // what the first trial generated
};

// Pass-key retrieval: filler text with "The pass key is NNNNN. Remember it."
// at `depth`, then the question; teacher-forced scoring of the key digits,
// and the key generated with the KV cache under the same attention.
std::vector<NeedleResult> passkey_test(Transformer& model, const Tokenizer& tok, const std::vector<int>& contexts,
                                       const std::vector<double>& depths, int trials, AttnMode mode,
                                       const SparseSpec& spec, uint64_t seed = 7);

// Builds one pass-key prompt of exactly `context` tokens; returns the token
// ids of the prompt (question included) and of the answer digits.
std::pair<std::vector<int>, std::vector<int>> passkey_prompt(const Tokenizer& tok, int context, double depth,
                                                             const std::string& key);

// Shortest context a pass-key prompt fits in with this tokenizer.
int passkey_min_context(const Tokenizer& tok);

// Every token of a text scored under full and under sparse inference: which
// tokens sparse attention hurts. The text is cut into windows of `window`
// predictions (inputs ids[s, s+w), targets ids[s+1, s+w+1)), so every token
// after the first is scored exactly once, from its prefix inside its window.
struct TokenScores {
  std::vector<int32_t> tokens;     // the text
  std::vector<float> nll_full;     // nll_full[i]: -log p(tokens[i+1] | prefix), nats; size tokens-1
  std::vector<float> nll_sparse;   // same under sparse inference
  std::string sparse_note;         // a window too short to leave any block out (empty: none)
  double ppl_full = NAN, ppl_sparse = NAN;
  SparseSpec spec;
  int window = 0;
};
TokenScores score_tokens(Transformer& model, const std::vector<int32_t>& tokens, const SparseSpec& spec, int window);
// "nll_full", "nll_sparse", "nll_delta" (sparse - full) arrays and the perplexities.
nlohmann::json to_json(const TokenScores& s, bool per_token);

nlohmann::json to_json(const PerplexityReport& r);
nlohmann::json to_json(const std::vector<NeedleResult>& r);

}  // namespace ssalab
