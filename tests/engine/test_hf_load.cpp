// Loading Hugging Face model folders and hub ids: the local cache layout,
// memory-mapped weights, the plan stated before loading, old checkpoints of
// ours, and every kind of bad input (each refused with a message that names
// the thing at fault, before any weight memory is allocated).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/hub/hub.h"
#include "engine/model/transformer.h"
#include "engine/util/files.h"
#include "test_helpers.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ssalab;
using json = nlohmann::json;
using test::contains;
using test::error_of;
using test::TempDir;

namespace {

// A copy of a fixture folder to break.
std::string copy_fixture(const TempDir& d, const std::string& name, const std::string& as) {
  fs::copy(test::hf_fixture(name), d / as, fs::copy_options::recursive);
  return d / as;
}

json read_json(const std::string& p) { return json::parse(read_file(p)); }
void write_json(const std::string& p, const json& j) { write_file_atomic(p, j.dump(2)); }
void edit_config(const std::string& dir, const std::function<void(json&)>& f) {
  json j = read_json(dir + "/config.json");
  f(j);
  write_json(dir + "/config.json", j);
}

// A safetensors file from raw entries: {name, dtype, shape, bytes}.
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
void write_raw_safetensors(const std::string& path, const std::vector<RawTensor>& ts) {
  json h = json::object();
  std::string data;
  for (const auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string head = h.dump();
  head.append((8 - head.size() % 8) % 8, ' ');
  uint64_t n = head.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  write_file_atomic(path, out + head + data);
}
// The fixture's tensors as raw entries (to edit one).
std::vector<RawTensor> raw_tensors(const std::string& path) {
  std::vector<RawTensor> out;
  SafetensorsFile f = load_safetensors(path);
  for (auto& [name, t] : f.tensors) {
    std::string dtype = t.scalar_type() == torch::kFloat ? "F32" : t.scalar_type() == torch::kHalf ? "F16" : "BF16";
    out.push_back({name, dtype, t.sizes().vec(), std::string(static_cast<const char*>(t.data_ptr()), t.nbytes())});
  }
  return out;
}

// Sets an environment variable for one scope.
struct EnvVar {
  std::string name;
  std::optional<std::string> old;
  EnvVar(const std::string& n, const std::string& v) : name(n) {
    if (const char* o = std::getenv(n.c_str())) old = o;
    ::setenv(n.c_str(), v.c_str(), 1);
  }
  ~EnvVar() { old ? ::setenv(name.c_str(), old->c_str(), 1) : ::unsetenv(name.c_str()); }
};

// Puts a fixture folder into a fake HF cache as org/name at commit `hash`,
// the way huggingface_hub lays it out (files are links into blobs/).
void add_to_cache(const std::string& cache, const std::string& org, const std::string& name, const std::string& src,
                  const std::string& hash, bool with_ref = true) {
  fs::path repo = fs::path(cache) / ("models--" + org + "--" + name);
  fs::create_directories(repo / "snapshots" / hash);
  fs::create_directories(repo / "blobs");
  for (auto& f : fs::directory_iterator(src)) {
    fs::path blob = repo / "blobs" / ("blob-" + f.path().filename().string());
    fs::copy_file(f.path(), blob, fs::copy_options::overwrite_existing);
    fs::create_symlink(fs::path("../../blobs") / blob.filename(), repo / "snapshots" / hash / f.path().filename());
  }
  if (with_ref) {
    fs::create_directories(repo / "refs");
    std::ofstream(repo / "refs" / "main") << hash;
  }
}

torch::Tensor logits_of(Transformer& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard ng;
  return m.forward(torch::tensor(ids).view({1, -1})).logits;
}

}  // namespace

TEST_CASE("a hub id loads from the local HF cache, following refs/main", "[hf][hub]") {
  TempDir d;
  const std::string cache = d / "hub";
  add_to_cache(cache, "zen-E", "Tiny-NSA", test::hf_fixture("llama_nsa"), "0123abcd");
  add_to_cache(cache, "org", "noref", test::hf_fixture("qwen3"), "ffff0000", /*with_ref=*/false);
  EnvVar hub("HF_HUB_CACHE", cache);

  ResolvedModel r = resolve_model("zen-E/Tiny-NSA");
  CHECK(r.hub_id == "zen-E/Tiny-NSA");
  CHECK(r.revision == "0123abcd");
  CHECK(contains(r.dir, "models--zen-E--Tiny-NSA/snapshots/0123abcd"));
  LoadedCheckpoint ck = load_checkpoint("zen-E/Tiny-NSA");
  LoadedCheckpoint local = load_checkpoint(test::hf_fixture("llama_nsa"));
  CHECK(ck.plan.hub_id == "zen-E/Tiny-NSA");
  std::vector<int64_t> ids = {1, 5, 9, 200, 17, 3};
  CHECK(torch::equal(logits_of(*ck.model, ids), logits_of(*local.model, ids)));
  CHECK(resolve_model("zen-E/Tiny-NSA@0123abcd").dir == r.dir);  // a commit
  CHECK(resolve_model("org/noref").revision == "ffff0000");      // no refs: the only snapshot

  auto listed = list_cached_models();
  REQUIRE(listed.size() == 2);
  CHECK(listed[1].hub_id == "zen-E/Tiny-NSA");
  CHECK(listed[1].architecture == "LlamaNSAForCausalLM");
  CHECK(listed[1].bytes_on_disk == fs::file_size(test::hf_fixture("llama_nsa/model.safetensors")) +
                                       fs::file_size(test::hf_fixture("llama_nsa/golden.safetensors")) +
                                       fs::file_size(test::hf_fixture("llama_nsa/generate_golden.safetensors")));

  {  // $HF_HOME/hub when $HF_HUB_CACHE is unset
    EnvVar none("HF_HUB_CACHE", "");
    EnvVar home("HF_HOME", d.str());
    CHECK(hf_hub_cache_dir() == d / "hub");
    CHECK(resolve_model("zen-E/Tiny-NSA").revision == "0123abcd");
  }
}

TEST_CASE("a hub id not in the cache says where it looked and that nothing is downloaded", "[hf][hub][bad-input]") {
  TempDir d;
  EnvVar hub("HF_HUB_CACHE", d / "empty-cache");
  std::string msg = error_of([&] { load_checkpoint("meta-llama/Llama-3.2-1B"); });
  CHECK(contains(msg, "meta-llama/Llama-3.2-1B"));
  CHECK(contains(msg, d / "empty-cache/models--meta-llama--Llama-3.2-1B"));
  CHECK(contains(msg, "never downloads"));
  // a cached repo whose ref points nowhere
  add_to_cache(d / "empty-cache", "org", "broken", test::hf_fixture("qwen3"), "aaaa");
  std::ofstream(d / "empty-cache/models--org--broken/refs/main") << "bbbb";
  CHECK(contains(error_of([&] { load_checkpoint("org/broken"); }), "bbbb"));
  CHECK(contains(error_of([&] { load_checkpoint(d / "no/such/folder"); }), "not found"));
}

TEST_CASE("weights are memory-mapped: fp32 used in place, bf16 converted once; the plan says so", "[hf][mmap]") {
  std::vector<LoadPlan> told;
  LoadOptions opt;
  opt.on_plan = [&](const LoadPlan& p) { told.push_back(p); };
  LoadedCheckpoint f32 = load_checkpoint(test::hf_fixture("qwen3"), opt);
  REQUIRE(told.size() == 1);
  const LoadPlan& p = told[0];
  CHECK(p.stored_dtype == "F32");
  CHECK(p.parameters == f32.config.num_parameters());
  CHECK(p.new_bytes == 0);
  CHECK(p.mapped_bytes == p.file_bytes);
  CHECK(p.file_bytes == uint64_t(p.parameters) * 4);
  CHECK(contains(p.summary(), "Qwen3ForCausalLM"));
  // the embedding's data lies inside a mapping of model.safetensors
  const auto addr = reinterpret_cast<uintptr_t>(f32.model->embed_tokens->weight.data_ptr());
  std::ifstream maps("/proc/self/maps");
  bool inside = false;
  for (std::string line; std::getline(maps, line);) {
    if (!contains(line, "qwen3/model.safetensors")) continue;
    uintptr_t lo = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
    uintptr_t hi = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    inside = inside || (addr >= lo && addr < hi);
  }
  CHECK(inside);

  told.clear();
  LoadedCheckpoint bf16 = load_checkpoint(test::hf_fixture("llama_nsa"), opt);
  CHECK(told.at(0).stored_dtype == "BF16");
  CHECK(told[0].mapped_bytes == 0);
  CHECK(told[0].new_bytes == told[0].file_bytes * 2);  // bf16 -> fp32
  for (auto& t : bf16.model->parameters()) CHECK(t.scalar_type() == torch::kFloat);

  // too little memory: refused before anything is allocated
  LoadOptions tight;
  tight.memory_limit = told[0].new_bytes - 1;
  tight.on_plan = [](const LoadPlan&) {};
  std::string msg = error_of([&] { load_checkpoint(test::hf_fixture("llama_nsa"), tight); });
  CHECK(contains(msg, "needs"));
  CHECK(contains(msg, "available"));
  CHECK(contains(msg, "nothing was loaded"));
}

TEST_CASE("our checkpoints declare LlamaNSAForCausalLM; old LlamaForCausalLM ones with g_proj still load gated",
          "[hf][checkpoint][sentencepiece]") {
  TempDir d;
  ModelConfig c = test::micro_model();
  Tokenizer tok = Tokenizer::load(std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa/tokenizer.model");
  c.vocab_size = tok.vocab_size();
  Transformer model(c);
  model.init_weights(3);
  save_checkpoint(d / "new", model, tok, {});
  json cfg = read_json(d / "new/config.json");
  CHECK(cfg["architectures"][0] == "LlamaNSAForCausalLM");
  CHECK(cfg["model_type"] == "llama-nsa");
  for (const char* key : {"block_size", "block_counts", "window_size", "inference_mode"}) CHECK(cfg.contains(key));

  fs::copy(d / "new", d / "old", fs::copy_options::recursive);
  edit_config(d / "old", [](json& j) {
    j["architectures"] = {"LlamaForCausalLM"};
    j["model_type"] = "llama";
    j.erase("inference_mode");
  });
  LoadedCheckpoint old = load_checkpoint(d / "old");
  CHECK(old.config.arch == Arch::LlamaNSA);
  CHECK(old.config.gate);
  CHECK(to_json(old.config) == to_json(model.config()));
  std::vector<int64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  CHECK(torch::equal(logits_of(*old.model, ids), logits_of(model, ids)));
}

TEST_CASE("unsupported architectures, rope types, activations and quantized models are refused", "[hf][bad-input]") {
  TempDir d;
  std::string dir = copy_fixture(d, "llama_tied_linear", "m");
  edit_config(dir, [](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  std::string msg = error_of([&] { load_checkpoint(dir); });
  CHECK(contains(msg, "GPT2LMHeadModel"));
  for (const char* arch : {"LlamaForCausalLM", "LlamaNSAForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                           "Qwen3ForCausalLM"})
    CHECK(contains(msg, arch));

  dir = copy_fixture(d, "llama3_untied", "rope");
  edit_config(dir, [](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "RoPE type 'yarn' is not supported"));
  edit_config(dir, [](json& j) {
    j.erase("rope_scaling");
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}, {"rope_theta", 1e4}};
  });
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "'dynamic'"));

  dir = copy_fixture(d, "mistral", "act");
  edit_config(dir, [](json& j) { j["hidden_act"] = "gelu"; });
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "hidden_act 'gelu'"));

