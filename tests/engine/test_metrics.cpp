// Attention statistics on hand-made distributions.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>

#include "engine/metrics/analysis.h"
#include "engine/model/transformer.h"
#include "test_helpers.h"

using namespace ssalab;
using torch::Tensor;

TEST_CASE("uniform rows have entropy ln(n); sparsity is the selected share", "[metrics]") {
  const int T = 64, D = 8;
  Tensor q = torch::zeros({1, 2, T, D}), k = torch::randn({1, 1, T, D});  // q = 0: every score equal
  AnalysisRequest req;
  req.spec = {8, 3};
  Analysis a = analyze_qk({q}, {k}, req);
  const LayerAnalysis& L = a.layers[0];
  const std::vector<float> entropy = L.row(RowStat::Entropy), sparsity = L.row(RowStat::Sparsity),
                           sink = L.row(RowStat::SinkToken);
  REQUIRE(entropy.size() == size_t(2) * T);
  REQUIRE(L.row(RowStat::Entropy, 1) == std::vector<float>(entropy.begin() + T, entropy.end()));
  for (int t : {0, 7, 30, 63}) {
    INFO("row " << t);
    REQUIRE(entropy[t] == Approx(std::log(double(t + 1))).margin(1e-5));
    // selected keys: own block (t%8+1 keys) + up to 2 full past blocks
    int own = t / 8, kept = (t % 8 + 1) + 8 * std::min(2, own);
    REQUIRE(sparsity[t] == Approx(double(kept) / (t + 1)).margin(1e-5));
    REQUIRE(sink[t] == Approx(1.0 / (t + 1)).margin(1e-6));
  }
  // KL(sparse || full) of a row equals -log(sparsity)
  REQUIRE(L.heads[0].kl_sparse_full > 0);
  REQUIRE(L.heads[0].dropped == Approx(1 - L.heads[0].sparsity));
}

TEST_CASE("a one-hot first column is a sink of mass 1", "[metrics]") {
  const int T = 48, D = 4;
  Tensor k = torch::zeros({1, 1, T, D});
  k[0][0][0][0] = 1;  // only token 0 has a key along dim 0
  Tensor q = torch::zeros({1, 1, T, D});
  q.select(3, 0).fill_(1000);  // every query points at token 0 with a huge score
  AnalysisRequest req;
  req.spec = {8, 2};
  Analysis a = analyze_qk({q}, {k}, req);
  const HeadStats& h = a.layers[0].heads[0];
  REQUIRE(h.sink_token == Approx(1.0).margin(1e-6));
  REQUIRE(h.sink_block == Approx(1.0).margin(1e-6));
  REQUIRE(h.entropy == Approx(0.0).margin(1e-5));
  // block-pooled map: every query cell puts all its mass on key cell 0
  const int nc = a.n_cells;
  const std::vector<float> map_full = a.layers[0].map(CellMap::Full);
  REQUIRE(map_full == a.layers[0].map(CellMap::Full, 0));  // one head: the whole map
  for (int i = 1; i < nc; ++i) REQUIRE(map_full[size_t(i) * nc] == Approx(1.0).margin(1e-5));
}

TEST_CASE("maps: rows of the pooled full map sum to 1; full = kept + dropped", "[metrics]") {
  torch::manual_seed(4);
  const int T = 100;
  Tensor q = torch::randn({1, 4, T, 8}), k = torch::randn({1, 2, T, 8});
  AnalysisRequest req;
  req.spec = {10, 3};
  req.max_cells = 4;  // forces cells of 30 tokens (3 blocks)
  Analysis a = analyze_qk({q}, {k}, req);
  REQUIRE(a.cell_size == 30);
  REQUIRE(a.n_cells == 4);
  const auto& L = a.layers[0];
  const std::vector<float> map_full = L.map(CellMap::Full), map_sparse = L.map(CellMap::Sparse),
                           map_dropped = L.map(CellMap::Dropped);
  REQUIRE(map_full.size() == size_t(4) * a.n_cells * a.n_cells);
  for (int h = 0; h < 4; ++h)
    for (int i = 0; i < a.n_cells; ++i) {
      double full = 0, sparse = 0, dropped = 0;
      for (int j = 0; j < a.n_cells; ++j) {
        size_t idx = (size_t(h) * a.n_cells + i) * a.n_cells + j;
        full += map_full[idx];
        sparse += map_sparse[idx];
        dropped += map_dropped[idx];
      }
      REQUIRE(full == Approx(1.0).margin(1e-4));
      REQUIRE(sparse == Approx(1.0).margin(1e-4));
      REQUIRE(dropped >= 0);
    }
  // token maps are kept for short inputs and agree with the stats
  REQUIRE(L.token_full.size() == size_t(4) * T * T);
  double row_sum = 0;
  for (int s = 0; s < T; ++s) row_sum += L.token_full[size_t(2) * T * T + 57 * T + s];
  REQUIRE(row_sum == Approx(1.0).margin(1e-5));
}

