#include "engine/eval/eval.h"

#include <cmath>
#include <random>

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
  SparseSpec own{model.config().block_size, model.config().block_counts};
  r.full = perplexity(model, val, opt.seq_len, opt.batches, opt.batch_size, AttnMode::Full, own, dev);
  std::string problem = check_sparse_spec(own, opt.seq_len);
  r.sparse = problem.empty() ? perplexity(model, val, opt.seq_len, opt.batches, opt.batch_size, AttnMode::Sparse, own, dev)
                             : NAN;
  for (int bs : block_sizes)
    for (int k : top_ks) {
      SweepPoint p;
      p.block_size = bs;
      p.top_k = k;
      p.receptive_field = bs * k;
      p.skipped = check_sparse_spec({bs, k}, opt.seq_len);
      p.ppl = p.skipped.empty()
                  ? perplexity(model, val, opt.seq_len, opt.batches, opt.batch_size, AttnMode::Sparse, {bs, k}, dev)
                  : NAN;
      r.sweep.push_back(p);
    }
  return r;
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
    throw Error("pass-key context " + std::to_string(context) + " is too short (needs > " + std::to_string(fixed + 8) +
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
      int digits_right = 0, digits = 0, all_right = 0;
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
      }
      r.accuracy = double(all_right) / std::max(1, trials);
      r.digit_accuracy = double(digits_right) / std::max(1, digits);
      r.mean_logprob = logprob / std::max(1, digits);
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
                 {"mean_logprob", r.mean_logprob}});
  return a;
}

}  // namespace ssalab