  for (const char* method : {"gptq", "awq", "bitsandbytes"}) {
    dir = copy_fixture(d, "qwen3", std::string("q-") + method);
    edit_config(dir, [&](json& j) { j["quantization_config"] = {{"quant_method", method}, {"bits", 4}}; });
    msg = error_of([&] { load_checkpoint(dir); });
    CHECK(contains(msg, "quantized"));
    CHECK(contains(msg, method));
  }
}

// found by fuzz_checkpoint_folder: json's get<int>() cast 6.4e50 (undefined behaviour)
TEST_CASE("integer fields of config.json must be whole numbers in range", "[hf][bad-input]") {
  TempDir d;
  std::string dir = copy_fixture(d, "llama_tied_linear", "m");
  edit_config(dir, [](json& j) { j["num_hidden_layers"] = 6.43e50; });
  CHECK(contains(error_of([&] { plan_checkpoint(dir); }), "'num_hidden_layers' is out of range"));
  edit_config(dir, [](json& j) { j["num_hidden_layers"] = 1.5; });
  CHECK(contains(error_of([&] { plan_checkpoint(dir); }), "'num_hidden_layers' is not a whole number"));
  edit_config(dir, [](json& j) { j["num_hidden_layers"] = "two"; });
  CHECK(contains(error_of([&] { plan_checkpoint(dir); }), "'num_hidden_layers' has the wrong type"));
  edit_config(dir, [](json& j) { j["num_hidden_layers"] = 5000000000LL; });
  CHECK(contains(error_of([&] { plan_checkpoint(dir); }), "out of range"));
  // a whole number written as a float is that number
  const int layers = load_checkpoint(test::hf_fixture("llama_tied_linear")).config.num_layers;
  edit_config(dir, [&](json& j) { j["num_hidden_layers"] = double(layers); });
  CHECK(plan_checkpoint(dir).config.num_layers == layers);
}

