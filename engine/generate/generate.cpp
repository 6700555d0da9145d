#include "engine/generate/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/memory/estimate.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

std::optional<SparseSpec> spec_for_keys(const SparseSpec& spec, int64_t Tk) {
  if (Tk <= spec.block_size) return std::nullopt;
  SparseSpec s = spec;
  const int64_t blocks = (Tk + spec.block_size - 1) / spec.block_size;
  s.top_k = int(std::min<int64_t>(spec.top_k, blocks));
  return s;
}

void validate(const SamplingOptions& s) {
  if (!std::isfinite(s.temperature) || s.temperature < 0)
    throw Error("temperature must be a finite number >= 0 (0: greedy), got " + std::to_string(s.temperature));
  if (!(s.top_p > 0 && s.top_p <= 1)) throw Error("top_p must be in (0, 1], got " + std::to_string(s.top_p));
}

std::vector<int32_t> sample_tokens(const Tensor& logits, const SamplingOptions& s, at::Generator& rng) {
  validate(s);
  Tensor l = logits.detach().to(torch::kCPU, torch::kDouble);
  if (l.dim() != 2) throw Error("sample_tokens expects logits (B, V)");
  Tensor next;
  if (s.temperature == 0) {
    next = l.argmax(-1);
  } else {
    Tensor p = torch::softmax(l / s.temperature, -1);
    if (s.top_p < 1) {
      auto [sorted, order] = torch::sort(p, /*dim=*/-1, /*descending=*/true);
      // keep a token while the mass before it is under top_p (the first always)
      Tensor keep_sorted = (sorted.cumsum(-1) - sorted) < s.top_p;
      Tensor keep = torch::zeros_like(keep_sorted).scatter(-1, order, keep_sorted);
      p = p * keep;
    }
    next = torch::multinomial(p, 1, /*replacement=*/false, rng).view({-1});
  }
  std::vector<int32_t> out(static_cast<size_t>(next.size(0)));
  auto a = next.accessor<int64_t, 1>();
  for (size_t b = 0; b < out.size(); ++b) out[b] = int32_t(a[int64_t(b)]);
  return out;
}

static torch::Device device_of(Transformer& m) { return m.parameters().front().device(); }

static KVCache make_cache(Transformer& model, int64_t batch, int64_t capacity, const SparseSpec& spec) {
  const int block_size = spec.block_size;
  const torch::ScalarType pooled = pooled_keys_dtype(spec.pooled_keys);
  const ModelConfig& c = model.config();
  Tensor w = model.parameters().front();
  // refused with the figures before anything is allocated (an overcommitted
  // allocation would succeed here and be killed while the cache fills)
  const double pooled_bytes = double(c10::elementSize(pooled)) * double(capacity / std::max(1, block_size));
  const double cache_bytes =
      double(c.num_layers) * batch * c.num_kv_heads * c.head_dim * (2.0 * capacity * w.element_size() + pooled_bytes);
  if (batch >= 1 && capacity >= 1 && block_size >= 1) {
    MemoryEstimate need;
    need.add("KV cache", uint64_t(std::min(cache_bytes, 1.8e19)));
    MemoryEstimate prefill = inference_memory(c, batch, std::min<int64_t>(capacity, 2048), AttnMode::Full, {},
                                              w.device());
    for (auto& [what, bytes] : prefill.parts) need.add("a prefill chunk: " + what, bytes);
    require_memory(need, "generating " + std::to_string(batch) + " x " + std::to_string(capacity) + " tokens",
                   w.device());
  }
  try {
    return KVCache(c, batch, capacity, block_size, w.device(), w.scalar_type(), pooled);
  } catch (const c10::Error&) {
    throw Error("no memory for a KV cache of " + std::to_string(batch) + " x " + std::to_string(capacity) +
                " tokens (" + bytes_text(uint64_t(std::min(cache_bytes, 1.8e19))) + " on " + w.device().str() + ")");
  }
}

Decoder::Decoder(Transformer& model, int64_t batch, int64_t capacity, const SparseSpec& spec)
    : model_(model), spec_(spec), cache_(make_cache(model, batch, capacity, spec)) {
  set_spec(spec);
}

void Decoder::set_spec(const SparseSpec& spec) {
  if (spec.block_size < 1 || spec.top_k < 1)
    throw Error("sparse decoding needs block size >= 1 and k >= 1, got block size " +
                std::to_string(spec.block_size) + ", k " + std::to_string(spec.top_k));
  spec_ = spec;
  cache_.set_pooling(spec.block_size, pooled_keys_dtype(spec.pooled_keys));
}

