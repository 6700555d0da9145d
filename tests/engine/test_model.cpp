// The model: RoPE, shapes, HF names, tied embeddings, modes and the gate.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "test_helpers.h"

using namespace ssalab;
using torch::Tensor;

static Tensor rope_tables(const ModelConfig& c, int64_t T, Tensor* sin_out) {
  Tensor ang = torch::outer(torch::arange(T, torch::kFloat), rope_inv_freq(c));
  Tensor emb = torch::cat({ang, ang}, -1).view({1, 1, T, c.head_dim});
  *sin_out = emb.sin();
  return emb.cos();
}

TEST_CASE("RoPE keeps norms and makes scores depend on relative position only", "[model]") {
  ModelConfig c = test::micro_model();
  c.rope_theta = 10000;
  Tensor sin, cos = rope_tables(c, 40, &sin);
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
    REQUIRE(o.sparsity_loss.item<double>() > 0);
    REQUIRE(o.sparsity_loss.item<double>() == Approx(o.commitment_loss.item<double>()));
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
  ModelConfig c = test::micro_model();
  c.head_dim = 64;  // the kernels' head dims are 64 and 128
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.block_size = 16;
  c.block_counts = 4;
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
