// Generation with a KV cache (engine/generate): the cache against pooling
// from scratch, every decoding step's logits against a full forward over the
// sequence so far (each family, full and sparse, both selection rules),
// sampling, stop tokens, ragged batches, the step trace, bad settings, and
// HF transformers' own greedy generation where the fixtures carry it.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <random>

#include "engine/attention/complete_blocks.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/eval/eval.h"
#include "engine/generate/generate.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "tests/engine/tensor_checks.h"
#include "tests/engine/test_helpers.h"

using namespace ssalab;
using torch::Tensor;

namespace {

// Weights large enough that attention is far from uniform (and selection
// far from ties), as trained models are.
void sharpen(Transformer& m, uint64_t seed) {
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  for (auto& p : m.named_parameters())
    if (p.key().find("norm") == std::string::npos) p.value().copy_(torch::randn_like(p.value()) * 0.3);
}

// A micro model of `c` with sharpened weights, ready for inference.
std::shared_ptr<Transformer> sharp_model(const ModelConfig& c, uint64_t seed) {
  auto m = std::make_shared<Transformer>(c);
  sharpen(*m, seed);
  m->eval();
  return m;
}

// Last-row logits of a full forward over `ids` (1, T), as a decoder must give.
Tensor full_forward_last(Transformer& m, const Tensor& ids, AttnMode mode, const SparseSpec& spec) {
  ForwardOptions fo;
  if (mode == AttnMode::Sparse)
    if (auto s = spec_for_keys(spec, ids.size(1))) {
      fo.mode = AttnMode::Sparse;
      fo.spec = *s;
    }
  return m.forward(ids, fo).logits.select(1, ids.size(1) - 1);
}

}  // namespace

TEST_CASE("the KV cache keeps keys, values and pooled blocks as they complete", "[generate]") {
  ModelConfig c = test::micro_model();
  KVCache cache(c, 2, 40, 4, torch::kCPU, torch::kFloat);
  torch::manual_seed(3);
  Tensor k = torch::randn({2, c.num_kv_heads, 37, c.head_dim}), v = torch::randn_like(k);
  // appended in uneven pieces: 5, 1, 11, 20
  int64_t done = 0;
  for (int64_t n : {5, 1, 11, 20}) {
    for (int l = 0; l < c.num_layers; ++l) {
      auto [ka, va] = cache.append(l, k.narrow(2, done, n), v.narrow(2, done, n));
      CHECK(ka.size(2) == done + n);
      CHECK(test::max_diff(ka, k.narrow(2, 0, done + n)) == 0);
      CHECK(test::max_diff(cache.block_keys(l), complete_block_means(k.narrow(2, 0, done + n), 4)) < 1e-6);
    }
    cache.commit();
    done += n;
    CHECK(cache.length() == done);
  }
  CHECK(test::max_diff(cache.values(1), v) == 0);
  cache.set_pooling(6, torch::kFloat);  // the UI's block-size slider
  CHECK(test::max_diff(cache.block_keys(0), complete_block_means(k, 6)) < 1e-6);
  cache.set_pooling(6, torch::kBFloat16);  // PooledKeys::Bf16: the fp32 means rounded, half the bytes
  CHECK(cache.block_keys(0).scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(cache.block_keys(0), complete_block_means(k, 6).to(torch::kBFloat16)));
  cache.truncate(10);
  CHECK(cache.keys(0).size(2) == 10);

  SECTION("bad use is refused by name") {
    Tensor big = torch::randn({2, c.num_kv_heads, 31, c.head_dim});
    CHECK_THROWS_WITH(cache.append(0, big, big), Catch::Contains("exceed its 40-token capacity"));
    Tensor wrong = torch::randn({1, c.num_kv_heads, 1, c.head_dim});
    CHECK_THROWS_WITH(cache.append(0, wrong, wrong), Catch::Contains("do not match the cache's batch 2"));
    Tensor one = k.narrow(2, 0, 1);
    cache.append(0, one, one);
    CHECK_THROWS_WITH(cache.commit(), Catch::Contains("layer 1 appended 0 tokens"));
    CHECK_THROWS_WITH(KVCache(c, 0, 8, 4, torch::kCPU, torch::kFloat), Catch::Contains("batch must be >= 1"));
    CHECK_THROWS_WITH(KVCache(c, 1, 8, 0, torch::kCPU, torch::kFloat), Catch::Contains("block size must be >= 1"));
  }
  SECTION("bf16 pooled keys are rounded as blocks complete") {
    KVCache half(c, 2, 40, 4, torch::kCPU, torch::kFloat, torch::kBFloat16);
    for (int l = 0; l < c.num_layers; ++l) half.append(l, k.narrow(2, 0, 37), v.narrow(2, 0, 37));
    half.commit();
    CHECK(torch::equal(half.block_keys(1), complete_block_means(k, 4).to(torch::kBFloat16)));
    CHECK(half.bytes() < KVCache(c, 2, 40, 4, torch::kCPU, torch::kFloat).bytes());
  }
}

