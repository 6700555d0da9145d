// Random-weight checkpoints in the released layout (engine/checkpoint/
// random_checkpoint.h), what bench/bench_load.cpp measures: the folder loads
// as the gated LlamaNSA model, stores bf16, carries g_proj, and scores a text
// with finite NLLs; the 1B config says what the released SSA-1B says.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_checkpoint.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/eval/eval.h"
#include "engine/model/transformer.h"
#include "engine/util/files.h"
#include "tests/test_support.h"

using namespace ssalab;
using json = nlohmann::json;
using test::contains;
using test::error_of;
using test::TempDir;

TEST_CASE("a tiny random checkpoint in the released layout loads gated, stores bf16 and scores finitely",
          "[load_bench]") {
  TempDir d;
  const std::string dir = d / "tiny";
  ModelConfig c = released_layout_config("tiny");
  const uint64_t bytes = write_random_checkpoint(dir, c, torch::kBFloat16, 5);
  CHECK(bytes == uint64_t(c.num_parameters()) * 2);

  json cfg = json::parse(read_file(dir + "/config.json"));
  CHECK(cfg["architectures"] == json::array({"LlamaNSAForCausalLM"}));
  CHECK(cfg["model_type"] == "llama-nsa");
  CHECK(cfg["torch_dtype"] == "bfloat16");
  CHECK(cfg["block_size"] == 16);
  CHECK(cfg["block_counts"] == 16);
  CHECK(cfg["window_size"] == 0);
  CHECK(cfg["inference_mode"] == "sparse");
  CHECK(cfg["tie_word_embeddings"] == true);
  CHECK(cfg["rope_theta"] == 500000.0);
  CHECK(cfg["rope_scaling"].is_null());
  CHECK_FALSE(cfg.contains("selection_rule"));  // the released files do not say
  CHECK_FALSE(cfg.contains("bos_token_id"));    // 128000 is outside a 512-token vocabulary

  SafetensorsHeader h = read_safetensors_header(dir + "/model.safetensors");
  int gates = 0;
  for (const SafetensorsEntry& e : h.entries) {
    CHECK(e.dtype == "BF16");
    if (contains(e.name, "self_attn.g_proj.weight")) {
      ++gates;
      CHECK(e.shape == std::vector<int64_t>{c.num_heads * 3, c.hidden_size});
    }
  }
  CHECK(gates == c.num_layers);
  CHECK(int64_t(h.entries.size()) == model_tensor_count(c));

  LoadedCheckpoint ck = load_checkpoint(dir);
  CHECK(ck.config.arch == Arch::LlamaNSA);
  CHECK(ck.config.gate);
  CHECK(ck.config.selection_rule == "nsa-chunked");
  CHECK(ck.config.pooled_keys == "bf16");  // the released kernel's pooling
  CHECK(ck.plan.stored_dtype == "BF16");
  CHECK(ck.plan.dtype == torch::kFloat);  // the CPU computes in fp32
  CHECK(ck.plan.parameters == c.num_parameters());

  std::mt19937_64 rng(1);
  std::vector<int32_t> ids(300);
  for (auto& t : ids) t = int32_t(rng() % uint64_t(c.vocab_size));
  TokenScores s = score_tokens(*ck.model, ids, model_sparse_spec(ck.config), int(ids.size()) - 1);
  REQUIRE(s.nll_full.size() == ids.size() - 1);
  REQUIRE(s.nll_sparse.size() == ids.size() - 1);
  for (size_t i = 0; i < s.nll_full.size(); ++i) {
    REQUIRE(std::isfinite(s.nll_full[i]));
    REQUIRE(std::isfinite(s.nll_sparse[i]));
  }
  // random weights of scale 0.02: close to the uniform guess, log(vocab)
  CHECK(std::abs(std::log(s.ppl_full) - std::log(double(c.vocab_size))) < 1.0);
  CHECK(s.ppl_full != s.ppl_sparse);  // 18 blocks, k 16: sparse attention leaves some out

  // the same seed writes the same weights; the folder is replaced in place
  LoadedCheckpoint again = [&] {
    write_random_checkpoint(dir, c, torch::kBFloat16, 5);
    return load_checkpoint(dir);
  }();
  std::vector<int64_t> ids64(ids.begin(), ids.begin() + 40);
  torch::Tensor x = torch::tensor(ids64).view({1, 40});
  torch::NoGradGuard no_grad;
  CHECK(torch::equal(ck.model->forward(x).logits, again.model->forward(x).logits));
}

