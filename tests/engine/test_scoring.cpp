// Per-token scoring of a text under full and sparse inference (eval's
// score_tokens), against direct forward passes.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "engine/eval/eval.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "test_helpers.h"

using namespace ssalab;

TEST_CASE("per-token NLL equals direct forward passes, window by window", "[eval][per-token]") {
  ModelConfig mc = test::micro_model();
  mc.block_size = 4;
  mc.block_counts = 2;
  Transformer model(mc);
  model.init_weights(5);
  std::vector<int32_t> ids;
  for (int i = 0; i < 2 * 24 + 3; ++i) ids.push_back(int32_t((i * 37 + 11) % mc.vocab_size));
  TokenScores s = score_tokens(model, ids, {4, 2}, 24);
  REQUIRE(s.nll_full.size() == ids.size() - 1);
  // the last window has 2 tokens, less than a block: sparse keeps all of it, so it equals full
  REQUIRE(s.nll_sparse.size() == s.nll_full.size());
  REQUIRE_THAT(s.sparse_note, Catch::Contains("window of 2 tokens"));
  for (size_t i = s.nll_full.size() - 2; i < s.nll_full.size(); ++i) REQUIRE(s.nll_sparse[i] == s.nll_full[i]);
  torch::NoGradGuard no_grad;
  for (int64_t start : {0, 24}) {
    std::vector<int64_t> in(ids.begin() + start, ids.begin() + start + 24);
    torch::Tensor logp = torch::log_softmax(model.forward(torch::tensor(in).view({1, 24})).logits[0], -1);
    for (int64_t i = 0; i < 24; ++i)
      REQUIRE(s.nll_full[size_t(start + i)] == Approx(-logp[i][ids[size_t(start + i + 1)]].item<double>()).margin(1e-5));
  }
  double mean = 0;
  for (float x : s.nll_full) mean += x;
  REQUIRE(s.ppl_full == Approx(std::exp(mean / double(s.nll_full.size()))));

  // a spec that keeps every block is full attention: equal scores, zero delta
  std::vector<int32_t> even(ids.begin(), ids.begin() + 49);
  TokenScores all = score_tokens(model, even, {4, 6}, 24);
  REQUIRE(all.nll_sparse.size() == all.nll_full.size());
  for (size_t i = 0; i < all.nll_full.size(); ++i) REQUIRE(all.nll_sparse[i] == Approx(all.nll_full[i]).margin(1e-5));
  // a real selection changes some tokens' scores
  TokenScores some = score_tokens(model, even, {4, 2}, 24);
  double diff = 0;
  for (size_t i = 0; i < some.nll_full.size(); ++i) diff += std::abs(some.nll_sparse[i] - some.nll_full[i]);
  REQUIRE(diff > 1e-4);
  nlohmann::json j = to_json(some, true);
  REQUIRE(j["nll_delta"].size() == some.nll_full.size());
  REQUIRE(j["selection_rule"] == "topk");
}

TEST_CASE("scoring refuses ids outside the vocabulary and texts too short", "[eval][per-token][bad-input]") {
  ModelConfig mc = test::micro_model();
  Transformer model(mc);
  REQUIRE_THROWS_WITH(score_tokens(model, {1, 2, mc.vocab_size}, {4, 2}, 8), Catch::Contains("has id 512"));
  REQUIRE_THROWS_WITH(score_tokens(model, {1}, {4, 2}, 8), Catch::Contains("at least 2 tokens"));
  REQUIRE_THROWS_WITH(score_tokens(model, {1, 2, 3, 4, 5}, {4, 0}, 4), Catch::Contains("top-k must be >= 1"));
}