Tensor Decoder::feed(const Tensor& tokens, AttnMode mode) {
  torch::NoGradGuard no_grad;
  if (tokens.dim() != 2 || tokens.size(0) != cache_.batch() || tokens.size(1) < 1)
    throw Error("decoder: expected tokens (" + std::to_string(cache_.batch()) + ", T >= 1)");
  Tensor ids = tokens.to(device_of(model_), torch::kLong);
  const int64_t T = ids.size(1), chunk = std::max<int64_t>(1, prefill_chunk);
  Tensor last;
  for (int64_t s = 0; s < T; s += chunk) {
    const int64_t n = std::min(chunk, T - s);
    ForwardOptions fo;
    fo.cache = &cache_;
    fo.capture = capture;
    fo.last_logits_only = true;
    if (mode == AttnMode::Sparse) {
      // over few keys sparse attention is full attention (spec_for_keys)
      if (auto spec = spec_for_keys(spec_, cache_.length() + n)) {
        fo.mode = AttnMode::Sparse;
        fo.spec = *spec;
      }
    }
    ForwardOutput out = model_.forward(ids.narrow(1, s, n), fo);
    last = out.logits.select(1, 0).to(torch::kFloat);
    if (capture) {
      q_.clear();
      for (auto& q : out.q) q_.push_back(q.narrow(2, n - 1, 1));
    }
  }
  return last;
}

StepTrace trace_last_token(Decoder& d) {
  torch::NoGradGuard no_grad;
  KVCache& cache = d.cache();
  const auto& qs = d.last_queries();
  if (qs.empty() || cache.length() == 0) throw Error("trace: no token has been fed with capture on");
  StepTrace t;
  const int64_t Tk = cache.length();
  const SparseSpec full_spec = d.spec();
  std::optional<SparseSpec> spec = spec_for_keys(full_spec, Tk);
  t.position = Tk - 1;
  t.context = Tk;
  t.layers = cache.num_layers();
  t.heads = int(qs[0].size(1));
  t.kv_heads = int(cache.keys(0).size(1));
  t.block_size = full_spec.block_size;
  t.top_k = spec ? spec->top_k : 1;
  t.blocks = int((Tk + t.block_size - 1) / t.block_size);
  const int64_t H = t.heads, Hkv = t.kv_heads, G = H / Hkv, D = qs[0].size(3), nb = t.blocks, bs = t.block_size;
  for (int l = 0; l < t.layers; ++l) {
    Tensor q = qs[size_t(l)].narrow(0, 0, 1);                                        // (1, H, 1, D)
    Tensor k = cache.keys(l).narrow(0, 0, 1).to(torch::kFloat).select(0, 0);        // (Hkv, Tk, D)
    Tensor s = torch::matmul(q.to(torch::kFloat).view({Hkv, G, D}), k.transpose(1, 2)) / std::sqrt(double(D));
    Tensor p = torch::softmax(s, -1).reshape({H, Tk});                              // the last token sees every key
    Tensor padded = torch::zeros({H, nb * bs}, p.options());
    padded.narrow(1, 0, Tk).copy_(p);
    Tensor mass = padded.view({H, nb, bs}).sum(-1).to(torch::kCPU);               // (H, nb)
    Tensor blocks;  // (Hkv, K)
    if (spec) {
      blocks = select_blocks_pooled(q, cache.block_keys(l).narrow(0, 0, 1), Tk, *spec, Tk - 1).blocks[0]
                   .select(1, 0).to(torch::kCPU);
    } else {
      blocks = torch::zeros({Hkv, 1}, torch::kLong);  // one block holds the whole context
    }
    auto ma = mass.accessor<float, 2>();
    auto ba = blocks.accessor<int64_t, 2>();
    for (int64_t h = 0; h < H; ++h) {
      float kept = 0;
      for (int64_t j = 0; j < blocks.size(1); ++j)
        if (ba[h / G][j] >= 0) kept += ma[h][ba[h / G][j]];
      t.kept_mass.push_back(kept);
      for (int64_t j = 0; j < nb; ++j) t.block_mass.push_back(ma[h][j]);
    }
    for (int64_t g = 0; g < Hkv; ++g)
      for (int64_t j = 0; j < blocks.size(1); ++j) t.selected.push_back(ba[g][j]);
  }
  return t;
}

std::vector<int32_t> stop_tokens_for(const ModelConfig& c, int32_t tokenizer_eos) {
  std::vector<int32_t> stop;
  for (int id : c.eos_token_ids)
    if (id >= 0 && id < c.vocab_size) stop.push_back(id);
  if (stop.empty() && tokenizer_eos >= 0 && tokenizer_eos < c.vocab_size) stop.push_back(tokenizer_eos);
  return stop;
}

