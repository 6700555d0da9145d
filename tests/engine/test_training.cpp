// Trainer, checkpoints, resume, bad inputs, and an end-to-end tiny SSA run.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/model/transformer.h"
#include "engine/train/run.h"
#include "engine/train/trainer.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "test_helpers.h"

using namespace ssalab;
using torch::Tensor;
namespace fs = std::filesystem;

using test::micro_run;

TEST_CASE("lr schedule: linear warmup then cosine to min_lr", "[train]") {
  TrainConfig t;
  t.steps = 100;
  t.warmup_frac = 0.1;
  t.lr = 1e-3;
  t.min_lr_ratio = 0.1;
  REQUIRE(lr_at(t, 0) == Approx(1e-4));
  REQUIRE(lr_at(t, 9) == Approx(1e-3));
  REQUIRE(lr_at(t, 10) == Approx(1e-3));
  REQUIRE(lr_at(t, 55) == Approx(0.55e-3));
  REQUIRE(lr_at(t, 100) == Approx(1e-4));
  for (int s = 11; s < 100; ++s) REQUIRE(lr_at(t, s) <= lr_at(t, s - 1));
}

TEST_CASE("batches and SSA mode draws are deterministic functions of (seed, step, micro)", "[train]") {
  std::vector<int32_t> toks(5000);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(i % 311);
  REQUIRE(torch::equal(sample_batch(toks, 4, 32, 1, 7, 0), sample_batch(toks, 4, 32, 1, 7, 0)));
  REQUIRE_FALSE(torch::equal(sample_batch(toks, 4, 32, 1, 7, 0), sample_batch(toks, 4, 32, 1, 8, 0)));
  int full = 0;
  for (int s = 0; s < 4000; ++s) full += draw_full_mode(3, s, 0, 0.5);
  REQUIRE(full > 1800);
  REQUIRE(full < 2200);
  for (int s = 0; s < 100; ++s) REQUIRE_FALSE(draw_full_mode(3, s, 0, 0.0));
  REQUIRE_THROWS_WITH(sample_batch(toks, 1, 6000, 1, 0, 0), Catch::Contains("not enough tokens"));
}

TEST_CASE("a step reports its phases in order, once per micro-batch", "[train]") {
  PreparedData data = prepare_data(test::small_corpus(), 512, test::cache_dir());
  auto model = std::make_shared<Transformer>(test::micro_model());
  TrainConfig tc = test::micro_train(2);
  tc.grad_accum = 2;
  tc.method = Method::Ssa;
  Trainer trainer(model, tc, data.tokens);
  std::vector<std::string> seen;
  trainer.on_phase = [&](const char* phase) { seen.push_back(phase); };
  trainer.step();
  REQUIRE(seen == std::vector<std::string>{"forward", "backward", "forward", "backward", "optimizer"});
  trainer.on_phase = nullptr;
  trainer.step();  // unset: nothing called
  REQUIRE(seen.size() == 5);
}

TEST_CASE("checkpoint round trip is bit-exact", "[checkpoint]") {
  std::string dir = test::scratch_dir("ckpt");
  PreparedData data = prepare_data(test::small_corpus(), 512, test::cache_dir());
  auto model = std::make_shared<Transformer>(test::micro_model());
  model->init_weights(42);
  Trainer trainer(model, test::micro_train(3), data.tokens);
  trainer.step();
  trainer.save(dir + "/ck", data.tokenizer);
  LoadedCheckpoint ck = load_checkpoint(dir + "/ck");
  auto a = model->named_parameters(), b = ck.model->named_parameters();
  for (auto& p : a) REQUIRE(torch::equal(p.value(), b[p.key()]));
  REQUIRE(ck.state->step == 1);
  REQUIRE(ck.tokenizer.serialized() == data.tokenizer.serialized());
  REQUIRE(to_json(ck.config) == to_json(model->config()));
  nlohmann::json cfg = nlohmann::json::parse(read_file(dir + "/ck/config.json"));
  REQUIRE(cfg["block_size"] == 8);
  REQUIRE(cfg["block_counts"] == 3);
  REQUIRE(cfg["window_size"] == 0);
  // shipped (fp16) checkpoints keep HF names and load back
  SaveOptions half;
  half.weights_dtype = torch::kFloat16;
  save_checkpoint(dir + "/half", *model, data.tokenizer, half);
  auto st = load_safetensors(dir + "/half/model.safetensors");
  REQUIRE(st.tensors.at("model.layers.0.self_attn.g_proj.weight").scalar_type() == torch::kFloat16);
  REQUIRE_NOTHROW(load_checkpoint(dir + "/half"));
}