TEST_CASE("query_detail agrees with the layer statistics", "[metrics]") {
  torch::manual_seed(8);
  const int T = 80;
  Tensor q = torch::randn({1, 4, T, 8}), k = torch::randn({1, 2, T, 8});
  AnalysisRequest req;
  req.spec = {8, 3};
  Analysis a = analyze_qk({q}, {k}, req);
  for (int t : {5, 47, 79}) {
    QueryDetail d = query_detail(a, 0, 3, t);
    REQUIRE(d.kv_head == 1);
    REQUIRE(d.selected.front() == t / 8);
    REQUIRE(d.sparsity == Approx(a.layers[0].row(RowStat::Sparsity, 3)[size_t(t)]).margin(1e-5));
    REQUIRE(d.entropy == Approx(a.layers[0].row(RowStat::Entropy, 3)[size_t(t)]).margin(1e-4));
    double scores = 0;
    for (float s : d.block_scores) scores += s;
    if (!d.block_scores.empty()) REQUIRE(scores == Approx(2.0).margin(1e-4));  // 2 heads per group, each sums to 1
  }
  REQUIRE_THROWS(query_detail(a, 0, 9, 0));
}

TEST_CASE("selection locality: neighbours' shared blocks and a tile's distinct blocks", "[metrics]") {
  // one group, 4 rows of K = 2: {0}, {0,1}, {0,1}, {2,5}
  std::vector<int32_t> sel = {0, -1, 1, 0, 1, 0, 2, 5};
  SelectionLocality a = selection_locality(sel, 1, 4, 2, 2);
  REQUIRE(a.neighbour_overlap == Approx((0.5 + 1.0 + 0.0) / 3));
  REQUIRE(a.tile_union == Approx((2.0 + 4.0) / 2));      // tiles {0,1} and {0,1,2,5}
  REQUIRE(a.tile_reuse == Approx((3.0 / 2 + 4.0 / 4) / 2));
  SelectionLocality whole = selection_locality(sel, 1, 4, 2, 64);  // one short tile
  REQUIRE(whole.tile_union == Approx(4.0));
  REQUIRE(whole.tile_reuse == Approx(7.0 / 4));
  // a second group with the same rows: the same means; the first row of a group has no neighbour
  std::vector<int32_t> two = sel;
  two.insert(two.end(), sel.begin(), sel.end());
  SelectionLocality b = selection_locality(two, 2, 4, 2, 2);
  REQUIRE(b.neighbour_overlap == Approx(a.neighbour_overlap));
  REQUIRE(b.tile_union == Approx(a.tile_union));
  // a sliding window of blocks shares nearly everything; scattered blocks share nothing
  const int64_t T = 256, K = 4;
  std::vector<int32_t> window(size_t(T * K)), scattered(size_t(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = 0; s < K; ++s) {
      const int64_t blk = t / 16 - s;
      window[size_t(t * K + s)] = blk >= 0 ? int32_t(blk) : -1;
      scattered[size_t(t * K + s)] = int32_t(t * K + s);
    }
  const SelectionLocality w = selection_locality(window, 1, T, K), r = selection_locality(scattered, 1, T, K);
  REQUIRE(w.neighbour_overlap > 0.95);
  REQUIRE(w.tile_union <= K + 64 / 16);
  REQUIRE(r.neighbour_overlap == 0.0);
  REQUIRE(r.tile_union == Approx(64.0 * K));
  REQUIRE(r.tile_reuse == Approx(1.0));
  REQUIRE_THROWS_WITH(selection_locality(sel, 1, 5, 2), Catch::Contains("slots"));
}

TEST_CASE("a recorded selection replays at another shape with its own blocks first, causal and distinct",
          "[metrics]") {
  torch::manual_seed(4);
  const int64_t Hkv = 2, T = 100, K = 4, bs = 8;  // 100 rows: a period of 96 (12 whole blocks)
  const Selection sel = select_blocks(torch::randn({1, 4, T, 16}), torch::randn({1, Hkv, T, 16}), {int(bs), int(K)});
  const Tensor recorded_t = sel.blocks[0].to(torch::kInt).contiguous();  // (Hkv, T, K)
  const std::vector<int32_t> recorded(recorded_t.data_ptr<int32_t>(), recorded_t.data_ptr<int32_t>() + recorded_t.numel());
  const int64_t B = 2, H = 3, T_out = 250;
  const std::vector<int32_t> out = replay_selection(recorded, Hkv, T, K, int(bs), B, H, T_out);
  REQUIRE(out.size() == size_t(B * H * T_out * K));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T_out; ++t) {
        const int32_t* row = out.data() + ((b * H + h) * T_out + t) * K;
        const int32_t* src = recorded.data() + ((h % Hkv) * T + t % 96) * K;
        INFO("b " << b << " h " << h << " t " << t);
        REQUIRE(row[0] == t / bs);  // the own block first
        std::vector<int32_t> seen;
        for (int64_t s = 0; s < K; ++s) {
          REQUIRE((row[s] < 0) == (src[s] < 0));  // the same empty slots as the recorded row
          if (row[s] < 0) continue;
          REQUIRE(row[s] == src[s] + t / 96 * 12);  // moved on by whole periods
          REQUIRE(row[s] <= t / bs);                // causal
          seen.push_back(row[s]);
        }
        std::sort(seen.begin(), seen.end());
        REQUIRE(std::adjacent_find(seen.begin(), seen.end()) == seen.end());  // distinct
      }
  // the recorded rows' locality survives the replay
  const SelectionLocality before = selection_locality(recorded, Hkv, T, K, 16),
                          replayed = selection_locality(out, B * H, T_out, K, 16);
  REQUIRE(replayed.neighbour_overlap == Approx(before.neighbour_overlap).margin(0.1));
  REQUIRE_THROWS_WITH(replay_selection(recorded, Hkv, T, K, 128, 1, 1, 10), Catch::Contains("less than one block"));
  REQUIRE_THROWS_WITH(replay_selection(recorded, Hkv, T + 1, K, int(bs), 1, 1, 10), Catch::Contains("slots"));
  std::vector<int32_t> shifted = recorded;
  shifted[0] = 5;  // row 0 must start with block 0
  REQUIRE_THROWS_WITH(replay_selection(shifted, Hkv, T, K, int(bs), 1, 1, 10), Catch::Contains("own block"));
}