TEST_CASE("selection from pooled keys is select_blocks", "[generate][attention]") {
  auto x = test::random_qkv(2, 4, 2, 5, 70, 8, 11, torch::kFloat);
  for (auto rule : {SelectionRule::TopK, SelectionRule::NsaChunked}) {
    SparseSpec spec{2, 16, rule};
    Selection a = select_blocks(x.q, x.k, spec, 65);
    Selection b = select_blocks_pooled(x.q, complete_block_means(x.k, 2), 70, spec, 65);
    CHECK(torch::equal(a.blocks, b.blocks));
  }
  // bf16 pooling: select_blocks rounds the means as a bf16 cache stores them
  for (auto rule : {SelectionRule::TopK, SelectionRule::NsaChunked}) {
    SparseSpec spec{2, 16, rule, PooledKeys::Bf16};
    Selection a = select_blocks(x.q, x.k, spec, 65);
    Selection b = select_blocks_pooled(x.q, complete_block_means(x.k, 2).to(torch::kBFloat16), 70, spec, 65);
    CHECK(torch::equal(a.blocks, b.blocks));
  }
  CHECK_THROWS_WITH(select_blocks_pooled(x.q, complete_block_means(x.k, 4), 70, SparseSpec{2, 4}, 65),
                    Catch::Contains("17 pooled block keys for 70 keys at block size 2"));
  CHECK_THROWS_WITH(select_blocks_pooled(x.q, complete_block_means(x.k, 2), 70, SparseSpec{2, 4}, 66),
                    Catch::Contains("need keys up to there"));
}

TEST_CASE("bf16 pooling rounds each block's mean before scoring, as the released kernel does", "[generate][attention]") {
  // one head, d2, blocks of 2: block 0's keys 1 + 3/512, block 1's 1.0068,
  // block 2 holds the query. In fp32 block 1 scores higher; both means round
  // to bf16's 1.0078125, a tie that goes to the lower index
  Tensor q = torch::zeros({1, 1, 1, 2}), k = torch::zeros({1, 1, 6, 2});
  q[0][0][0][0] = 1.0;
  k.select(3, 0).narrow(2, 0, 2).fill_(1.0 + 3.0 / 512);
  k.select(3, 0).narrow(2, 2, 2).fill_(1.0068);
  CHECK(torch::equal(select_blocks(q, k, SparseSpec{2, 2}, 5).blocks.flatten(), torch::tensor({2, 1}, torch::kLong)));
  SparseSpec bf16{2, 2, SelectionRule::TopK, PooledKeys::Bf16};
  CHECK(torch::equal(select_blocks(q, k, bf16, 5).blocks.flatten(), torch::tensor({2, 0}, torch::kLong)));
  CHECK(pooled_keys_from_string("bf16") == PooledKeys::Bf16);
  CHECK_THROWS_WITH(pooled_keys_from_string("fp8"), Catch::Contains("unknown key pooling 'fp8'"));
}

