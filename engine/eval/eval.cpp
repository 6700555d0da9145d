#include "engine/eval/eval.h"

#include "engine/generate/generate.h"

#include <cmath>
#include <random>

#include "engine/memory/estimate.h"
#include "engine/model/transformer.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

static torch::Device model_device(Transformer& m) { return m.parameters().front().device(); }

PerplexityReport evaluate_perplexity(Transformer& model, const std::vector<int32_t>& val, const EvalOptions& opt,
                                     const std::vector<int>& top_ks, const std::vector<int>& block_sizes) {
  PerplexityReport r;
  auto dev = model_device(model);
  SparseSpec own = model_sparse_spec(model.config());
  require_memory(inference_memory(model.config(), opt.batch_size, opt.seq_len, AttnMode::Sparse, own, dev),
                 "evaluating batches of " + std::to_string(opt.batch_size) + " x " + std::to_string(opt.seq_len) +
                     " tokens",
                 dev);
  r.full = perplexity(model, val, opt.seq_len, opt.batches, opt.batch_size, AttnMode::Full, own, dev);
  std::string problem = check_sparse_spec(own, opt.seq_len);
  r.sparse = problem.empty() ? perplexity(model, val, opt.seq_len, opt.batches, opt.batch_size, AttnMode::Sparse, own, dev)
                             : NAN;
  for (int bs : block_sizes)
    for (int k : top_ks) {
      SparseSpec swept = own;  // the model's rule and key pooling at this block size and k
      swept.block_size = bs;
      swept.top_k = k;
      SweepPoint p;
      p.block_size = bs;
      p.top_k = k;
      p.receptive_field = bs * k;
      p.skipped = check_sparse_spec(swept, opt.seq_len);
      p.ppl = p.skipped.empty()
                  ? perplexity(model, val, opt.seq_len, opt.batches, opt.batch_size, AttnMode::Sparse, swept, dev)
                  : NAN;
      r.sweep.push_back(p);
    }
  return r;
}

// -log p(target) per position of one window, as floats on the CPU.
static std::vector<float> window_nll(Transformer& model, const std::vector<int32_t>& tokens, int64_t start, int64_t n,
                                     AttnMode mode, const SparseSpec& spec, torch::Device dev) {
  std::vector<int64_t> ids(tokens.begin() + start, tokens.begin() + start + n + 1);
  Tensor all = torch::tensor(ids, torch::kLong).view({1, n + 1}).to(dev);
  ForwardOptions fo;
  fo.mode = mode;
  fo.spec = spec;
  Tensor logits = model.forward(all.narrow(1, 0, n), fo).logits[0].to(torch::kFloat);  // (n, V)
  Tensor nll = -torch::log_softmax(logits, -1).gather(1, all[0].narrow(0, 1, n).view({n, 1})).view({n});
  nll = nll.to(torch::kCPU).contiguous();
  return std::vector<float>(nll.data_ptr<float>(), nll.data_ptr<float>() + n);
}

static double ppl_of(const std::vector<float>& nll) {
  double sum = 0;
  for (float x : nll) sum += x;
  return nll.empty() ? NAN : std::exp(sum / double(nll.size()));
}