TEST_CASE("analyze runs a model end to end, for full and sparse inference", "[metrics]") {
  Transformer m(test::micro_model());
  AnalysisRequest req;
  for (int i = 0; i < 60; ++i) req.tokens.push_back(i * 7 % 512);
  req.spec = {8, 3};
  for (AttnMode mode : {AttnMode::Full, AttnMode::Sparse}) {
    req.inference = mode;
    Analysis a = analyze(m, req);
    REQUIRE(a.layers.size() == 2);
    REQUIRE(a.mean_sparsity() > 0);
    REQUIRE(a.mean_sparsity() <= 1.0 + 1e-6);
    REQUIRE(to_json(a)["layers"].size() == 2);
    const auto loc = to_json(a)["layers"][0]["selection_locality"];
    REQUIRE(loc["neighbour_overlap"].get<double>() > 0);
    REQUIRE(loc["neighbour_overlap"].get<double>() <= 1);
    REQUIRE(loc["tile_distinct_blocks"].get<double>() >= 1);
    REQUIRE(loc["tile_distinct_blocks"].get<double>() <= (60 + 7) / 8);  // every block of the 60 tokens
  }
  req.tokens.push_back(100000);
  REQUIRE_THROWS_WITH(analyze(m, req), Catch::Contains("outside the vocabulary"));
}

