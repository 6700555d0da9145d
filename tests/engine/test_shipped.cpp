// The three models shipped in assets/ (FullAttn, MoBA, SSA from
// `ssalab paradox`) load on CPU and reproduce the validation perplexity that
// the committed report recorded for them.
#include <catch2/catch.hpp>

#include <filesystem>

#include "engine/checkpoint/checkpoint.h"
#include "engine/model/transformer.h"
#include "engine/train/run.h"
#include "engine/train/trainer.h"
#include "engine/util/files.h"
#include "test_helpers.h"

using namespace ssalab;

TEST_CASE("shipped checkpoints reproduce their recorded perplexity", "[shipped]") {
  const std::string root = SSALAB_SOURCE_DIR;
  const std::string results_path = root + "/assets/paradox/results.json";
  REQUIRE(file_exists(results_path));
  auto results = nlohmann::json::parse(read_file(results_path));
  if (!file_exists(default_corpus_path())) {
    WARN("default corpus (python3.11-doc) not installed: skipped");
    return;
  }
  for (const char* name : {"full", "moba", "ssa"}) {
    INFO(name);
    const std::string dir = root + "/assets/models/" + name;
    LoadedCheckpoint ck = load_checkpoint(dir);
    REQUIRE(std::filesystem::file_size(dir + "/model.safetensors") < 8u * 1024 * 1024);
    PreparedData data = prepare_data("", ck.config.vocab_size, test::cache_dir(), dir + "/tokenizer.model");
    const auto& rec = results["models"][name];
    const auto& ev = rec["eval"];
    SparseSpec spec{ck.config.block_size, ck.config.block_counts};
    for (auto [mode, key] : {std::pair{AttnMode::Full, "ppl_full"}, std::pair{AttnMode::Sparse, "ppl_sparse"}}) {
      double ppl = perplexity(*ck.model, data.tokens->val, ev["seq_len"], ev["batches"], ev["batch_size"], mode, spec,
                              torch::kCPU);
      double want = rec[key].get<double>();
      INFO(key << " measured " << ppl << " recorded " << want);
      REQUIRE(std::abs(ppl - want) <= 1e-3 * want);
    }
  }
}