TEST_CASE("an NSA checkpoint (window_size > 0) loads and runs its compression and window branches", "[hf][nsa]") {
  // Once refused ("compression and sliding-window branches are not implemented").
  TempDir d;
  std::string dir = copy_fixture(d, "llama_nsa", "nsa");
  edit_config(dir, [](json& j) { j["window_size"] = 4; });
  LoadedCheckpoint nsa = load_checkpoint(dir);
  CHECK(nsa.config.window_size == 4);
  LoadedCheckpoint plain = load_checkpoint(test::hf_fixture("llama_nsa"));  // the same weights, window_size 0
  std::vector<int64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  torch::Tensor a = logits_of(*nsa.model, ids), b = logits_of(*plain.model, ids);
  CHECK(torch::isfinite(a).all().item<bool>());
  CHECK(!torch::allclose(a, b));  // g_cmp and g_swa now weigh two more branches
}

TEST_CASE("unsupported weight dtypes are named", "[hf][bad-input]") {
  TempDir d;
  for (const char* dtype : {"F8_E4M3", "I8", "F64"}) {
    std::string dir = copy_fixture(d, "llama_tied_linear", std::string("dt-") + dtype);
    auto ts = raw_tensors(dir + "/model.safetensors");
    for (auto& t : ts)
      if (t.name == "model.norm.weight") {
        t.dtype = dtype;
        const int bytes = std::string(dtype) == "F64" ? 8 : 1;
        t.bytes = std::string(size_t(64 * bytes), '\0');
      }
    write_raw_safetensors(dir + "/model.safetensors", ts);
    std::string msg = error_of([&] { load_checkpoint(dir); });
    CHECK(contains(msg, "model.norm.weight"));
    CHECK(contains(msg, dtype));
    CHECK(contains(msg, "BF16, F16 and F32"));
  }
}