TEST_CASE("token losses from hidden states in row chunks equal the whole logits' cross-entropy", "[metrics]") {
  Transformer m(test::micro_model());
  m.eval();
  torch::NoGradGuard no_grad;
  const int64_t T = 45;
  Tensor ids = torch::randint(0, m.config().vocab_size, {1, T}, torch::kLong);
  ForwardOptions hidden_only;
  hidden_only.hidden_only = true;
  ForwardOutput h = m.forward(ids, hidden_only);
  REQUIRE(!h.logits.defined());
  Tensor logits = m.forward(ids).logits;
  REQUIRE(torch::allclose(m.logits(h.hidden), logits, 1e-5, 1e-6));
  Tensor expected = torch::nn::functional::cross_entropy(
      logits[0].narrow(0, 0, T - 1), ids[0].narrow(0, 1, T - 1),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  for (int64_t rows : {1, 7, 44, 100, 0}) {
    INFO("rows per chunk " << rows);
    std::vector<float> nll = token_nll(m, h.hidden, ids, rows);
    REQUIRE(nll.size() == size_t(T - 1));
    for (int64_t t = 0; t < T - 1; ++t) REQUIRE(nll[t] == Approx(expected[t].item<float>()).margin(1e-5));
  }
}

TEST_CASE("reanalyze: another k or block size on kept q and k equals a new analysis", "[metrics]") {
  Transformer m(test::micro_model());
  AnalysisRequest req;
  for (int i = 0; i < 96; ++i) req.tokens.push_back(i * 11 % 512);
  req.spec = {8, 3};
  req.token_losses = true;
  Analysis first = analyze(m, req);
  REQUIRE_FALSE(first.qk_reused);
  for (SparseSpec spec : {SparseSpec{8, 5}, SparseSpec{16, 2}, SparseSpec{8, 3, SelectionRule::NsaChunked}}) {
    INFO(spec.block_size << "/" << spec.top_k);
    req.spec = spec;
    Analysis again = reanalyze(m, first, req), fresh = analyze(m, req);
    REQUIRE(again.qk_reused);
    REQUIRE(again.spec.top_k == spec.top_k);
    REQUIRE(again.n_cells == fresh.n_cells);
    for (size_t l = 0; l < fresh.layers.size(); ++l) {
      const LayerAnalysis &A = again.layers[l], &F = fresh.layers[l];
      REQUIRE(A.selected == F.selected);
      for (size_t h = 0; h < F.heads.size(); ++h) {
        REQUIRE(A.heads[h].sparsity == Approx(F.heads[h].sparsity).epsilon(1e-6));
        REQUIRE(A.heads[h].entropy == Approx(F.heads[h].entropy).epsilon(1e-6));
      }
      const std::vector<float> a_drop = A.map(CellMap::Dropped), f_drop = F.map(CellMap::Dropped);
      REQUIRE(a_drop.size() == f_drop.size());
      for (size_t i = 0; i < f_drop.size(); ++i) REQUIRE(a_drop[i] == Approx(f_drop[i]).margin(1e-6));
    }
    REQUIRE(again.nll_full == fresh.nll_full);
    REQUIRE(again.nll_sparse.size() == fresh.nll_sparse.size());
    for (size_t i = 0; i < fresh.nll_sparse.size(); ++i) REQUIRE(again.nll_sparse[i] == Approx(fresh.nll_sparse[i]).margin(1e-5));
  }
  // q and k of a sparse-inference analysis depend on the selection; other tokens are another analysis
  req.spec = {8, 3};
  req.inference = AttnMode::Sparse;
  REQUIRE_THROWS_WITH(reanalyze(m, analyze(m, req), req), Catch::Contains("full-inference"));
  req.inference = AttnMode::Full;
  req.tokens.pop_back();
  REQUIRE_THROWS_WITH(reanalyze(m, first, req), Catch::Contains("tokens differ"));
}

// Largest |a - b| over two float vectors of the same size.
static double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, double(std::fabs(a[i] - b[i])));
  return e;
}