TokenScores score_tokens(Transformer& model, const std::vector<int32_t>& tokens, const SparseSpec& spec, int window) {
  if (tokens.size() < 2) throw Error("scoring needs at least 2 tokens, the text has " + std::to_string(tokens.size()));
  if (window < 1) throw Error("scoring window must be >= 1 token");
  const int32_t vocab = int32_t(model.config().vocab_size);
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      throw Error("token " + std::to_string(i) + " has id " + std::to_string(tokens[i]) + ", outside the model's " +
                  std::to_string(vocab) + "-token vocabulary");
  torch::NoGradGuard no_grad;
  model.eval();
  auto dev = model_device(model);
  TokenScores s;
  s.tokens = tokens;
  s.spec = spec;
  s.window = window;
  const int64_t n = int64_t(tokens.size()) - 1;
  for (int64_t start = 0; start < n; start += window) {
    const int64_t len = std::min<int64_t>(window, n - start);
    std::vector<float> full = window_nll(model, tokens, start, len, AttnMode::Full, spec, dev);
    s.nll_full.insert(s.nll_full.end(), full.begin(), full.end());
    // A short last window can hold fewer blocks than k (or less than one
    // block): selection then keeps every block, so sparse attention there is
    // full attention, exactly. Any other problem with the spec is an error.
    std::string why = check_sparse_spec(spec, len);
    const int64_t blocks = spec.block_size >= 1 ? (len + spec.block_size - 1) / spec.block_size : 0;
    const bool keeps_all = spec.block_size >= 1 && spec.top_k >= 1 && (spec.block_size > len || spec.top_k > blocks);
    if (!why.empty() && !keeps_all) throw Error("sparse scoring: " + why);
    if (why.empty()) {
      std::vector<float> sparse = window_nll(model, tokens, start, len, AttnMode::Sparse, spec, dev);
      s.nll_sparse.insert(s.nll_sparse.end(), sparse.begin(), sparse.end());
    } else {
      s.nll_sparse.insert(s.nll_sparse.end(), full.begin(), full.end());
      s.sparse_note = "the window of " + std::to_string(len) + " tokens at token " + std::to_string(start) +
                      " keeps every block under sparse attention (" + why + ")";
    }
  }
  s.ppl_full = ppl_of(s.nll_full);
  s.ppl_sparse = ppl_of(s.nll_sparse);
  return s;
}

nlohmann::json to_json(const TokenScores& s, bool per_token) {
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  nlohmann::json j = {{"tokens", s.tokens.size()},
                      {"scored", s.nll_full.size()},
                      {"window", s.window},
                      {"block_size", s.spec.block_size},
                      {"top_k", s.spec.top_k},
                      {"selection_rule", to_string(s.spec.rule)},
                      {"pooled_keys", to_string(s.spec.pooled_keys)},
                      {"ppl_full", num(s.ppl_full)},
                      {"ppl_sparse", num(s.ppl_sparse)}};
  if (!s.sparse_note.empty()) j["sparse_note"] = s.sparse_note;
  if (per_token) {
    j["token_ids"] = s.tokens;
    j["nll_full"] = s.nll_full;
    j["nll_sparse"] = s.nll_sparse;
    std::vector<float> delta;
    for (size_t i = 0; i < s.nll_sparse.size(); ++i) delta.push_back(s.nll_sparse[i] - s.nll_full[i]);
    j["nll_delta"] = delta;
    j["nll_units"] = "nats; entry i scores token i+1";
  }
  return j;
}

static const char* kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";

static int passkey_fixed_tokens(const Tokenizer& tok) {
  return int(tok.encode("The pass key is 12345. Remember it. 12345 is the pass key. ").size() +
             tok.encode("What is the pass key? The pass key is").size());
}

int passkey_min_context(const Tokenizer& tok) { return passkey_fixed_tokens(tok) + 9; }

std::pair<std::vector<int>, std::vector<int>> passkey_prompt(const Tokenizer& tok, int context, double depth,
                                                             const std::string& key) {
  std::vector<int> filler = tok.encode(kFiller);
  std::vector<int> needle = tok.encode("The pass key is " + key + ". Remember it. " + key + " is the pass key. ");
  std::vector<int> question = tok.encode("What is the pass key? The pass key is");
  std::vector<int> answer = tok.encode(key);
  const int fixed = int(needle.size() + question.size());
  if (context < fixed + 8)
    throw Error("pass-key context " + std::to_string(context) + " is too short (needs at least " + std::to_string(fixed + 8) +
                " tokens)");
  const int fill = context - fixed;
  const int before = int(std::lround(depth * fill));
  std::vector<int> prompt;
  prompt.reserve(context);
  for (int i = 0; i < before; ++i) prompt.push_back(filler[i % filler.size()]);
  prompt.insert(prompt.end(), needle.begin(), needle.end());
  for (int i = before; i < fill; ++i) prompt.push_back(filler[i % filler.size()]);
  prompt.insert(prompt.end(), question.begin(), question.end());
  return {prompt, answer};
}

