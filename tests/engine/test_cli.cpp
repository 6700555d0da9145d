// The ssalab command end to end: train -> eval -> analyze -> info, exit codes,
// and the errors a user sees for bad input.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/generate/generate.h"
#include "test_helpers.h"

namespace fs = std::filesystem;

using Result = ssalab::test::CommandResult;
// `env`: assignments put before the command, e.g. "LD_LIBRARY_PATH=/x".
static Result run(const std::string& args, const std::string& env = "") { return ssalab::test::run_ssalab(args, env); }

TEST_CASE("ssalab train, eval, analyze and info end to end", "[cli][e2e]") {
  std::string dir = ssalab::test::scratch_dir("cli");
  std::string common = " --corpus " + ssalab::test::small_corpus() + " --cache " + ssalab::test::cache_dir();
  std::string micro =
      " --set model.vocab_size=512 --set model.hidden_size=32 --set model.intermediate_size=64"
      " --set model.num_hidden_layers=2 --set model.block_size=8 --set model.block_counts=3"
      " --set train.seq_len=64 --set train.batch_size=4 --set train.steps=6 --set train.eval_every=3"
      " --set train.eval_batches=2 --set train.device=cpu";
  Result t = run("train --method ssa --quiet --out " + dir + "/run" + common + micro);
  INFO(t.output);
  REQUIRE(t.code == 0);
  auto summary = nlohmann::json::parse(std::ifstream(dir + "/run/summary.json"));
  REQUIRE(summary["final_step"] == 6);
  REQUIRE(summary["val_ppl_full"].get<double>() > 1);
  REQUIRE(fs::exists(dir + "/run/checkpoint/model.safetensors"));

  Result e = run("eval " + dir + "/run/checkpoint --batches 2 --batch-size 2 --k 1,2,9 --needle --needle-context 96,128"
                 " --needle-trials 2 --out " + dir + "/eval.json --device cpu --cache " + ssalab::test::cache_dir());
  INFO(e.output);
  REQUIRE(e.code == 0);
  auto ev = nlohmann::json::parse(std::ifstream(dir + "/eval.json"));
  REQUIRE(ev["perplexity"]["sweep"].size() == 3);
  REQUIRE(ev["perplexity"]["sweep"][2].contains("skipped"));  // k=9 > the 8 blocks of 64 tokens
  REQUIRE(ev["passkey"].size() == 2 * 2 * 3);  // 2 lengths x 3 depths x {full, sparse}

  Result a = run("analyze " + dir + "/run/checkpoint --text-file " + ssalab::test::small_corpus() +
                 "/appetite.rst.txt --mode sparse --k 2 --out " + dir + "/an --device cpu");
  INFO(a.output);
  REQUIRE(a.code == 0);
  REQUIRE(fs::exists(dir + "/an/analysis.json"));
  REQUIRE(fs::exists(dir + "/an/layer1_dropped.png"));
  REQUIRE(fs::file_size(dir + "/an/layer0_full.png") > 1000);
  auto an = nlohmann::json::parse(std::ifstream(dir + "/an/analysis.json"));
  REQUIRE(an["top_k"] == 2);
  REQUIRE(an["inference"] == "sparse");

  Result i = run("info " + dir + "/run/checkpoint");
  REQUIRE(i.code == 0);
  REQUIRE_THAT(i.output, Catch::Contains("\"block_counts\": 3"));
}

TEST_CASE("ssalab reports bad input with an exit code and a clear message", "[cli][bad-input]") {
  std::string dir = ssalab::test::scratch_dir("clibad");
  Result r = run("info " + dir + "/missing");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.output, Catch::Contains("checkpoint not found"));
  r = run("train --set model.nonsense=3");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.output, Catch::Contains("unknown model setting 'nonsense'"));
  r = run("train --set train.seq_len=64 --set model.block_counts=99");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.output, Catch::Contains("top-k"));
  r = run("train --no-such-flag");
  REQUIRE(r.code != 0);
  std::ofstream(dir + "/bad.json") << "{ not json";
  r = run("train --config " + dir + "/bad.json");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.output, Catch::Contains("bad.json"));
  r = run("train --method sparse-ish");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.output, Catch::Contains("unknown training method"));
}