void check_prompt_ids(const std::vector<int32_t>& ids, int vocab_size, const std::string& which) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab_size)
      throw Error("generate: " + which + " has token id " + std::to_string(id) +
                  ", outside the model's vocabulary of " + std::to_string(vocab_size));
}

void validate(const GenerateOptions& o, int vocab_size) {
  validate(o.sampling);
  if (o.max_new_tokens < 1) throw Error("max new tokens must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (o.mode == AttnMode::Sparse && (o.spec.block_size < 1 || o.spec.top_k < 1))
    throw Error("sparse generation needs block size >= 1 and k >= 1");
  for (int32_t s : o.stop_tokens)
    if (s < 0 || s >= vocab_size)
      throw Error("stop token " + std::to_string(s) + " is outside the vocabulary (" + std::to_string(vocab_size) +
                  " tokens)");
}

double GenerateResult::tokens_per_second() const {
  const double tokens = double(decode_steps) * double(this->tokens.size());
  return decode_seconds > 0 ? tokens / decode_seconds : 0;
}

GenerateResult generate(Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                        const GenerateOptions& opt, const std::function<bool(const GenerateStep&)>& on_step) {
  const int vocab = model.config().vocab_size;
  validate(opt, vocab);
  if (prompts.empty()) throw Error("generate: no prompt");
  size_t shortest = prompts[0].size(), longest = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw Error("generate: prompt " + std::to_string(b) + " is empty");
    check_prompt_ids(prompts[b], vocab, "prompt " + std::to_string(b));
    shortest = std::min(shortest, prompts[b].size());
    longest = std::max(longest, prompts[b].size());
  }
  const int64_t B = int64_t(prompts.size());
  model.eval();
  using clock = std::chrono::steady_clock;
  auto seconds_since = [](clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); };

  Decoder d(model, B, int64_t(longest) + opt.max_new_tokens, opt.spec);
  d.capture = opt.trace;
  d.prefill_chunk = opt.prefill_chunk;
  at::Generator rng = at::detail::createCPUGenerator(opt.sampling.seed);
  GenerateResult r;
  r.tokens.resize(size_t(B));
  r.stop_reason.assign(size_t(B), "");
  for (auto& p : prompts) r.prompt_tokens += int64_t(p.size());

  // the part every prompt has, in one batch; longer prompts go on token by token
  Tensor prefix = torch::empty({B, int64_t(shortest)}, torch::kLong);
  for (int64_t b = 0; b < B; ++b)
    for (size_t i = 0; i < shortest; ++i) prefix[b][int64_t(i)] = prompts[size_t(b)][i];
  auto t0 = clock::now();
  Tensor logits = d.feed(prefix, opt.mode);
  double step_seconds = seconds_since(t0);
  r.prefill_seconds = step_seconds;
  std::vector<bool> finished(size_t(B), false);
  int64_t fed = int64_t(shortest);  // tokens of every sequence in the cache
  for (int index = 0;; ++index) {
    std::vector<int32_t> sampled = sample_tokens(logits, opt.sampling, rng);
    GenerateStep step;
    step.index = index;
    step.seconds = step_seconds;
    step.tokens.assign(size_t(B), -1);
    std::vector<int64_t> next(static_cast<size_t>(B));
    bool any_new = false;
    for (size_t b = 0; b < size_t(B); ++b) {
      auto& out = r.tokens[b];
      if (fed < int64_t(prompts[b].size())) {  // still reading its prompt
        next[b] = prompts[b][size_t(fed)];
        continue;
      }
      if (finished[b]) {  // keeps the batch in step; its outputs are dropped
        next[b] = out.back();
        continue;
      }
      out.push_back(sampled[b]);
      step.tokens[b] = sampled[b];
      next[b] = sampled[b];
      any_new = true;
      if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), sampled[b]) != opt.stop_tokens.end()) {
        finished[b] = true;
        r.stop_reason[b] = "stop token";
      } else if (int(out.size()) >= opt.max_new_tokens) {
        finished[b] = true;
        r.stop_reason[b] = "max tokens";
      }
    }
    step.finished = finished;
    if (opt.trace) step.trace = trace_last_token(d);
    if (any_new && on_step && !on_step(step)) {
      for (size_t b = 0; b < size_t(B); ++b)
        if (!finished[b]) r.stop_reason[b] = "cancelled";
      break;
    }
    if (std::all_of(finished.begin(), finished.end(), [](bool f) { return f; })) break;
    t0 = clock::now();
    logits = d.feed(torch::tensor(next, torch::kLong).view({B, 1}), opt.mode);
    step_seconds = seconds_since(t0);
    r.decode_seconds += step_seconds;
    ++r.decode_steps;
    ++fed;
  }
  return r;
}

}  // namespace ssalab