TEST_CASE("every decoding step equals a full forward over the sequence so far", "[generate]") {
  torch::NoGradGuard ng;
  struct Setting {
    const char* name;
    AttnMode mode;
    SparseSpec spec;
  };
  // block 2, k 16: the nsa-chunked rule differs from top-k once a query's
  // block is past the first 16 (position 32), which the prompt reaches
  const std::vector<Setting> settings = {{"full", AttnMode::Full, {4, 3}},
                                         {"sparse topk", AttnMode::Sparse, {4, 3, SelectionRule::TopK}},
                                         {"sparse topk k16", AttnMode::Sparse, {2, 16, SelectionRule::TopK}},
                                         {"sparse nsa-chunked", AttnMode::Sparse, {2, 16, SelectionRule::NsaChunked}},
                                         {"sparse nsa-chunked, bf16 pooled keys", AttnMode::Sparse,
                                          {2, 16, SelectionRule::NsaChunked, PooledKeys::Bf16}}};
  uint64_t seed = 1;
  for (auto& [family, config] : test::family_micro_models())
    for (const Setting& s : settings) {
      INFO(family << ", " << s.name);
      Transformer m(config);
      sharpen(m, seed++);
      m.eval();
      torch::manual_seed(seed);
      const int64_t prompt = 45, steps = 12;
      Tensor ids = torch::randint(0, config.vocab_size, {1, prompt + steps}, torch::kLong);
      Decoder d(m, 1, prompt + steps, s.spec);
      d.prefill_chunk = 16;  // a chunked prefill: three pieces
      Tensor logits = d.feed(ids.narrow(1, 0, prompt), s.mode);
      double worst = test::max_diff(logits, full_forward_last(m, ids.narrow(1, 0, prompt), s.mode, s.spec));
      for (int64_t t = prompt; t < prompt + steps; ++t) {
        logits = d.feed(ids.narrow(1, t, 1), s.mode);
        worst = std::max(worst, test::max_diff(logits, full_forward_last(m, ids.narrow(1, 0, t + 1), s.mode, s.spec)));
      }
      CHECK(worst < 1e-4);
    }
}

TEST_CASE("sparse decoding from the first token: one block is full attention, then k grows to the blocks there are",
          "[generate]") {
  torch::NoGradGuard ng;
  ModelConfig c = test::micro_model(97);
  auto model = sharp_model(c, 5);
  Transformer& m = *model;
  SparseSpec spec{4, 3};
  Tensor ids = torch::randint(0, c.vocab_size, {1, 30}, torch::kLong);
  Decoder d(m, 1, 30, spec);
  for (int64_t t = 0; t < 30; ++t) {
    Tensor logits = d.feed(ids.narrow(1, t, 1), AttnMode::Sparse);
    CHECK(test::max_diff(logits, full_forward_last(m, ids.narrow(1, 0, t + 1), AttnMode::Sparse, spec)) < 1e-4);
  }
  CHECK_FALSE(spec_for_keys(spec, 4));
  CHECK(spec_for_keys(spec, 5)->top_k == 2);
  CHECK(spec_for_keys(spec, 30)->top_k == 3);
  // and sparse differs from full once blocks are left out
  d.reset();
  Tensor sparse = d.feed(ids, AttnMode::Sparse);
  d.reset();
  CHECK(test::max_diff(sparse, d.feed(ids, AttnMode::Full)) > 1e-3);
}

TEST_CASE("sampling: greedy, temperature, top-p, seeds", "[generate]") {
  Tensor logits = torch::tensor({{0.f, 3.f, 1.f, 2.9f}, {5.f, 0.f, 0.f, 0.f}});
  auto rng = at::detail::createCPUGenerator(1);
  CHECK(sample_tokens(logits, {}, rng) == std::vector<int32_t>{1, 0});
  // a top_p below the best token's probability leaves only that token
  SamplingOptions nucleus{1.0, 0.3, 0};
  for (int i = 0; i < 20; ++i) CHECK(sample_tokens(logits, nucleus, rng) == std::vector<int32_t>{1, 0});
  // top_p 0.9 of the first row: tokens 1 and 3 (0.50 + 0.46), never 0 or 2
  SamplingOptions some{1.0, 0.9, 0};
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(sample_tokens(logits, some, rng)[0]);
  CHECK(seen == std::set<int32_t>{1, 3});
  // a high temperature reaches every token; the same seed repeats itself
  SamplingOptions hot{50.0, 1.0, 0};
  auto draw = [&](uint64_t seed) {
    auto g = at::detail::createCPUGenerator(seed);
    std::vector<int32_t> all;
    for (int i = 0; i < 40; ++i) all.push_back(sample_tokens(logits, hot, g)[0]);
    return all;
  };
  auto a = draw(9);
  CHECK(a == draw(9));
  CHECK(a != draw(10));
  CHECK(std::set<int32_t>(a.begin(), a.end()).size() == 4);
  CHECK_THROWS_WITH(sample_tokens(logits, SamplingOptions{-1, 1, 0}, rng), Catch::Contains("temperature"));
  CHECK_THROWS_WITH(sample_tokens(logits, SamplingOptions{1, 0, 0}, rng), Catch::Contains("top_p must be in (0, 1]"));
  CHECK_THROWS_WITH(sample_tokens(logits, SamplingOptions{NAN, 1, 0}, rng), Catch::Contains("temperature"));
}

