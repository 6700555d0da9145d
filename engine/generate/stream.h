// One generation advanced a token at a time by a caller's loop: the app's
// session worker interleaves its steps with everything else it does and
// publishes GenerationState after each, so the Generate view streams tokens
// and shows what the token being generated attends to.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/generate/generate.h"
#include "engine/tokenizer/tokenizer.h"

namespace ssalab {

struct GenerationRequest {
  std::string prompt;
  AttnMode mode = AttnMode::Sparse;
  int max_new_tokens = 64;
  SamplingOptions sampling;
};

struct GenerationState {
  GenerationRequest request;
  SparseSpec spec;                     // the selection it runs with
  std::vector<int32_t> prompt_ids, new_ids;
  std::vector<std::string> prompt_pieces, new_pieces;  // each token's text
  std::string text;                    // the new tokens decoded together
  bool running = false;
  std::string stop_reason;             // "stop token" | "max tokens" | why it was stopped
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0;
  double tokens_per_second() const { return decode_seconds > 0 ? decode_steps / decode_seconds : 0; }
  std::optional<StepTrace> trace;      // the query that produces the next token
};

class StreamingGeneration {
 public:
  // Encodes and runs the prompt (throws Error on bad settings or an empty prompt).
  // `add_special_tokens`: BOS as the model's tokenizer adds it (HF models);
  // ssalab's own models were trained without.
  StreamingGeneration(std::shared_ptr<Transformer> model, std::shared_ptr<const tokenizer::Tokenizer> tok,
                      const GenerationRequest& request, const SparseSpec& spec, bool add_special_tokens);
  bool running() const { return state_.running; }
  // Samples the next token and, unless it ends the generation, feeds it.
  void step();
  void stop(const std::string& reason);
  const GenerationState& state() const { return state_; }
  const Transformer* model() const { return model_.get(); }

 private:
  std::shared_ptr<Transformer> model_;
  std::shared_ptr<const tokenizer::Tokenizer> tok_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<int32_t> stop_tokens_;
  at::Generator rng_;
  torch::Tensor logits_;
  GenerationState state_;
};

}  // namespace ssalab
