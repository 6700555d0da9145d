// The model: RoPE, shapes, HF names, tied embeddings, modes and the gate.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/checkpoint/random_checkpoint.h"
#include "engine/model/transformer.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include <nlohmann/json.hpp>
#include "test_helpers.h"

using namespace ssalab;
using torch::Tensor;

TEST_CASE("RoPE keeps norms and makes scores depend on relative position only", "[model]") {
  ModelConfig c = test::micro_model();
  c.rope_theta = 10000;
  RopeTables rope = rope_tables(c, 0, 40, torch::kCPU, torch::kFloat);
  Tensor cos = rope.cos, sin = rope.sin;
  torch::manual_seed(1);
  Tensor q = torch::randn({1, 1, 1, c.head_dim}).expand({1, 1, 40, c.head_dim});
  Tensor k = torch::randn({1, 1, 1, c.head_dim}).expand({1, 1, 40, c.head_dim});
  Tensor qr = apply_rope(q, cos, sin), kr = apply_rope(k, cos, sin);
  REQUIRE(torch::allclose(qr.norm(2, -1), q.norm(2, -1), 1e-5, 1e-5));
  auto dot = [&](int t, int s) { return (qr[0][0][t] * kr[0][0][s]).sum().item<double>(); };
  REQUIRE(dot(10, 7) == Approx(dot(33, 30)).margin(1e-4));
  REQUIRE(dot(5, 5) == Approx(dot(39, 39)).margin(1e-4));
}

TEST_CASE("llama3 RoPE scaling slows only the long wavelengths", "[model]") {
  ModelConfig c = test::micro_model();
  c.head_dim = 64;
  Tensor base = rope_inv_freq(c);
  c.rope_scaling = 8;
  c.rope_original_max_position = 64;
  Tensor scaled = rope_inv_freq(c);
  REQUIRE(scaled[0].item<float>() == Approx(base[0].item<float>()));  // highest frequency kept
  REQUIRE(scaled[31].item<float>() == Approx(base[31].item<float>() / 8));  // lowest divided by factor
}

TEST_CASE("RoPE takes positions: an offset or a tensor gives the rows of the longer table", "[model]") {
  ModelConfig c = test::micro_model();
  RopeTables all = rope_tables(c, 0, 50, torch::kCPU, torch::kFloat);
  RopeTables late = rope_tables(c, 30, 20, torch::kCPU, torch::kFloat);
  CHECK(torch::equal(late.cos, all.cos.narrow(2, 30, 20)));
  CHECK(torch::equal(late.sin, all.sin.narrow(2, 30, 20)));
  RopeTables picked = rope_tables(c, torch::tensor({3, 49, 0}), torch::kFloat);
  CHECK(torch::equal(picked.cos[0][0][1], all.cos[0][0][49]));
  CHECK(torch::equal(picked.sin[0][0][0], all.sin[0][0][3]));
  CHECK_THROWS_AS(rope_tables(c, -1, 4, torch::kCPU, torch::kFloat), Error);
}

TEST_CASE("linear RoPE scaling divides every frequency by the factor", "[model]") {
  ModelConfig c = test::micro_model();
  Tensor base = rope_inv_freq(c);
  c.rope_type = RopeType::Linear;
  c.rope_scaling = 4;
  CHECK(torch::allclose(rope_inv_freq(c), base / 4));
}

TEST_CASE("a position offset moves RoPE only: full attention depends on relative positions", "[model]") {
  ModelConfig c = test::micro_model();
  Transformer m(c);
  m.init_weights(9);
  torch::NoGradGuard ng;
  Tensor tokens = torch::randint(0, c.vocab_size, {2, 32}, torch::kLong);
  ForwardOptions at0, at1000;
  at1000.position_offset = 1000;
  Tensor a = m.forward(tokens, at0).logits, b = m.forward(tokens, at1000).logits;
  CHECK(torch::equal(a, m.forward(tokens).logits));         // the default is offset 0
  CHECK(torch::allclose(a, b, 1e-4, 1e-4));                  // same relative positions
  at0.capture = at1000.capture = true;  // but q and k themselves are rotated further
  CHECK_FALSE(torch::allclose(m.forward(tokens, at0).q[0], m.forward(tokens, at1000).q[0], 1e-3, 1e-3));
}