TEST_CASE("a config that does not match the weights is caught from the headers, before allocating", "[hf][bad-input]") {
  TempDir d;
  std::string dir = copy_fixture(d, "llama_tied_linear", "layers");
  edit_config(dir, [](json& j) { j["num_hidden_layers"] = 400000000; });
  auto t0 = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { load_checkpoint(dir); });
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(contains(msg, "num_hidden_layers 400000000"));
  CHECK(contains(msg, "2 layers"));
  CHECK(seconds < 2.0);  // arithmetic, not an allocation

  dir = copy_fixture(d, "llama_tied_linear", "sizes");
  edit_config(dir, [](json& j) {
    j["vocab_size"] = 1000000000;
    j["intermediate_size"] = 500000000;
  });
  msg = error_of([&] { load_checkpoint(dir); });
  CHECK(contains(msg, "shape"));
  CHECK(contains(msg, "model.embed_tokens.weight has shape [300, 64]"));
  CHECK(contains(msg, "[1000000000, 64]"));

  dir = copy_fixture(d, "llama_tied_linear", "heads");
  edit_config(dir, [](json& j) { j["num_key_value_heads"] = 4; });
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "k_proj.weight has shape [32, 64]"));

  dir = copy_fixture(d, "llama_tied_linear", "untied");  // says untied: lm_head is missing
  edit_config(dir, [](json& j) { j["tie_word_embeddings"] = false; });
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "lm_head.weight"));
}