TEST_CASE("generate: greedy tokens are the argmax of full forwards, stop tokens end a sequence, ragged batches",
          "[generate]") {
  torch::NoGradGuard ng;
  ModelConfig c = test::micro_model(97);
  auto model = sharp_model(c, 8);
  Transformer& m = *model;
  GenerateOptions o;
  o.spec = {4, 3};
  o.max_new_tokens = 10;
  std::vector<int32_t> p0 = {5, 17, 3, 9, 40, 22, 8, 1, 60, 33, 2, 7, 19};
  std::vector<int32_t> p1 = {11, 4, 90};
  for (AttnMode mode : {AttnMode::Full, AttnMode::Sparse}) {
    o.mode = mode;
    GenerateResult one = generate(m, {p0}, o);
    REQUIRE(one.tokens[0].size() == 10);
    CHECK(one.stop_reason[0] == "max tokens");
    // greedy by hand: argmax of a full forward, appended
    std::vector<int64_t> seq(p0.begin(), p0.end());
    for (int i = 0; i < 10; ++i) {
      Tensor ids = torch::tensor(seq, torch::kLong).view({1, -1});
      int64_t next = full_forward_last(m, ids, mode, o.spec).argmax(-1).item<int64_t>();
      CHECK(one.tokens[0][size_t(i)] == next);
      seq.push_back(next);
    }
    // a batch of prompts of different lengths gives what each gives alone
    GenerateResult both = generate(m, {p1, p0}, o);
    CHECK(both.tokens[1] == one.tokens[0]);
    CHECK(both.tokens[0] == generate(m, {p1}, o).tokens[0]);
    // the third token as a stop token: that sequence ends there, the other goes on
    GenerateOptions stop = o;
    stop.stop_tokens = {one.tokens[0][2]};
    GenerateResult s = generate(m, {p0, p1}, stop);
    CHECK(s.tokens[0].size() <= 3);
    CHECK(s.stop_reason[0] == "stop token");
    CHECK(s.tokens[0].back() == one.tokens[0][2]);
  }
  // seeded sampling repeats itself; the callback sees every step and can stop it
  o.sampling = {0.8, 0.95, 42};
  auto a = generate(m, {p0, p1}, o), b = generate(m, {p0, p1}, o);
  CHECK(a.tokens == b.tokens);
  int seen = 0;
  GenerateResult cut = generate(m, {p0}, o, [&](const GenerateStep& st) {
    CHECK(st.index == seen);
    return ++seen < 4;
  });
  CHECK(cut.tokens[0].size() == 4);
  CHECK(cut.stop_reason[0] == "cancelled");
  CHECK(a.tokens_per_second() > 0);
}

TEST_CASE("the step trace: attention mass per block, the sparse selection and its kept mass", "[generate]") {
  torch::NoGradGuard ng;
  ModelConfig c = test::micro_model(97);
  auto model = sharp_model(c, 12);
  Transformer& m = *model;
  SparseSpec spec{4, 3};
  Tensor ids = torch::randint(0, c.vocab_size, {1, 26}, torch::kLong);
  Decoder d(m, 1, 26, spec);
  d.capture = true;
  d.feed(ids, AttnMode::Sparse);
  StepTrace t = trace_last_token(d);
  CHECK((t.position == 25 && t.blocks == 7 && t.top_k == 3));
  REQUIRE(t.block_mass.size() == size_t(c.num_layers * c.num_heads * 7));
  // against the q and k of the last token in a sparse forward over all of it
  ForwardOptions fo;
  fo.capture = true;
  fo.mode = AttnMode::Sparse;
  fo.spec = spec;
  ForwardOutput ref = m.forward(ids, fo);
  for (int l = 0; l < c.num_layers; ++l) {
    Tensor q = ref.q[size_t(l)].narrow(2, 25, 1);
    Selection sel = select_blocks(q, ref.k[size_t(l)], spec, 25);
    for (int g = 0; g < c.num_kv_heads; ++g)
      for (int j = 0; j < 3; ++j) CHECK(t.selected[size_t((l * c.num_kv_heads + g) * 3 + j)] == sel.blocks[0][g][0][j].item<int64_t>());
    for (int h = 0; h < c.num_heads; ++h) {
      double total = 0;
      for (int j = 0; j < 7; ++j) total += t.block_mass[size_t((l * c.num_heads + h) * 7 + j)];
      CHECK(total == Approx(1.0).epsilon(1e-5));
      float kept = t.kept_mass[size_t(l * c.num_heads + h)];
      CHECK((kept > 0 && kept <= 1.0001f));
    }
  }
}