// The crash found on the GPU machine, on the CPU: another version's
// libsentencepiece first on the library path. Here it is Debian's own file
// with the version string changed, so only the check can tell them apart.
TEST_CASE("a libsentencepiece of another version is refused by name instead of crashing", "[cli][bad-input]") {
  const std::string tag = std::string(1, '\0') + "0.1.97" + std::string(1, '\0');
  std::string lib;
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"}) {
    const std::string path = std::string(dir) + "/libsentencepiece.so.0";
    if (fs::exists(path) && (lib = ssalab::read_file(path)).find(tag) != std::string::npos) break;
    lib.clear();
  }
  if (lib.empty()) {
    WARN("no Debian libsentencepiece 0.1.97 in the system folders: nothing to disguise");
    return;
  }
  std::string dir = ssalab::test::scratch_dir("sp-version");
  lib[lib.find(tag) + 6] = '8';  // "0.1.98"
  ssalab::write_file_atomic(dir + "/libsentencepiece.so.0", lib);
  Result r = run("tokenizer encode " + std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa --text hello",
                 "LD_LIBRARY_PATH=" + dir);
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK_THAT(r.output, Catch::Contains("is not version 0.1.97"));
  CHECK_THAT(r.output, Catch::Contains(dir + "/libsentencepiece.so.0"));
  // and the real one still works from the same command
  r = run("tokenizer encode " + std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa --text hello");
  CHECK(r.code == 0);
}

TEST_CASE("ssalab on the shipped model: whole-text scoring, per-token NLL, .npy arrays, tokenizer encode/decode",
          "[cli][e2e][per-token]") {
  std::string dir = ssalab::test::scratch_dir("cli-model");
  const std::string model = std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa";
  const std::string text = ssalab::test::small_corpus() + "/appetite.rst.txt";

  Result e = run("eval " + model + " --text-file " + text + " --per-token --seq-len 256 --device cpu --out " + dir +
                 "/scores.json");
  INFO(e.output);
  REQUIRE(e.code == 0);
  auto ev = nlohmann::json::parse(std::ifstream(dir + "/scores.json"));
  const auto& sc = ev["scores"];
  REQUIRE_THAT(ev["evaluated_on"].get<std::string>(), Catch::Contains("the whole of"));
  REQUIRE(sc["nll_full"].size() + 1 == sc["token_ids"].size());
  REQUIRE(sc["nll_sparse"].size() == sc["nll_full"].size());
  REQUIRE(sc["nll_delta"].size() == sc["nll_full"].size());
  REQUIRE(sc["selection_rule"] == "topk");  // our models were trained with the exact rule
  REQUIRE(sc["ppl_full"].get<double>() > 1);

  // the same ids given directly score the same
  std::ofstream ids(dir + "/ids.txt");
  for (auto& id : sc["token_ids"]) ids << id.get<int>() << (id == sc["token_ids"].back() ? "\n" : " ");
  ids.close();
  Result t = run("eval " + model + " --token-ids " + dir + "/ids.txt --seq-len 256 --device cpu --out " + dir +
                 "/ids.json");
  INFO(t.output);
  REQUIRE(t.code == 0);
  auto tv = nlohmann::json::parse(std::ifstream(dir + "/ids.json"));
  REQUIRE(tv["scores"]["ppl_full"].get<double>() == Approx(sc["ppl_full"].get<double>()));
  REQUIRE(tv["scores"]["ppl_sparse"].get<double>() == Approx(sc["ppl_sparse"].get<double>()));

  Result a = run("analyze " + model + " --text-file " + text + " --rule nsa-chunked --no-png --out " + dir +
                 "/an --device cpu");
  INFO(a.output);
  REQUIRE(a.code == 0);
  auto an = nlohmann::json::parse(std::ifstream(dir + "/an/analysis.json"));
  REQUIRE(an["selection_rule"] == "nsa-chunked");
  for (const char* f : {"tokens.npy", "layer0_map_full.npy", "layer3_selected_blocks.npy", "layer2_row_entropy.npy",
                        "nll_full.npy", "nll_sparse.npy"})
    REQUIRE(fs::exists(dir + "/an/" + f));

  Result enc = run("tokenizer encode " + model + " --text 'The pass key is 12345.'");
  INFO(enc.output);
  REQUIRE(enc.code == 0);
  auto ej = nlohmann::json::parse(enc.output);
  std::string id_list;
  for (auto& id : ej["ids"]) id_list += std::to_string(id.get<int>()) + " ";
  Result dec = run("tokenizer decode " + model + " --text '" + id_list + "'");
  INFO(dec.output);
  REQUIRE(dec.code == 0);
  REQUIRE(nlohmann::json::parse(dec.output)["text"] == "The pass key is 12345.");

  Result bad = run("eval " + model + " --token-ids " + text + " --device cpu");
  REQUIRE(bad.code == 1);
  REQUIRE_THAT(bad.output, Catch::Contains("not a token id"));
}

