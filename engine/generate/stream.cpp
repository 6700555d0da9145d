#include "engine/generate/stream.h"

#include <algorithm>
#include <chrono>

#include "engine/model/transformer.h"
#include "engine/util/error.h"

namespace ssalab {

using clock_type = std::chrono::steady_clock;

static double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

StreamingGeneration::StreamingGeneration(std::shared_ptr<Transformer> model,
                                         std::shared_ptr<const tokenizer::Tokenizer> tok,
                                         const GenerationRequest& request, const SparseSpec& spec,
                                         bool add_special_tokens)
    : model_(std::move(model)), tok_(std::move(tok)), rng_(at::detail::createCPUGenerator(request.sampling.seed)) {
  validate(request.sampling);
  if (request.max_new_tokens < 1)
    throw Error("max new tokens must be >= 1, got " + std::to_string(request.max_new_tokens));
  const ModelConfig& c = model_->config();
  state_.request = request;
  state_.spec = spec;
  state_.prompt_ids = tok_->encode(request.prompt, add_special_tokens);
  if (state_.prompt_ids.empty()) throw Error("the prompt has no tokens");
  check_prompt_ids(state_.prompt_ids, c.vocab_size, "the prompt");
  for (int32_t id : state_.prompt_ids) state_.prompt_pieces.push_back(tok_->id_to_token(id));
  stop_tokens_ = stop_tokens_for(c, tok_->eos_id());
  model_->eval();
  const int64_t n = int64_t(state_.prompt_ids.size());
  decoder_ = std::make_unique<Decoder>(*model_, 1, n + request.max_new_tokens, spec);
  decoder_->capture = true;
  auto t0 = clock_type::now();
  logits_ = decoder_->feed(torch::tensor(std::vector<int64_t>(state_.prompt_ids.begin(), state_.prompt_ids.end()),
                                         torch::kLong).view({1, n}),
                           request.mode);
  state_.prefill_seconds = seconds_since(t0);
  state_.trace = trace_last_token(*decoder_);
  state_.running = true;
}

void StreamingGeneration::step() {
  if (!state_.running) return;
  const int32_t next = sample_tokens(logits_, state_.request.sampling, rng_)[0];
  state_.new_ids.push_back(next);
  const bool stop = std::find(stop_tokens_.begin(), stop_tokens_.end(), next) != stop_tokens_.end();
  state_.new_pieces.push_back(tok_->id_to_token(next));
  if (!stop) state_.text = tok_->decode(state_.new_ids, /*skip_special_tokens=*/true);
  if (stop) {
    this->stop("stop token");
    return;
  }
  if (int(state_.new_ids.size()) >= state_.request.max_new_tokens) {
    this->stop("max tokens");
    return;
  }
  auto t0 = clock_type::now();
  logits_ = decoder_->feed(torch::tensor({int64_t(next)}, torch::kLong).view({1, 1}), state_.request.mode);
  state_.decode_seconds += seconds_since(t0);
  ++state_.decode_steps;
  state_.trace = trace_last_token(*decoder_);
}

void StreamingGeneration::stop(const std::string& reason) {
  if (!state_.running) return;
  state_.running = false;
  state_.stop_reason = reason;
  decoder_.reset();  // the cache's memory goes now
}

}  // namespace ssalab
