// The paradox lab: claim judging on made-up results, the chart renderer, and
// the whole lab (three tiny models, report) end to end on a small budget.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "engine/paradox/paradox.h"
#include "engine/report/chart.h"
#include "engine/util/files.h"
#include "test_helpers.h"

using namespace ssalab;
using nlohmann::json;

static json fake_model(double sparsity, double entropy, double ppl_full, double ppl_sparse, std::vector<double> sweep,
                       double needle_long, double ppl4x) {
  json sw = json::array();
  int k = 1;
  for (double p : sweep) sw.push_back({{"top_k", k}, {"ppl", p}}), k *= 2;
  json passkey = json::array();
  for (int ctx : {128, 256, 512})
    passkey.push_back({{"context", ctx}, {"mode", "full"}, {"accuracy", ctx > 128 ? needle_long : 0.5},
                       {"mean_logprob", -1.0}, {"depth", 0.5}});
  return {{"attention_full_inference", {{"mean_sparsity", sparsity}, {"mean_entropy", entropy}}},
          {"ppl_full", ppl_full},
          {"ppl_sparse", ppl_sparse},
          {"sweep_k", sw},
          {"eval", {{"seq_len", 128}}},
          {"passkey", passkey},
          {"ppl_by_length", {{{"ppl_full", 10.0}}, {{"ppl_full", 10.0 * ppl4x}}}}};
}

TEST_CASE("claims are judged from the numbers, both ways", "[paradox]") {
  json paper_like = {{"models",
                      {{"full", fake_model(0.61, 8.9, 15.1, 17.0, {30, 20, 17, 15.1}, 0.1, 3.0)},
                       {"moba", fake_model(0.55, 9.0, 16.7, 16.5, {25, 18, 16.5, 16.7}, 0.3, 2.0)},
                       {"ssa", fake_model(0.70, 7.6, 15.3, 15.9, {24, 17, 15.9, 15.3}, 0.4, 1.5)}}}};
  json claims = judge_claims(paper_like);
  REQUIRE(claims.size() == 5);
  for (auto& c : claims) {
    INFO(c.dump());
    REQUIRE(c["holds"].get<bool>());
  }
  json reversed = paper_like;
  reversed["models"]["ssa"] = fake_model(0.50, 9.5, 15.3, 19.0, {24, 17, 18, 15.3}, 0.0, 4.0);
  claims = judge_claims(reversed);
  for (auto& c : claims) {
    INFO(c.dump());
    REQUIRE_FALSE(c["holds"].get<bool>());
  }
}

TEST_CASE("charts draw their series", "[paradox]") {
  Chart c;
  c.title = "test";
  c.series.push_back({"a", {1, 2, 3}, {1, 4, 9}, 0xff0000});
  c.series.push_back({"b", {1, 2, 3}, {2, 2, 2}, 0x0000ff, true});
  auto px = render_chart(c);
  REQUIRE(px.size() == size_t(c.width) * c.height);
  size_t red = 0, blue = 0;
  for (uint32_t p : px) red += p == 0xFF0000FFu, blue += p == 0xFFFF0000u;  // RGBA bytes: R=ff / B=ff
  REQUIRE(red > 200);
  REQUIRE(blue > 100);
}

TEST_CASE("ssalab paradox end to end on a small budget", "[paradox][e2e]") {
  ParadoxOptions o;
  o.model = test::micro_model();
  o.train = test::micro_train(15);
  o.train.seq_len = 128;
  o.corpus = test::small_corpus();
  o.cache_dir = test::cache_dir();
  o.out_dir = test::scratch_dir("paradox");
  o.eval_batches = 2;
  o.probes = 2;
  o.needle_trials = 1;
  o.progress = false;
  json r = run_paradox(o);
  for (const char* m : {"full", "moba", "ssa"}) {
    INFO(m);
    REQUIRE(r["models"][m]["ppl_full"].get<double>() > 1);
    REQUIRE(r["models"][m]["attention_full_inference"]["sparsity"].size() == 2);
    REQUIRE(r["models"][m]["passkey"].size() > 0);
    REQUIRE(std::filesystem::exists(o.out_dir + "/models/" + std::string(m) + "/model.safetensors"));
  }
  // the models differ: same seed and data, different training
  REQUIRE(r["models"]["full"]["ppl_full"] != r["models"]["ssa"]["ppl_full"]);
  REQUIRE(r["claims"].size() == 5);
  std::string md = read_file(o.out_dir + "/report/report.md");
  REQUIRE_THAT(md, Catch::Contains("## The five claims"));
  for (const char* png : {"layers_sparsity.png", "layers_entropy.png", "ppl_vs_k.png", "needle_vs_length.png"})
    REQUIRE(std::filesystem::file_size(o.out_dir + "/report/" + png) > 2000);
  // the report regenerates from results.json alone
  json again = json::parse(read_file(o.out_dir + "/report/results.json"));
  write_paradox_report(again, o.out_dir + "/report2");
  REQUIRE(read_file(o.out_dir + "/report2/report.md") == md);

  // --models: the shipped checkpoints measured again without training give the same numbers
  ParadoxOptions re = o;
  re.models_dir = o.out_dir + "/models";
  re.out_dir = test::scratch_dir("paradox-remeasure");
  re.model = test::micro_model();
  re.model.hidden_size *= 2;  // ignored: the shape comes from the checkpoints
  re.train.seq_len = 64;      // ignored too: the training length comes from them
  json r2 = run_paradox(re);
  for (const char* m : {"full", "moba", "ssa"}) {
    INFO(m);
    REQUIRE(r2["models"][m]["ppl_full"].get<double>() == r["models"][m]["ppl_full"].get<double>());
    REQUIRE(r2["models"][m]["passkey"] == r["models"][m]["passkey"]);
    REQUIRE_FALSE(r2["models"][m].contains("train_seconds"));
  }
  REQUIRE(r2["setup"]["models_from"] == re.models_dir);
  REQUIRE(r2["claims"] == r["claims"]);
  REQUIRE_THAT(read_file(re.out_dir + "/report/report.md"), Catch::Contains("not trained in this run"));
  REQUIRE_FALSE(std::filesystem::exists(re.out_dir + "/models"));  // nothing trained, nothing shipped
}

TEST_CASE("paradox --models refuses a missing checkpoint before any work", "[paradox]") {
  ParadoxOptions o;
  o.corpus = test::small_corpus();
  o.cache_dir = test::cache_dir();
  o.out_dir = test::scratch_dir("paradox-bad-models");
  o.models_dir = test::scratch_dir("paradox-no-models");
  REQUIRE_THROWS_WITH(run_paradox(o), Catch::Contains(o.models_dir + "/full"));
  REQUIRE_FALSE(std::filesystem::exists(o.out_dir + "/report"));
}