TEST_CASE("forward shapes, HF tensor names and tied embeddings", "[model]") {
  ModelConfig c = test::micro_model();
  Transformer m(c);
  Tensor tokens = torch::randint(0, c.vocab_size, {2, 24}, torch::kLong);
  ForwardOutput out = m.forward(tokens);
  REQUIRE(out.logits.sizes() == std::vector<int64_t>{2, 24, c.vocab_size});
  std::set<std::string> names;
  for (auto& kv : m.hf_tensors()) names.insert(kv.first);
  for (const char* n : {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.self_attn.q_proj.weight",
                        "model.layers.0.self_attn.g_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                        "model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"})
    REQUIRE(names.count(n) == 1);
  REQUIRE(names.count("lm_head.weight") == 0);
  REQUIRE(int64_t(names.size()) == 2 + 10 * c.num_layers);  // q k v o g, gate up down, 2 norms
  int64_t params = 0;
  for (auto& p : m.parameters()) params += p.numel();
  REQUIRE(params == c.num_parameters());
  // g_proj is hidden -> heads * 3
  REQUIRE(m.layers->ptr<DecoderLayerImpl>(0)->self_attn->g_proj->weight.sizes() ==
          std::vector<int64_t>{c.num_heads * 3, c.hidden_size});
}

TEST_CASE("sparse mode with every block selected equals full mode; dual follows the drawn stream", "[model]") {
  ModelConfig c = test::micro_model();
  Transformer m(c);
  m.init_weights(5);
  torch::NoGradGuard ng;
  Tensor tokens = torch::randint(0, c.vocab_size, {1, 40}, torch::kLong);
  ForwardOptions full;
  Tensor lf = m.forward(tokens, full).logits;
  ForwardOptions all_blocks;
  all_blocks.mode = AttnMode::Sparse;
  all_blocks.spec = {8, 5};  // 40 tokens = 5 blocks
  REQUIRE(torch::allclose(m.forward(tokens, all_blocks).logits, lf, 1e-5, 1e-5));

  ForwardOptions sparse;
  sparse.mode = AttnMode::Sparse;
  sparse.spec = {8, 2};
  Tensor ls = m.forward(tokens, sparse).logits;
  REQUIRE_FALSE(torch::allclose(ls, lf, 1e-4, 1e-4));
  for (AttnMode mode : {AttnMode::Full, AttnMode::Sparse}) {
    ForwardOptions dual = sparse;
    dual.dual = true;
    dual.mode = mode;
    ForwardOutput o = m.forward(tokens, dual);
    REQUIRE(torch::allclose(o.logits, mode == AttnMode::Full ? lf : ls, 1e-6, 1e-6));
    REQUIRE(o.alignment_loss.item<double>() > 0);
  }
}

TEST_CASE("the g_slc gate scales the attention output", "[model]") {
  ModelConfig c = test::micro_model();
  Transformer m(c);
  torch::NoGradGuard ng;
  Tensor tokens = torch::randint(0, c.vocab_size, {1, 16}, torch::kLong);
  Tensor before = m.forward(tokens).logits.clone();
  // push only g_slc (index 1 of each head's triple) towards 0: output must change
  auto g = m.layers->ptr<DecoderLayerImpl>(0)->self_attn->g_proj->weight;
  for (int h = 0; h < c.num_heads; ++h) g[h * 3 + 0].fill_(0.3), g[h * 3 + 2].fill_(-0.3);
  Tensor other = m.forward(tokens).logits.clone();
  REQUIRE(torch::allclose(other, before, 1e-6, 1e-6));  // g_cmp / g_swa unused
  for (int h = 0; h < c.num_heads; ++h) g[h * 3 + 1].fill_(-0.5);
  REQUIRE_FALSE(torch::allclose(m.forward(tokens).logits, before, 1e-4, 1e-4));
}

TEST_CASE("every family builds exactly the tensors model_tensors() lists", "[model][hf]") {
  for (auto& [name, cfg] : test::family_micro_models()) {
    INFO(name);
    Transformer m(cfg);
    auto specs = model_tensors(cfg);
    auto made = m.hf_tensors();
    REQUIRE(int64_t(specs.size()) == model_tensor_count(cfg));
    REQUIRE(specs.size() == made.size());
    int64_t params = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      CHECK(specs[i].name == made[i].first);
      CHECK(specs[i].shape == made[i].second.sizes().vec());
      params += made[i].second.numel();
    }
    CHECK(params == cfg.num_parameters());
    // the config survives its own config.json
    CHECK(to_json(model_config_from_json(to_json(cfg))) == to_json(cfg));
    torch::NoGradGuard ng;
    CHECK(m.forward(torch::zeros({1, 8}, torch::kLong)).logits.sizes() == std::vector<int64_t>{1, 8, cfg.vocab_size});
  }
}

TEST_CASE("config.json is read in transformers 4.x and 5.x dialects", "[model][hf]") {
  nlohmann::json v4 = {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 100}, {"hidden_size", 64},
                       {"intermediate_size", 96}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                       {"rope_theta", 500000.0},
                       {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}};
  nlohmann::json v5 = v4;
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = v4["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  ModelConfig a = model_config_from_json(v4), b = model_config_from_json(v5);
  CHECK(to_json(a) == to_json(b));
  CHECK((a.rope_type == RopeType::Llama3 && a.rope_scaling == 8 && a.rope_original_max_position == 8192));
  CHECK((a.arch == Arch::Llama && !a.gate && !a.tied_embeddings && a.head_dim == 16 && a.num_kv_heads == 4));
  CHECK(a.norm_eps == 1e-6);  // HF's default when the file has none
  v4["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // the older key
  CHECK(model_config_from_json(v4).rope_type == RopeType::Linear);
  v4["rope_scaling"] = nullptr;
  v4["architectures"] = {"Qwen2ForCausalLM"};
  v4["use_sliding_window"] = true;
  v4["sliding_window"] = 32;
  v4["max_window_layers"] = 1;
  ModelConfig q = model_config_from_json(v4);
  CHECK((q.qkv_bias && !q.o_bias && q.sliding_window == 32 && q.sliding_window_from == 1));
  v4["max_window_layers"] = 2;  // no layer reaches it
  CHECK(model_config_from_json(v4).sliding_window == 0);
}

TEST_CASE("the 1b preset has the released 1B models' shape, with a trainable vocabulary", "[model]") {
  const ModelConfig ours = model_preset("1b"), released = released_layout_config("1b");
  ours.validate();
  CHECK(ours.hidden_size == released.hidden_size);
  CHECK(ours.intermediate_size == released.intermediate_size);
  CHECK(ours.num_layers == released.num_layers);
  CHECK(ours.num_heads == released.num_heads);
  CHECK(ours.num_kv_heads == released.num_kv_heads);
  CHECK(ours.head_dim == released.head_dim);
  CHECK(ours.vocab_size == 16384);
  CHECK(ours.num_parameters() > 900'000'000);
  CHECK(ours.num_parameters() < 1'100'000'000);
}

TEST_CASE("impossible model configs are rejected", "[model][bad-input]") {
  ModelConfig c = test::micro_model();
  c.num_kv_heads = 3;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("multiple of num_kv_heads"));
  c = test::micro_model();
  c.head_dim = 7;
  REQUIRE_THROWS_AS(c.validate(), Error);
  REQUIRE_THROWS_WITH(model_preset("huge"), Catch::Contains("unknown model preset"));
  TrainConfig t = test::micro_train(10);
  c = test::micro_model();
  c.block_counts = 9;  // 64 tokens / 8 = 8 blocks
  REQUIRE_THROWS_WITH(validate(t, c), Catch::Contains("larger than the number of blocks"));
  c = test::micro_model();
  c.block_size = 128;
  REQUIRE_THROWS_WITH(validate(t, c), Catch::Contains("does not fit in seq_len"));
  c = test::micro_model();
  c.block_counts = 0;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("top-k"));
}

TEST_CASE("on CUDA, bf16 training runs through the kernel backend", "[model][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  ModelConfig c = test::kernel_micro_model();
  torch::Tensor q = torch::randn({1, 4, 256, 64}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  torch::Tensor k = torch::randn({1, 1, 256, 64}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  REQUIRE(std::string(pick_backend(q, k, {16, 4}).name()) == "cuda");
  REQUIRE(std::string(pick_backend(q.to(torch::kFloat), k.to(torch::kFloat), {16, 4}).name()) == "reference");
  // kernel and reference agree on the model's output (bf16 tolerance)
  Transformer m(c);
  m.init_weights(3);
  m.to(torch::kCUDA);
  torch::NoGradGuard ng;
  torch::Tensor tokens = torch::randint(0, c.vocab_size, {2, 256}, torch::dtype(torch::kLong).device(torch::kCUDA));
  ForwardOptions fo;
  fo.mode = AttnMode::Sparse;
  fo.spec = {16, 4};
  torch::Tensor ref = m.forward(tokens, fo).logits;  // fp32: reference backend
  m.to(torch::kBFloat16);
  torch::Tensor fast = m.forward(tokens, fo).logits.to(torch::kFloat);  // bf16: CUDA backend
  double err = (fast - ref).abs().max().item<double>(), scale = ref.abs().max().item<double>();
  INFO("max error " << err << " of " << scale);
  REQUIRE(err < 0.05 * scale + 0.05);
}