// Two analyses of the same q and k under the same selection: equal selections,
// and rows, maps and head figures equal to `tolerance`.
static void require_same_analysis(const Analysis& A, const Analysis& B, double tolerance) {
  REQUIRE(A.layers.size() == B.layers.size());
  REQUIRE(A.n_cells == B.n_cells);
  for (size_t l = 0; l < A.layers.size(); ++l) {
    INFO("layer " << l);
    const LayerAnalysis &a = A.layers[l], &b = B.layers[l];
    REQUIRE(a.selected == b.selected);
    for (RowStat s : {RowStat::Sparsity, RowStat::Entropy, RowStat::SinkToken}) {
      INFO("row statistic " << int(s));
      CHECK(max_difference(a.row(s), b.row(s)) < tolerance);
    }
    for (CellMap m : {CellMap::Full, CellMap::Sparse, CellMap::Dropped}) {
      INFO("map " << int(m));
      CHECK(max_difference(a.map(m), b.map(m)) < tolerance);
    }
    for (size_t h = 0; h < a.heads.size(); ++h) {
      const HeadStats &x = a.heads[h], &y = b.heads[h];
      CHECK(x.sparsity == Approx(y.sparsity).margin(tolerance));
      CHECK(x.dropped == Approx(y.dropped).margin(tolerance));
      CHECK(x.entropy == Approx(y.entropy).margin(tolerance));
      CHECK(x.sink_token == Approx(y.sink_token).margin(tolerance));
      CHECK(x.sink_block == Approx(y.sink_block).margin(tolerance));
      CHECK(x.kl_sparse_full == Approx(y.kl_sparse_full).margin(10 * tolerance));
    }
  }
}

TEST_CASE("reanalyze: the kept rows' LSE and full map measure a new selection as a fresh analysis does",
          "[metrics]") {
  Transformer m(test::micro_model());
  AnalysisRequest req;
  for (int i = 0; i < 96; ++i) req.tokens.push_back(i * 13 % 512);
  req.spec = {8, 3};
  req.token_map_limit = 0;  // no token maps: the rows can be reused
  req.max_cells = 3;        // cells of 32 tokens at block 8 and at block 16
  Analysis first = analyze(m, req);
  REQUIRE(first.layers[0].row_lse.defined());
  REQUIRE_FALSE(first.layers[0].from_kept_rows);
  const Analysis* previous = &first;
  Analysis chained;
  for (SparseSpec spec : {SparseSpec{8, 5}, SparseSpec{16, 2}, SparseSpec{8, 4, SelectionRule::NsaChunked},
                          SparseSpec{8, 3}}) {
    INFO(spec.block_size << "/" << spec.top_k << " " << to_string(spec.rule));
    req.spec = spec;
    Analysis again = reanalyze(m, *previous, req), fresh = analyze(m, req);
    REQUIRE(again.cell_size == 32);
    for (const LayerAnalysis& L : again.layers) REQUIRE(L.from_kept_rows);
    require_same_analysis(again, fresh, 2e-5);
    chained = std::move(again);
    previous = &chained;  // the next change starts from a reused analysis
  }
  // cells of 8 tokens (max_cells 12 at block 8) give those of 16 (block 16) by
  // pooling the full map; the other way there is nothing to pool, so it measures afresh
  req.max_cells = 12;
  req.spec = {8, 3};
  const Analysis fine = analyze(m, req);
  REQUIRE(fine.cell_size == 8);
  req.spec = {16, 2};
  const Analysis coarse = reanalyze(m, fine, req);
  REQUIRE(coarse.cell_size == 16);
  for (const LayerAnalysis& L : coarse.layers) REQUIRE(L.from_kept_rows);
  require_same_analysis(coarse, analyze(m, req), 2e-5);
  req.spec = {8, 3};
  const Analysis again_fine = reanalyze(m, coarse, req);
  REQUIRE(again_fine.cell_size == 8);
  for (const LayerAnalysis& L : again_fine.layers) REQUIRE_FALSE(L.from_kept_rows);
  require_same_analysis(again_fine, fine, 1e-6);
}

