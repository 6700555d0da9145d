// Golden logits: tiny random models of every supported architecture, made
// and run by HF transformers (tests/fixtures/hf/make_fixtures.py, fp32, eager
// attention, on the CPU), must give the same logits in ssalab. Between them
// the cases cover llama3 and linear RoPE scaling, tied and untied heads,
// q/k/v biases, q/k norms with an explicit head_dim, a sliding window wider
// than the input, the g_proj gate, BF16 / F16 / F32 storage, a sharded
// checkpoint with an index, and config files in both transformers 4.x and
// 5.x (rope_parameters) style.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/model/transformer.h"
#include "engine/util/files.h"
#include "test_helpers.h"

using namespace ssalab;
using torch::Tensor;

namespace {

// Largest |ours - HF| over the logits; fails above `tol`.
void expect_logits(Transformer& m, const Tensor& ids, const Tensor& want, int64_t offset) {
  torch::NoGradGuard ng;
  ForwardOptions fo;
  fo.position_offset = offset;
  Tensor got = m.forward(ids.view({1, -1}), fo).logits[0];
  REQUIRE(got.sizes() == want.sizes());
  const double err = (got - want).abs().max().item<double>(), scale = want.abs().max().item<double>();
  INFO("max |ours - transformers| = " << err << " (logits up to " << scale << "), position offset " << offset);
  // fp32 end to end: differences are rounding (summation order, fp32 vs
  // fp64 RoPE frequencies), around 1e-6; a wrong rope, norm or gate is > 1e-2
  CHECK(err < 2e-5 * std::max(1.0, scale));
}

}  // namespace

TEST_CASE("logits equal HF transformers' for every supported architecture", "[hf][golden]") {
  auto manifest = nlohmann::json::parse(read_file(test::hf_fixture("manifest.json")));
  REQUIRE(manifest["cases"].size() == 6);
  for (const auto& c : manifest["cases"]) {
    const std::string name = c["name"];
    DYNAMIC_SECTION(name << " (" << c["architecture"].get<std::string>() << ", " << c["dialect"].get<std::string>()
                         << " config, " << c["stored"].get<std::string>() << ")") {
      LoadedCheckpoint ck = load_checkpoint(test::hf_fixture(name));
      CHECK(architecture_name(ck.config.arch) == c["architecture"].get<std::string>());
      SafetensorsFile golden = load_safetensors(test::hf_fixture(name + "/golden.safetensors"));
      Tensor ids = golden.tensors.at("input_ids");
      expect_logits(*ck.model, ids, golden.tensors.at("logits"), 0);
      if (golden.tensors.count("offset_logits"))
        expect_logits(*ck.model, ids, golden.tensors.at("offset_logits"),
                      std::stoll(golden.metadata.at("position_offset")));
    }
  }
}

TEST_CASE("the fixtures exercise the family flags they claim", "[hf][golden]") {
  auto cfg = [](const char* name) { return load_checkpoint(test::hf_fixture(name)).config; };
  ModelConfig c = cfg("llama3_untied");
  CHECK((c.rope_type == RopeType::Llama3 && c.rope_scaling == 8 && c.rope_original_max_position == 32));
  CHECK((!c.tied_embeddings && !c.gate && c.head_dim == 16));
  c = cfg("llama_tied_linear");
  CHECK((c.rope_type == RopeType::Linear && c.rope_scaling == 2 && c.tied_embeddings));
  c = cfg("mistral");
  CHECK((c.arch == Arch::Mistral && c.sliding_window == 64));
  c = cfg("qwen2_sharded");
  CHECK((c.qkv_bias && !c.o_bias && c.sliding_window == 0 && c.rope_theta == 1e6));
  c = cfg("qwen3");
  CHECK((c.qk_norm && c.head_dim == 32 && c.hidden_size == 64 && c.tied_embeddings));
  c = cfg("llama_nsa");
  CHECK((c.arch == Arch::LlamaNSA && c.gate && c.inference_mode == "full" && c.block_counts == 16));
}