TEST_CASE("the 1B released-layout config is the released SSA-1B's", "[load_bench]") {
  ModelConfig c = released_layout_config("1b");
  json j = released_config_json(c, torch::kBFloat16);
  CHECK(j["architectures"] == json::array({"LlamaNSAForCausalLM"}));
  CHECK(j["model_type"] == "llama-nsa");
  CHECK(j["num_hidden_layers"] == 16);
  CHECK(j["hidden_size"] == 2048);
  CHECK(j["intermediate_size"] == 8192);
  CHECK(j["num_attention_heads"] == 32);
  CHECK(j["num_key_value_heads"] == 2);
  CHECK(j["head_dim"] == 64);
  CHECK(j["vocab_size"] == 128256);
  CHECK(j["rope_theta"] == 500000.0);
  CHECK(j["tie_word_embeddings"] == true);
  CHECK(j["block_size"] == 16);
  CHECK(j["block_counts"] == 16);
  CHECK(j["window_size"] == 0);
  CHECK(j["inference_mode"] == "sparse");
  CHECK(j["torch_dtype"] == "bfloat16");
  CHECK(j["bos_token_id"] == 128000);
  CHECK(j["eos_token_id"] == 128001);
  // read back as a loader reads a released config.json
  ModelConfig back = model_config_from_json(j);
  CHECK(to_json(back) == to_json(c));
  CHECK(back.selection_rule == "nsa-chunked");
  CHECK(back.pooled_keys == "bf16");
  CHECK(!j.contains("pooled_keys"));
  // ssalab's own llama-nsa files name both, and pool in fp32 when they say so
  // or when they name a rule but no pooling (files written before pooled_keys)
  nlohmann::json ours = to_json(c);
  CHECK(ours["pooled_keys"] == "bf16");
  ours["pooled_keys"] = "fp32";
  CHECK(model_config_from_json(ours).pooled_keys == "fp32");
  ours.erase("pooled_keys");
  CHECK(model_config_from_json(ours).pooled_keys == "fp32");
  ours["pooled_keys"] = "fp16";
  CHECK(contains(error_of([&] { model_config_from_json(ours); }), "pooled_keys must be \"fp32\" or \"bf16\""));
  CHECK(c.num_parameters() > 1200000000);
  CHECK(c.num_parameters() < 1250000000);
  CHECK(released_config_json(released_layout_config("300m"), torch::kHalf)["torch_dtype"] == "float16");
}

TEST_CASE("random checkpoints: unknown presets and dtypes are refused, other folders are never replaced",
          "[load_bench][bad-input]") {
  CHECK(contains(error_of([] { released_layout_config("7b"); }), "unknown released-layout preset '7b'"));
  TempDir d;
  CHECK(contains(error_of([&] { write_random_checkpoint(d / "x", released_layout_config("tiny"), torch::kDouble); }),
                 "bf16, fp16 or fp32"));
  d.file("keep/notes.txt", "mine");
  CHECK(contains(error_of([&] { write_random_checkpoint(d / "keep", released_layout_config("tiny"), torch::kBFloat16); }),
                 "refusing to replace"));
  CHECK(read_file(d / "keep/notes.txt") == "mine");
  CHECK_FALSE(file_exists(d / "keep/model.safetensors"));
}
