// Text generation with a KV cache, under full or sparse attention.
//
// A token's block selection depends only on its prefix (the complete blocks
// before it and its own block), so decoding one token at a time against the
// cache is exact: each step's logits equal those of a full forward over the
// whole sequence so far (tests/engine/test_generate.cpp checks it for every
// family, full and sparse, both selection rules). Under sparse attention a
// new token reads its k blocks of the cache instead of all of it.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/config.h"
#include "engine/generate/kv_cache.h"

namespace ssalab {

class Transformer;

// The selection a sparse call over Tk keys runs with: k capped at the blocks
// there are (with fewer blocks than k every past block is taken anyway), or
// nullopt when one block covers all Tk keys, where sparse attention is full
// attention and a spec could not even be checked.
std::optional<SparseSpec> spec_for_keys(const SparseSpec& spec, int64_t Tk);

struct SamplingOptions {
  double temperature = 0;  // 0: greedy (the most likely token)
  double top_p = 1.0;      // nucleus: sample among the most likely tokens whose probability reaches top_p
  uint64_t seed = 0;       // the same seed, prompt and settings give the same tokens
};
// Throws Error naming a bad setting (negative temperature, top_p outside (0, 1]).
void validate(const SamplingOptions& s);

// Next tokens (B) from logits (B, V) on any device; sampling runs on the CPU
// in double precision so a seed gives the same tokens on every device.
std::vector<int32_t> sample_tokens(const torch::Tensor& logits, const SamplingOptions& s, at::Generator& rng);

// The model with a cache for `batch` sequences of up to `capacity` tokens.
class Decoder {
 public:
  Decoder(Transformer& model, int64_t batch, int64_t capacity, const SparseSpec& spec);
  // Runs the tokens (B, T) after those in the cache and returns the logits of
  // the last one, (B, V) fp32. mode Sparse uses spec_for_keys(spec, length).
  // Long inputs run in chunks of prefill_chunk tokens (same result).
  torch::Tensor feed(const torch::Tensor& tokens, AttnMode mode);
  // After feed(): each layer's query of the last token (B, Hq, 1, D) and
  // every cached key (B, Hkv, length, D) (capture must be on).
  const std::vector<torch::Tensor>& last_queries() const { return q_; }
  KVCache& cache() { return cache_; }
  const SparseSpec& spec() const { return spec_; }
  void set_spec(const SparseSpec& spec);  // k, block size or rule for the next steps
  void reset() { cache_.truncate(0); }
  bool capture = false;
  int64_t prefill_chunk = 2048;

 private:
  Transformer& model_;
  SparseSpec spec_;
  KVCache cache_;
  std::vector<torch::Tensor> q_;
};

// What the token just generated looked at, for sequence 0 (the Generate view).
struct StepTrace {
  int64_t position = 0;       // the token whose query this is (the last one fed)
  int64_t context = 0;        // keys it attends over (position + 1)
  int layers = 0, heads = 0, kv_heads = 0, top_k = 0, block_size = 0, blocks = 0;
  std::vector<int64_t> selected;  // (layers, kv_heads, top_k) block indices, -1 empty; the sparse selection
  std::vector<float> block_mass;  // (layers, heads, blocks): full attention's probability per block
  std::vector<float> kept_mass;   // (layers, heads): the part of it on the selected blocks
};
// The trace of the last token fed to `d` (capture on).
StepTrace trace_last_token(Decoder& d);

// The tokens that end a generation: the config's eos_token_ids inside the
// vocabulary, else the tokenizer's EOS (tokenizer_eos; -1: none).
std::vector<int32_t> stop_tokens_for(const ModelConfig& c, int32_t tokenizer_eos);
// Throws Error naming `which` ("prompt 2") when an id is outside [0, vocab_size).
void check_prompt_ids(const std::vector<int32_t>& ids, int vocab_size, const std::string& which);

struct GenerateOptions {
  AttnMode mode = AttnMode::Sparse;
  SparseSpec spec;
  SamplingOptions sampling;
  int max_new_tokens = 64;
  std::vector<int32_t> stop_tokens;  // a sequence ends after producing one of these
  bool trace = false;                // fill GenerateStep::trace
  int64_t prefill_chunk = 2048;
};
void validate(const GenerateOptions& o, int vocab_size);

struct GenerateStep {
  int index = 0;                 // 0 for the first new token
  std::vector<int32_t> tokens;   // (B) the new tokens (a finished sequence repeats its stop token)
  std::vector<bool> finished;    // (B) the sequence has produced a stop token by now
  double seconds = 0;            // this step's model time
  std::optional<StepTrace> trace;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // per sequence, the new tokens (a stop token included)
  std::vector<std::string> stop_reason;      // per sequence: "stop token" | "max tokens" | "cancelled"
  int64_t prompt_tokens = 0;                 // over the batch
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0;
  // new tokens per second of decoding, over the batch
  double tokens_per_second() const;
};

// Generates after each prompt (ids, any lengths: a longer prompt's tail is
// fed token by token while the shorter ones already generate, so no padding
// is needed). on_step, when given, sees each step and returns false to stop.
GenerateResult generate(Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                        const GenerateOptions& opt, const std::function<bool(const GenerateStep&)>& on_step = {});

}  // namespace ssalab