TEST_CASE("on CUDA, a k or block-size change reuses the kernels' rows and equals a fresh analysis", "[metrics][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  torch::manual_seed(11);
  const int T = 1000, H = 8, Hkv = 2;
  Tensor q = torch::randn({1, H, T, 64}).to(torch::kCUDA, torch::kBFloat16);
  Tensor k = torch::randn({1, Hkv, T, 64}).to(torch::kCUDA, torch::kBFloat16);
  AnalysisRequest req;
  req.spec = {16, 6};
  req.token_map_limit = 0;
  req.max_cells = 32;  // cells of 32 tokens at block 16 and 32, of 64 (pooled from 32) at block 64
  const Analysis first = analyze_qk({q}, {k}, req);
  REQUIRE(first.layers[0].by_kernels);
  for (SparseSpec spec : {SparseSpec{16, 3}, SparseSpec{32, 4}, SparseSpec{64, 4},
                          SparseSpec{16, 16, SelectionRule::NsaChunked}}) {
    INFO(spec.block_size << "/" << spec.top_k << " " << to_string(spec.rule));
    req.spec = spec;
    const Analysis again = analyze_qk({q}, {k}, req, &first), fresh = analyze_qk({q}, {k}, req);
    REQUIRE(again.layers[0].from_kept_rows);
    REQUIRE(again.layers[0].by_kernels);
    REQUIRE(fresh.layers[0].by_kernels);
    require_same_analysis(again, fresh, 2e-4);
  }
}

TEST_CASE("on CUDA, an fp32 model is analysed with its forward under bf16 autocast, through the kernels", "[metrics][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  ModelConfig c = test::kernel_micro_model();
  c.max_position = 1024;
  Transformer m(c);
  m.init_weights(5);
  AnalysisRequest req;
  for (int i = 0; i < 512; ++i) req.tokens.push_back((i * 37 + 11) % c.vocab_size);
  req.spec = {16, 4};
  req.token_map_limit = 0;
  req.token_losses = true;
  const Analysis on_cpu = analyze(m, req);  // fp32 throughout
  REQUIRE_FALSE(on_cpu.bf16_autocast);
  m.to(torch::kCUDA);  // fp32 weights on the GPU, as the app's own training model
  const Analysis on_gpu = analyze(m, req);
  REQUIRE(on_gpu.bf16_autocast);
  for (const LayerAnalysis& L : on_gpu.layers) {
    REQUIRE(L.by_kernels);
    // bf16 q and k: the forward's attention took the kernels, not the fp32 reference path
    REQUIRE(L.q.scalar_type() == torch::kBFloat16);
  }
  // the same model in bf16 rounding: figures close to the fp32 CPU analysis
  REQUIRE(on_gpu.mean_entropy() == Approx(on_cpu.mean_entropy()).epsilon(0.03));
  REQUIRE(on_gpu.mean_sparsity() == Approx(on_cpu.mean_sparsity()).epsilon(0.03));
  REQUIRE(on_gpu.nll_full.size() == on_cpu.nll_full.size());
  REQUIRE(on_gpu.nll_sparse.size() == on_cpu.nll_sparse.size());
  double mean_gap = 0;
  for (size_t i = 0; i < on_cpu.nll_sparse.size(); ++i) mean_gap += std::fabs(on_gpu.nll_sparse[i] - on_cpu.nll_sparse[i]);
  REQUIRE(mean_gap / double(on_cpu.nll_sparse.size()) < 0.05);
  // a slider change on the kept bf16 q and k says the same
  req.spec = {16, 2};
  REQUIRE(reanalyze(m, on_gpu, req).bf16_autocast);
}