TEST_CASE("resume gives the same losses and weights as an uninterrupted run", "[checkpoint][resume]") {
  std::string a = test::scratch_dir("straight"), b = test::scratch_dir("resumed");
  RunResult straight = run_training(micro_run(a, 8));
  RunOptions first = micro_run(b, 8);
  first.stop_after = 4;
  RunResult part1 = run_training(first);
  REQUIRE(part1.final_step == 4);
  RunOptions second = micro_run(b, 8);
  second.resume = "auto";
  RunResult part2 = run_training(second);
  REQUIRE(part2.final_step == 8);
  REQUIRE(part2.history.size() == 4);
  for (int i = 0; i < 4; ++i) {
    INFO("step " << part2.history[i].step);
    REQUIRE(part2.history[i].step == straight.history[4 + i].step);
    REQUIRE(part2.history[i].loss == straight.history[4 + i].loss);  // bit-exact on CPU
  }
  auto wa = load_checkpoint(a + "/checkpoint").model->named_parameters();
  auto wb = load_checkpoint(b + "/checkpoint").model->named_parameters();
  for (auto& p : wa) REQUIRE(torch::equal(p.value(), wb[p.key()]));
}

TEST_CASE("SSA logs both streams and the alignment losses; methods differ", "[train]") {
  std::string dir = test::scratch_dir("methods");
  RunOptions ssa = micro_run(dir + "/ssa", 12, Method::Ssa);
  REQUIRE(ssa.train.grad_accum == 1);  // one stream a step: its ce is the step's
  RunResult r = run_training(ssa);
  bool saw_full = false, saw_sparse = false;
  for (auto& m : r.history) {
    saw_full |= std::isfinite(m.ce_full);
    saw_sparse |= std::isfinite(m.ce_sparse);
    REQUIRE(std::isfinite(m.sparsity_loss));
    REQUIRE(m.sparsity_loss > 0);
    REQUIRE(m.commitment_loss == m.sparsity_loss);  // the two are equal in value
    // the logged loss is the paper's objective, ce + alpha * (sparsity + commitment)
    const double ce = std::isfinite(m.ce_full) ? m.ce_full : m.ce_sparse;
    REQUIRE(m.loss == Approx(ce + ssa.train.alpha * (m.sparsity_loss + m.commitment_loss)).epsilon(1e-6));
    REQUIRE(m.grad_norm > 0);
    REQUIRE(m.tokens_per_s > 0);
  }
  REQUIRE(saw_full);
  REQUIRE(saw_sparse);
  RunResult moba = run_training(micro_run(dir + "/moba", 3, Method::Moba));
  for (auto& m : moba.history) REQUIRE((std::isnan(m.ce_full) && std::isfinite(m.ce_sparse) && std::isnan(m.sparsity_loss)));
  RunResult full = run_training(micro_run(dir + "/full", 3, Method::Full));
  for (auto& m : full.history) REQUIRE((std::isfinite(m.ce_full) && std::isnan(m.ce_sparse)));
  // the metrics log is JSONL, one line per step
  std::ifstream log(dir + "/ssa/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line); ++lines) REQUIRE(nlohmann::json::parse(line).contains("ce_full"));
  REQUIRE(lines == 12);
}

TEST_CASE("a short tiny SSA run lowers validation loss clearly", "[train][e2e]") {
  std::string dir = test::scratch_dir("e2e");
  RunOptions o;
  o.model = model_preset("tiny");
  o.model.vocab_size = 512;
  o.train.method = Method::Ssa;
  o.train.steps = 120;
  o.train.batch_size = 8;
  o.train.seq_len = 128;
  o.train.eval_every = 0;
  o.train.eval_batches = 4;
  o.train.lr = 2e-3;
  o.train.device = "cpu";
  o.corpus = test::small_corpus();
  o.cache_dir = test::cache_dir();
  o.out_dir = dir;
  o.progress = false;
  PreparedData data = prepare_data(o.corpus, 512, o.cache_dir);
  auto fresh = std::make_shared<Transformer>(o.model);
  fresh->init_weights(o.train.seed);
  double before = perplexity(*fresh, data.tokens->val, 128, 4, 4, AttnMode::Full, {16, 4}, torch::kCPU);
  RunResult r = run_training(o);
  INFO("val ppl before " << before << " after full " << r.val_ppl_full << " sparse " << r.val_ppl_sparse);
  REQUIRE(r.val_ppl_full < 0.5 * before);
  REQUIRE(r.val_ppl_sparse < 0.5 * before);
}

TEST_CASE("NaN loss stops with a clear error and keeps the last good checkpoint", "[train][bad-input]") {
  std::string dir = test::scratch_dir("nan");
  RunOptions o = micro_run(dir, 40);
  o.train.save_every = 1;
  o.train.lr = 1e12;  // diverges within a few steps
  o.train.grad_clip = 0;
  o.train.warmup_frac = 0;
  REQUIRE_THROWS_WITH(run_training(o), Catch::Contains("became") && Catch::Contains("last good checkpoint"));
  LoadedCheckpoint ck = load_checkpoint(dir + "/checkpoint");
  for (auto& p : ck.model->parameters()) REQUIRE(torch::isfinite(p).all().item<bool>());
}

TEST_CASE("corrupt or mismatched checkpoints give clear errors", "[checkpoint][bad-input]") {
  std::string dir = test::scratch_dir("bad");
  PreparedData data = prepare_data(test::small_corpus(), 512, test::cache_dir());
  Transformer model(test::micro_model());
  save_checkpoint(dir + "/good", model, data.tokenizer, {});
  auto copy = [&](const std::string& name) {
    fs::copy(dir + "/good", dir + "/" + name, fs::copy_options::recursive);
    return dir + "/" + name;
  };
  REQUIRE_THROWS_WITH(load_checkpoint(dir + "/absent"), Catch::Contains("not found"));
  std::string c1 = copy("badjson");
  write_file_atomic(c1 + "/config.json", "{\"hidden_size\": 32,");
  REQUIRE_THROWS_WITH(load_checkpoint(c1), Catch::Contains("config.json") && Catch::Contains("not valid JSON"));
  std::string c2 = copy("truncated");
  std::string w = read_file(c2 + "/model.safetensors");
  write_file_atomic(c2 + "/model.safetensors", w.substr(0, w.size() / 2));
  REQUIRE_THROWS_WITH(load_checkpoint(c2), Catch::Contains("model.safetensors"));
  std::string c3 = copy("shape");
  auto cfg = nlohmann::json::parse(read_file(c3 + "/config.json"));
  cfg["intermediate_size"] = 80;
  write_file_atomic(c3 + "/config.json", cfg.dump());
  REQUIRE_THROWS_WITH(load_checkpoint(c3), Catch::Contains("shape") && Catch::Contains("mlp"));
  std::string c4 = copy("missingkey");
  cfg = nlohmann::json::parse(read_file(c4 + "/config.json"));
  cfg.erase("hidden_size");
  write_file_atomic(c4 + "/config.json", cfg.dump());
  REQUIRE_THROWS_WITH(load_checkpoint(c4), Catch::Contains("missing key 'hidden_size'"));
}

TEST_CASE("a failed checkpoint write leaves the previous checkpoint intact", "[checkpoint][bad-input]") {
  std::string dir = test::scratch_dir("failwrite");
  PreparedData data = prepare_data(test::small_corpus(), 512, test::cache_dir());
  Transformer model(test::micro_model());
  model.init_weights(1);
  save_checkpoint(dir + "/ck", model, data.tokenizer, {});
  std::string before = read_file(dir + "/ck/model.safetensors");
  // simulate a full disk: file writes beyond 4 KiB fail with EFBIG (root too)
  model.init_weights(2);
  std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit old_limit;
  getrlimit(RLIMIT_FSIZE, &old_limit);
  struct rlimit small = old_limit;
  small.rlim_cur = 4096;
  setrlimit(RLIMIT_FSIZE, &small);
  REQUIRE_THROWS_WITH(save_checkpoint(dir + "/ck", model, data.tokenizer, {}),
                      Catch::Contains("previous checkpoint kept"));
  setrlimit(RLIMIT_FSIZE, &old_limit);
  REQUIRE(read_file(dir + "/ck/model.safetensors") == before);
  REQUIRE_NOTHROW(load_checkpoint(dir + "/ck"));
}

TEST_CASE("bad corpus and settings are reported before training starts", "[train][bad-input]") {
  std::string dir = test::scratch_dir("badcorpus");
  RunOptions o = micro_run(dir + "/out", 3);
  o.corpus = dir + "/nothing-here";
  REQUIRE_THROWS_WITH(run_training(o), Catch::Contains("nothing-here"));
  std::ofstream(dir + "/binary.txt", std::ios::binary) << std::string("abc\0def", 7);
  o.corpus = dir + "/binary.txt";
  REQUIRE_THROWS_WITH(run_training(o), Catch::Contains("binary.txt"));
  o = micro_run(dir + "/out", 3);
  o.model.block_counts = 100;
  REQUIRE_THROWS_WITH(run_training(o), Catch::Contains("top-k"));
  o = micro_run(dir + "/out", 3);
  o.train.p_full = 2;
  REQUIRE_THROWS_WITH(run_training(o), Catch::Contains("p_full"));
}

TEST_CASE("trainer_state.json: a step that is not a whole step count is refused by name", "[checkpoint][bad-input][spec]") {
  nlohmann::json st = {{"step", 12}, {"train", to_json(test::micro_train(20))}};
  CHECK(trainer_state_from_json(st, "trainer_state.json").step == 12);
  // 1e300 made json's integer cast undefined behaviour (found by fuzz_trainer_state)
  for (nlohmann::json bad : {nlohmann::json(1e300), nlohmann::json(2.5), nlohmann::json(-1),
                             nlohmann::json(uint64_t(1) << 63), nlohmann::json("12")}) {
    st["step"] = bad;
    INFO(bad.dump());
    CHECK_THROWS_WITH(trainer_state_from_json(st, "trainer_state.json"), Catch::Contains("trainer_state.json"));
  }
}