TEST_CASE("generation refuses bad settings by name, before any work", "[generate][bad-input]") {
  ModelConfig c = test::micro_model(97);
  Transformer m(c);
  GenerateOptions o;
  CHECK_THROWS_WITH(generate(m, {}, o), Catch::Contains("no prompt"));
  CHECK_THROWS_WITH(generate(m, {{}}, o), Catch::Contains("prompt 0 is empty"));
  CHECK_THROWS_WITH(generate(m, {{1, 2, 97}}, o), Catch::Contains("token id 97, outside the model's vocabulary of 97"));
  o.max_new_tokens = 0;
  CHECK_THROWS_WITH(generate(m, {{1, 2}}, o), Catch::Contains("max new tokens must be >= 1"));
  o.max_new_tokens = 4;
  o.stop_tokens = {500};
  CHECK_THROWS_WITH(generate(m, {{1, 2}}, o), Catch::Contains("stop token 500 is outside the vocabulary"));
  o.stop_tokens = {};
  o.spec.top_k = 0;
  CHECK_THROWS_WITH(generate(m, {{1, 2}}, o), Catch::Contains("k >= 1"));
  o.spec.top_k = 2;
  o.sampling.top_p = 1.5;
  CHECK_THROWS_WITH(generate(m, {{1, 2}}, o), Catch::Contains("top_p"));
  // a cache that does not fit is refused with its size before anything is allocated
  o.sampling.top_p = 1;
  o.max_new_tokens = 2000000000;
  CHECK_THROWS_WITH(generate(m, {{1, 2}}, o),
                    Catch::Contains("generating 1 x 2000000002 tokens needs about") &&
                        Catch::Contains("KV cache") && Catch::Contains("nothing was started"));
  // and against SSALAB_MEMORY_LIMIT, the user's own cap
  o.max_new_tokens = 5000;
  ::setenv("SSALAB_MEMORY_LIMIT", "64K", 1);
  CHECK_THROWS_WITH(generate(m, {{1, 2}}, o), Catch::Contains("(SSALAB_MEMORY_LIMIT)"));
  ::unsetenv("SSALAB_MEMORY_LIMIT");
  CHECK(generate(m, {{1, 2}}, o).tokens[0].size() > 0);
}