TEST_CASE("on CUDA, long inputs are analysed by the kernels and agree with LibTorch", "[metrics][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  torch::manual_seed(9);
  const int T = 1000, H = 8, Hkv = 2;
  // bf16-exact values, so the kernels (bf16) and the CPU path (fp32) see the same inputs
  Tensor q = torch::randn({1, H, T, 64}).to(torch::kBFloat16).to(torch::kFloat);
  Tensor k = torch::randn({1, Hkv, T, 64}).to(torch::kBFloat16).to(torch::kFloat);
  AnalysisRequest req;
  req.spec = {16, 6};
  req.token_map_limit = 0;  // no token maps: the kernels may take it
  req.max_cells = 32;       // cells of 32 tokens (2 blocks)
  Analysis cpu = analyze_qk({q}, {k}, req);
  Analysis gpu = analyze_qk({q.to(torch::kCUDA)}, {k.to(torch::kCUDA)}, req);
  const LayerAnalysis &A = cpu.layers[0], &B = gpu.layers[0];
  REQUIRE_FALSE(A.by_kernels);
  REQUIRE(B.by_kernels);
  REQUIRE(A.selected.size() == B.selected.size());
  // Selections: the same blocks in the same slots, except where two blocks'
  // scores tie to fp32 rounding (summation order differs).
  const int K = req.spec.top_k;
  std::vector<char> same_row(size_t(Hkv) * T, 1);
  int differing = 0;
  for (size_t i = 0; i < A.selected.size(); ++i)
    if (A.selected[i] != B.selected[i]) same_row[i / K] = 0;
  for (char s : same_row) differing += !s;
  CHECK(differing <= 2);
  REQUIRE(B.row_stats.is_cuda());  // like the maps, on the GPU until asked for
  const std::vector<float> a_sp = A.row(RowStat::Sparsity), a_en = A.row(RowStat::Entropy),
                           a_sink = A.row(RowStat::SinkToken), b_sp = B.row(RowStat::Sparsity),
                           b_en = B.row(RowStat::Entropy), b_sink = B.row(RowStat::SinkToken);
  double e_sp = 0, e_en = 0, e_sink = 0;
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) {
      if (!same_row[size_t(h / (H / Hkv)) * T + t]) continue;
      const size_t i = size_t(h) * T + t;
      e_sp = std::max(e_sp, double(std::fabs(a_sp[i] - b_sp[i])));
      e_en = std::max(e_en, double(std::fabs(a_en[i] - b_en[i])));
      e_sink = std::max(e_sink, double(std::fabs(a_sink[i] - b_sink[i])));
    }
  CHECK(e_sp < 2e-3);
  CHECK(e_en < 5e-3);
  CHECK(e_sink < 2e-3);
  REQUIRE(B.cell_maps.is_cuda());  // the maps stay on the GPU until a view asks
  const std::vector<float> a_full = A.map(CellMap::Full), a_sparse = A.map(CellMap::Sparse),
                           a_drop = A.map(CellMap::Dropped), b_full = B.map(CellMap::Full),
                           b_sparse = B.map(CellMap::Sparse), b_drop = B.map(CellMap::Dropped);
  REQUIRE(a_full.size() == b_full.size());
  REQUIRE(B.map(CellMap::Sparse, 3).size() == size_t(gpu.n_cells) * gpu.n_cells);
  double e_full = 0, e_sparse = 0, e_drop = 0;
  for (size_t i = 0; i < a_full.size(); ++i) {
    e_full = std::max(e_full, double(std::fabs(a_full[i] - b_full[i])));
    e_sparse = std::max(e_sparse, double(std::fabs(a_sparse[i] - b_sparse[i])));
    e_drop = std::max(e_drop, double(std::fabs(a_drop[i] - b_drop[i])));
  }
  INFO("map errors full " << e_full << " sparse " << e_sparse << " dropped " << e_drop);
  // a differing selection moves whole blocks of mass between the sparse and dropped maps
  CHECK(e_full < 2e-3);
  CHECK(e_sparse < (differing ? 0.2 : 5e-3));
  CHECK(e_drop < (differing ? 0.2 : 2e-3));
  for (int h = 0; h < H; ++h) {
    CHECK(A.heads[h].sparsity == Approx(B.heads[h].sparsity).margin(2e-3));
    CHECK(A.heads[h].kl_sparse_full == Approx(B.heads[h].kl_sparse_full).margin(5e-3));
  }
}