TEST_CASE("missing and unexpected tensors are named; so is a shard listed in the index but absent", "[hf][bad-input]") {
  TempDir d;
  std::string dir = copy_fixture(d, "llama_tied_linear", "missing");
  auto ts = raw_tensors(dir + "/model.safetensors");
  ts.erase(std::remove_if(ts.begin(), ts.end(), [](const RawTensor& t) {
             return t.name == "model.layers.1.mlp.up_proj.weight" || t.name == "model.layers.0.self_attn.v_proj.weight";
           }),
           ts.end());
  write_raw_safetensors(dir + "/model.safetensors", ts);
  std::string msg = error_of([&] { load_checkpoint(dir); });
  CHECK(contains(msg, "lack 2 tensors"));
  CHECK(contains(msg, "model.layers.1.mlp.up_proj.weight"));
  CHECK(contains(msg, "model.layers.0.self_attn.v_proj.weight"));

  dir = copy_fixture(d, "llama_tied_linear", "extra");
  ts = raw_tensors(dir + "/model.safetensors");
  ts.push_back({"model.layers.0.self_attn.q_proj.bias", "F32", {64}, std::string(256, '\0')});
  write_raw_safetensors(dir + "/model.safetensors", ts);
  msg = error_of([&] { load_checkpoint(dir); });
  CHECK(contains(msg, "does not use"));
  CHECK(contains(msg, "model.layers.0.self_attn.q_proj.bias"));

  dir = copy_fixture(d, "qwen2_sharded", "shard");
  fs::remove(dir + "/model-00003-of-00004.safetensors");
  msg = error_of([&] { load_checkpoint(dir); });
  CHECK(contains(msg, "model-00003-of-00004.safetensors"));
  CHECK(contains(msg, "model.safetensors.index.json"));

  dir = copy_fixture(d, "qwen2_sharded", "index");  // the index says a tensor is in the wrong shard
  json idx = read_json(dir + "/model.safetensors.index.json");
  idx["weight_map"]["model.norm.weight"] = "model-00001-of-00004.safetensors";
  write_json(dir + "/model.safetensors.index.json", idx);
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "model.norm.weight"));

  dir = copy_fixture(d, "llama_tied_linear", "pickle");
  fs::rename(dir + "/model.safetensors", dir + "/pytorch_model.bin");
  CHECK(contains(error_of([&] { load_checkpoint(dir); }), "pytorch_model.bin"));
}

TEST_CASE("a sliding window shorter than the input is refused; one that covers it runs", "[hf][bad-input]") {
  LoadedCheckpoint ck = load_checkpoint(test::hf_fixture("mistral"));
  REQUIRE(ck.config.sliding_window == 64);
  torch::NoGradGuard ng;
  CHECK_NOTHROW(ck.model->forward(torch::zeros({1, 64}, torch::kLong)));
  std::string msg = error_of([&] { ck.model->forward(torch::zeros({1, 65}, torch::kLong)); });
  CHECK(contains(msg, "sliding window of 64 tokens"));
}