TEST_CASE("greedy generation with the cache gives HF transformers' tokens and logits", "[generate][hf]") {
  torch::NoGradGuard ng;
  for (const char* name : {"llama3_untied", "llama_tied_linear", "mistral", "qwen2_sharded", "qwen3", "llama_nsa"}) {
    INFO(name);
    const std::string dir = test::hf_fixture(name);
    REQUIRE(file_exists(dir + "/generate_golden.safetensors"));
    auto golden = load_safetensors(dir + "/generate_golden.safetensors").tensors;
    LoadedCheckpoint ck = load_checkpoint(dir);
    Tensor prompt = golden.at("prompt_ids").to(torch::kLong), expected = golden.at("generated_ids").to(torch::kLong);
    std::vector<int32_t> p(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
    GenerateOptions o;
    o.mode = AttnMode::Full;  // transformers has no sparse attention to compare with
    o.max_new_tokens = int(expected.numel());
    GenerateResult r = generate(*ck.model, {p}, o);
    std::vector<int64_t> ours(r.tokens[0].begin(), r.tokens[0].end());
    CHECK(torch::equal(torch::tensor(ours, torch::kLong), expected));
    // and each step's logits, fed HF's tokens
    Decoder d(*ck.model, 1, prompt.numel() + expected.numel(), model_sparse_spec(ck.config));
    Tensor step_logits = golden.at("step_logits");  // (new tokens, V)
    Tensor logits = d.feed(prompt.view({1, -1}), AttnMode::Full);
    double worst = 0;
    for (int64_t i = 0; i < expected.numel(); ++i) {
      worst = std::max(worst, test::max_diff(logits[0], step_logits[i]));
      logits = d.feed(expected.narrow(0, i, 1).view({1, 1}), AttnMode::Full);
    }
    CHECK(worst < 2e-4);
  }
}

TEST_CASE("stop tokens come from config.json's eos_token_id, or generation_config.json's", "[generate][hf]") {
  nlohmann::json j = to_json(test::micro_model());
  CHECK(model_config_from_json(j).eos_token_ids.empty());
  j["eos_token_id"] = 7;
  CHECK(model_config_from_json(j).eos_token_ids == std::vector<int>{7});
  j["eos_token_id"] = {7, 9};
  ModelConfig two = model_config_from_json(j);
  CHECK(two.eos_token_ids == std::vector<int>{7, 9});
  CHECK(model_config_from_json(to_json(two)).eos_token_ids == two.eos_token_ids);  // written back
  // what generation stops on: the config's ids in the vocabulary, else the tokenizer's EOS
  CHECK(stop_tokens_for(two, 3) == std::vector<int32_t>{7, 9});
  ModelConfig outside = two;
  outside.eos_token_ids = {outside.vocab_size + 5};
  CHECK(stop_tokens_for(outside, 3) == std::vector<int32_t>{3});
  CHECK(stop_tokens_for(outside, -1).empty());
  j["eos_token_id"] = "</s>";
  CHECK_THROWS_WITH(model_config_from_json(j), Catch::Contains("config.json: eos_token_id must be a token id"));
  j["eos_token_id"] = -2;
  CHECK_THROWS_WITH(model_config_from_json(j), Catch::Contains("eos_token_id"));

  // a folder's generation_config.json wins, as in transformers' generate()
  const std::string dir = test::scratch_dir("eos");
  for (auto& f : std::filesystem::directory_iterator(test::hf_fixture("qwen3")))
    std::filesystem::copy_file(f.path(), std::filesystem::path(dir) / f.path().filename());
  nlohmann::json gen = nlohmann::json::parse(read_file(dir + "/generation_config.json"));
  gen["eos_token_id"] = {3, 4};
  write_file_atomic(dir + "/generation_config.json", gen.dump());
  CHECK(load_checkpoint(dir).config.eos_token_ids == std::vector<int>{3, 4});
  gen["eos_token_id"] = {3, "x"};
  write_file_atomic(dir + "/generation_config.json", gen.dump());
  CHECK_THROWS_WITH(load_checkpoint(dir), Catch::Contains("generation_config.json: eos_token_id must be"));
  remove_tree(dir);
}

TEST_CASE("the pass-key test generates the key with the cache, as well as scoring it", "[generate][needle]") {
  LoadedCheckpoint ck = load_checkpoint(std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa");
  const int ctx = 160;
  for (AttnMode mode : {AttnMode::Full, AttnMode::Sparse}) {
    SparseSpec spec = model_sparse_spec(ck.config);
    spec.top_k = 4;
    auto results = passkey_test(*ck.model, ck.tokenizer, {ctx}, {0.5}, 3, mode, spec, /*seed=*/11);
    REQUIRE(results.size() == 1);
    const NeedleResult& r = results[0];
    // teacher-forced greedy digits all right means greedy generation writes them
    CHECK(r.generated_accuracy >= r.accuracy);
    // the first trial, redone by hand: the same key, prompt and generated text
    std::mt19937_64 rng(11);
    std::string key = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
    auto [prompt, answer] = passkey_prompt(ck.tokenizer, ctx, 0.5, key);
    GenerateOptions o;
    o.mode = mode;
    o.spec = spec;
    o.max_new_tokens = int(answer.size()) + 2;
    auto gen = generate(*ck.model, {std::vector<int32_t>(prompt.begin(), prompt.end())}, o).tokens[0];
    CHECK(r.generated_example == ck.tokenizer.decode(std::vector<int>(gen.begin(), gen.end())));
    CHECK_FALSE(r.generated_example.empty());
    auto j = to_json(results);
    CHECK(j[0].contains("generated_accuracy"));
  }
}