TEST_CASE("ssalab generate: streamed text, the engine's greedy tokens, sparse settings, bad settings",
          "[cli][e2e][generate]") {
  const std::string model = std::string(SSALAB_SOURCE_DIR) + "/assets/models/ssa";
  const std::string prompt = "\"The tutorial explains how to\"";
  Result full = run("generate " + model + " --prompt " + prompt + " --max-new-tokens 12 --json --device cpu");
  INFO(full.output);
  REQUIRE(full.code == 0);
  auto j = nlohmann::json::parse(full.output.substr(0, full.output.rfind('}') + 1));
  REQUIRE(j["sequences"].size() == 1);
  auto ids = j["sequences"][0]["token_ids"].get<std::vector<int>>();
  CHECK(ids.size() <= 12);
  CHECK(j["tokens_per_second"].get<double>() > 0);

  // the same tokens from the engine in this process
  ssalab::LoadedCheckpoint ck = ssalab::load_checkpoint(model);
  std::vector<int> p = ck.tokenizer.encode("The tutorial explains how to");
  ssalab::GenerateOptions o;
  o.mode = ssalab::AttnMode::Full;
  o.max_new_tokens = 12;
  o.stop_tokens = {ck.tokenizer.eos_id()};
  auto r = ssalab::generate(*ck.model, {std::vector<int32_t>(p.begin(), p.end())}, o);
  CHECK(std::vector<int>(r.tokens[0].begin(), r.tokens[0].end()) == ids);

  // streamed: the prompt, then the text; sparse with a batch of two samples
  Result text = run("generate " + model + " --prompt " + prompt + " --max-new-tokens 12 --device cpu");
  CHECK(text.code == 0);
  CHECK_THAT(text.output, Catch::StartsWith("The tutorial explains how to") &&
                              Catch::Contains(j["sequences"][0]["text"].get<std::string>()) &&
                              Catch::Contains("tokens/s"));
  Result sparse = run("generate " + model + " --prompt " + prompt +
                      " --sparse --k 2 --block-size 4 --num-samples 2 --temperature 0.9 --seed 3 --json --device cpu");
  INFO(sparse.output);
  REQUIRE(sparse.code == 0);
  auto s = nlohmann::json::parse(sparse.output.substr(0, sparse.output.rfind('}') + 1));
  CHECK(s["sequences"].size() == 2);
  CHECK((s["selection"]["top_k"] == 2 && s["selection"]["block_size"] == 4));

  for (auto [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"--prompt x --temperature -1", "temperature must be a finite number >= 0"},
           {"--prompt x --top-p 2", "top_p must be in (0, 1]"},
           {"--prompt x --max-new-tokens 0", "--max-new-tokens must be >= 1"},
           {"", "generate needs --prompt TEXT or --prompt-file FILE"},
           {"--prompt x --sparse --k 0", "--k: Value 0 not in range 1"}}) {
    Result bad = run("generate " + model + " " + args + " --device cpu");
    INFO(args << "\n" << bad.output);
    CHECK(bad.code != 0);
    CHECK_THAT(bad.output, Catch::Contains(message));
  }
}