std::vector<NeedleResult> passkey_test(Transformer& model, const Tokenizer& tok, const std::vector<int>& contexts,
                                       const std::vector<double>& depths, int trials, AttnMode mode,
                                       const SparseSpec& spec, uint64_t seed) {
  torch::NoGradGuard no_grad;
  model.eval();
  auto dev = model_device(model);
  std::vector<NeedleResult> out;
  std::mt19937_64 rng(seed);
  for (int ctx : contexts)
    for (double depth : depths) {
      NeedleResult r;
      r.context = ctx;
      r.depth = depth;
      r.mode = to_string(mode);
      r.trials = trials;
      int digits_right = 0, digits = 0, all_right = 0, generated_all_right = 0;
      double logprob = 0;
      for (int trial = 0; trial < trials; ++trial) {
        std::string key = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
        auto [prompt, answer] = passkey_prompt(tok, ctx, depth, key);
        // teacher forcing: feed prompt + answer[:-1], read predictions at the answer positions
        std::vector<int64_t> ids(prompt.begin(), prompt.end());
        ids.insert(ids.end(), answer.begin(), answer.end() - 1);
        const int64_t T = int64_t(ids.size());
        ForwardOptions fo;
        fo.mode = mode;
        fo.spec = spec;
        if (mode == AttnMode::Sparse && !check_sparse_spec(spec, T).empty())
          throw Error("pass-key test: " + check_sparse_spec(spec, T));
        Tensor logits = model.forward(torch::tensor(ids, torch::kLong).view({1, T}).to(dev), fo).logits[0];
        Tensor logp = torch::log_softmax(logits.narrow(0, int64_t(prompt.size()) - 1, int64_t(answer.size())).to(torch::kFloat), -1)
                          .to(torch::kCPU);
        bool ok = true;
        for (size_t i = 0; i < answer.size(); ++i) {
          int pred = int(logp[i].argmax().item<int64_t>());
          bool right = pred == answer[i];
          ok = ok && right;
          digits_right += right;
          ++digits;
          logprob += logp[i][answer[i]].item<double>();
        }
        all_right += ok;
        // by generation: the prompt alone, then greedy decoding with the cache
        GenerateOptions go;
        go.mode = mode;
        go.spec = spec;
        go.max_new_tokens = int(answer.size()) + 2;  // room for a leading space piece
        std::vector<int32_t> p32(prompt.begin(), prompt.end());
        std::vector<int32_t> gen = generate(model, {p32}, go).tokens[0];
        std::string text = tok.decode(std::vector<int>(gen.begin(), gen.end()));
        const size_t start = text.find_first_not_of(" ");
        const bool generated_right = start != std::string::npos && text.compare(start, key.size(), key) == 0;
        generated_all_right += generated_right;
        if (trial == 0) r.generated_example = text;
      }
      r.accuracy = double(all_right) / std::max(1, trials);
      r.digit_accuracy = double(digits_right) / std::max(1, digits);
      r.mean_logprob = logprob / std::max(1, digits);
      r.generated_accuracy = double(generated_all_right) / std::max(1, trials);
      out.push_back(r);
    }
  return out;
}

nlohmann::json to_json(const PerplexityReport& r) {
  auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
  nlohmann::json sweep = nlohmann::json::array();
  for (auto& p : r.sweep) {
    nlohmann::json j = {{"block_size", p.block_size}, {"top_k", p.top_k}, {"receptive_field", p.receptive_field},
                        {"ppl", num(p.ppl)}};
    if (!p.skipped.empty()) j["skipped"] = p.skipped;
    sweep.push_back(j);
  }
  return {{"ppl_full", num(r.full)}, {"ppl_sparse", num(r.sparse)}, {"sweep", sweep}};
}

nlohmann::json to_json(const std::vector<NeedleResult>& rs) {
  nlohmann::json a = nlohmann::json::array();
  for (auto& r : rs)
    a.push_back({{"context", r.context},   {"depth", r.depth},           {"mode", r.mode},
                 {"trials", r.trials},     {"accuracy", r.accuracy},     {"digit_accuracy", r.digit_accuracy},
                 {"mean_logprob", r.mean_logprob}, {"generated_accuracy", r.generated_accuracy},
                 {"generated_example", r.generated_example}});
  return a;
}

}  // namespace ssalab
