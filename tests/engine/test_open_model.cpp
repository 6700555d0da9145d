// Opening a model that is not ours in the app's Session: an HF folder with a
// tokenizer.json is open for inspection (analysis with its own selection
// settings, no training), load progress and cancel, a failed load keeps the
// model that was open.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/session/session.h"
#include "engine/tokenizer/tokenizer.h"
#include "test_helpers.h"
#include "tests/test_support.h"

using namespace ssalab;
namespace fs = std::filesystem;

namespace {

// A byte-level BPE tokenizer.json without merges: one token per byte, ids
// 0..255 in the GPT-2 byte order (fits the fixtures' 300-token vocabulary).
std::string byte_tokenizer_json() {
  auto prints_as_itself = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  nlohmann::json vocab = nlohmann::json::object();
  int shifted = 0;
  for (int b = 0; b < 256; ++b) {
    const int cp = prints_as_itself(b) ? b : 256 + shifted++;
    std::string piece;
    if (cp < 0x80) piece += char(cp);
    else piece += char(0xC0 | (cp >> 6)), piece += char(0x80 | (cp & 0x3F));
    vocab[piece] = b;
  }
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
        {"merges", nlohmann::json::array()}}}};
  return j.dump();
}

// The released-layout fixture (LlamaNSAForCausalLM, block 16, k 16) with a tokenizer.
std::string hf_model_with_tokenizer(const test::TempDir& dir) {
  const fs::path src = fs::path(SSALAB_SOURCE_DIR) / "tests/fixtures/hf/llama_nsa";
  const fs::path dst = dir.path / "llama_nsa";
  fs::create_directories(dst);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dst / f);
  dir.file("llama_nsa/tokenizer.json", byte_tokenizer_json());
  return dst.string();
}

const std::string kProbe(300, 'a');  // 300 bytes = 300 tokens: 18 blocks of 16

SessionOptions inspect_options(const test::TempDir& dir, const std::string& model) {
  SessionOptions o;
  o.checkpoint = model;
  o.work_dir = dir / "work";
  o.probe_text = "The quick brown fox jumps over the lazy dog. " + kProbe;
  o.probe_tokens = 256;
  return o;
}

}  // namespace

TEST_CASE("an HF model folder opens in the session for inspection, with its own tokenizer and selection",
          "[session][open-model]") {
  test::TempDir dir;
  const std::string model = hf_model_with_tokenizer(dir);
  Session s(inspect_options(dir, model));
  s.wait_idle();
  auto snap = s.snapshot();
  INFO(snap->error);
  REQUIRE(snap->error.empty());
  CHECK(!snap->trainable);
  CHECK(snap->model_source == model);
  CHECK(snap->model_summary.find("LlamaNSAForCausalLM") != std::string::npos);
  CHECK(snap->tokenizer_info.find("tokenizer.json") != std::string::npos);
  CHECK(snap->load_progress == -1);
  CHECK(snap->loading.empty());
  // the model's own selection: block 16, k 16, and the released kernel's rule
  CHECK(snap->spec.block_size == 16);
  CHECK(snap->spec.top_k == 16);
  CHECK(snap->spec.rule == SelectionRule::NsaChunked);
  REQUIRE(snap->analysis);
  // one token per byte: the probe text round-trips through the model's tokenizer
  CHECK(snap->analysis->T == int64_t(45 + kProbe.size()));
  CHECK(snap->probe_text == "The quick brown fox jumps over the lazy dog. " + kProbe);
  REQUIRE(snap->probe_pieces.size() == size_t(snap->analysis->T));
  CHECK(snap->probe_pieces[3] == "\xC4\xA0");  // the space before "quick", as the vocabulary stores it
  REQUIRE(snap->analysis->nll_full.size() == size_t(snap->analysis->T - 1));

  // inference settings work; training and saving say why they cannot
  s.set_top_k(4);
  s.wait_idle();
  CHECK(s.snapshot()->spec.top_k == 4);
  CHECK(s.snapshot()->analysis->spec.top_k == 4);
  s.start();
  s.wait_idle();
  CHECK(s.snapshot()->state != RunState::Running);
  CHECK_THAT(s.snapshot()->error, Catch::Contains("open for inspection"));
  s.save(dir / "saved");
  s.wait_idle();
  CHECK(!fs::exists(dir / "saved"));
  s.set_top_k(99);  // more blocks than the probe has: refused by the attention's rule, not by a training config
  s.wait_idle();
  CHECK_THAT(s.snapshot()->spec_problem, Catch::Contains("blocks"));
  CHECK(s.snapshot()->spec.top_k == 4);
}

TEST_CASE("a failed or cancelled load keeps the open model", "[session][open-model]") {
  test::TempDir dir;
  const std::string model = hf_model_with_tokenizer(dir);
  Session s(inspect_options(dir, model));
  s.wait_idle();
  REQUIRE(s.snapshot()->error.empty());
  const int64_t T = s.snapshot()->analysis->T;

  const uint64_t ticket = s.load(dir / "no_such_model");
  s.wait_idle();
  auto snap = s.snapshot();
  CHECK(snap->loads_done == ticket);  // answered: by an error
  CHECK_THAT(snap->error, Catch::Contains("no_such_model"));
  CHECK(snap->model_source == model);  // still the model that was open
  CHECK(snap->loading.empty());
  REQUIRE(snap->analysis);
  CHECK(snap->analysis->T == T);

  // a folder without a tokenizer cannot show text: refused before anything changes
  const fs::path bare = dir.path / "bare";
  fs::create_directories(bare);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(fs::path(model) / f, bare / f);
  CHECK(s.load(bare.string()) == ticket + 1);
  s.wait_idle();
  CHECK(s.snapshot()->loads_done == ticket + 1);
  CHECK_THAT(s.snapshot()->error, Catch::Contains("tokenizer"));
  CHECK(s.snapshot()->model_source == model);

  // cancel and progress, on load_checkpoint itself
  std::atomic<bool> cancel{true};
  LoadOptions lo;
  lo.cancel = &cancel;
  CHECK_THROWS_AS(load_checkpoint(model, lo), LoadCancelled);
  cancel = false;
  std::vector<double> seen;
  lo.on_progress = [&](double f) { seen.push_back(f); };
  load_checkpoint(model, lo);
  REQUIRE(seen.size() > 3);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(seen.front() > 0);
  CHECK(seen.back() <= 1.0);
  CHECK(seen.back() > 0.5);
}

TEST_CASE("the session's own training model still trains after an inspection model was open", "[session][open-model]") {
  test::TempDir dir;
  SessionOptions o = inspect_options(dir, hf_model_with_tokenizer(dir));
  o.corpus = test::small_corpus();  // the shipped model's token cache is built from it
  Session s(o);
  s.wait_idle();
  REQUIRE(!s.snapshot()->trainable);
  // an ssalab checkpoint of the shipped kind opens trainable again
  s.load(std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa");
  s.wait_idle();
  auto snap = s.snapshot();
  INFO(snap->error);
  CHECK(snap->error.empty());
  CHECK(snap->trainable);
  CHECK(snap->tokenizer_info.find("sentencepiece") != std::string::npos);
  REQUIRE(snap->analysis);
}
