// build_map_image on a hand-made Analysis (no model, no GL) and the CSV export.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "views/map_widget.h"
#include "views/views.h"

using namespace ssalab;
using namespace ssalab::views;

namespace {

// T = 8 tokens, block size 2, k = 2, 2 query heads sharing 1 KV head, causal
// uniform attention in head 0 and "attend to token 0" in head 1.
Analysis toy_analysis(bool token_maps) {
  Analysis a;
  a.T = 8;
  a.num_layers = 1;
  a.num_heads = 2;
  a.num_kv_heads = 1;
  a.spec = SparseSpec{2, 2};
  a.cell_size = 4;  // cells of 2 blocks
  a.n_cells = 2;
  LayerAnalysis L;
  const int T = 8;
  std::vector<float> full(2 * T * T, 0.0f);
  for (int t = 0; t < T; ++t) {
    for (int s = 0; s <= t; ++s) full[t * T + s] = 1.0f / (t + 1);
    full[T * T + t * T + 0] = 1.0f;
  }
  // selection: own block + block 0
  for (int t = 0; t < T; ++t) {
    L.selected.push_back(t / 2);
    L.selected.push_back(t / 2 == 0 ? -1 : 0);
  }
  if (token_maps) {
    L.token_full = full;
    L.token_sparse = full;  // not used by these checks
  }
  // cell maps: QueryMeanKeySum pooling of the token maps; dropped 0.25 everywhere
  std::vector<float> pooled;
  for (int h = 0; h < 2; ++h) {
    Grid g{T, T, std::vector<float>(full.begin() + h * T * T, full.begin() + (h + 1) * T * T)};
    Grid c = pool_map(g, 4, Pool::QueryMeanKeySum);
    pooled.insert(pooled.end(), c.v.begin(), c.v.end());
  }
  torch::Tensor cells = torch::tensor(pooled).view({2, 2, 2});
  L.cell_maps = torch::stack({cells, cells, torch::full_like(cells, 0.25f)});
  L.heads.resize(2);
  a.layers.push_back(L);
  return a;
}

}  // namespace

TEST_CASE("map image: token level, one head and the mean", "[views][map]") {
  Analysis a = toy_analysis(true);
  MapImage m = build_map_image(a, MapRequest{0, 0, false, MapKind::Full, true});
  REQUIRE(m.problem.empty());
  REQUIRE(m.token_level);
  REQUIRE(m.n() == 8);
  CHECK(m.values.at(3, 0) == Approx(0.25));
  CHECK(m.values.at(3, 4) == 0.0f);
  MapImage mean = build_map_image(a, MapRequest{0, 0, true, MapKind::Full, true});
  CHECK(mean.values.at(3, 0) == Approx(0.5 * (0.25 + 1.0)));
  CHECK(row_query(m, 5) == 5);
}

TEST_CASE("map image: dropped mass at token level follows the selection", "[views][map]") {
  Analysis a = toy_analysis(true);
  MapImage d = build_map_image(a, MapRequest{0, 0, false, MapKind::Dropped, true});
  REQUIRE(d.problem.empty());
  // query 7 keeps blocks 3 (own) and 0; it drops blocks 1 and 2 (tokens 2..5)
  CHECK(d.values.at(7, 0) == 0.0f);
  CHECK(d.values.at(7, 2) == Approx(1.0 / 8));
  CHECK(d.values.at(7, 5) == Approx(1.0 / 8));
  CHECK(d.values.at(7, 6) == 0.0f);
  // head 1 puts everything on token 0, which is always kept: nothing dropped
  MapImage d1 = build_map_image(a, MapRequest{0, 1, false, MapKind::Dropped, true});
  for (float v : d1.values.v) CHECK(v == 0.0f);
}

TEST_CASE("map image: block level when token maps are absent or not wanted", "[views][map]") {
  Analysis a = toy_analysis(false);
  MapImage m = build_map_image(a, MapRequest{0, 0, false, MapKind::Full, true});
  REQUIRE(m.problem.empty());
  CHECK_FALSE(m.token_level);
  REQUIRE(m.n() == 2);
  CHECK(m.cell_size == 4);
  CHECK(m.values.at(1, 0) + m.values.at(1, 1) == Approx(1.0));  // rows of mass per query sum to 1
  CHECK(row_query(m, 0) == 3);  // last token of the cell
  MapImage d = build_map_image(a, MapRequest{0, 0, false, MapKind::Dropped, false});
  CHECK(d.values.at(1, 1) == 0.25f);  // the engine's map_dropped wins
  MapImage bad = build_map_image(Analysis{}, MapRequest{});
  CHECK_FALSE(bad.problem.empty());
}

TEST_CASE("metrics CSV export writes every logged step, NaN as empty", "[views][export]") {
  auto snap = std::make_shared<Snapshot>();
  MetricPoint p;
  p.step = 1;
  p.loss = 2.5;
  p.ce_full = 2.0;
  snap->history.push_back(p);
  p.step = 2;
  p.ce_full = NAN;
  p.ce_sparse = 2.1;
  snap->history.push_back(p);
  UiState ui;
  ui.snap = snap;
  std::string path = (std::filesystem::temp_directory_path() / "ssalab_test_metrics.csv").string();
  REQUIRE(ExportMetricsCsv(ui, path) == "");
  std::ifstream f(path);
  std::string header, l1, l2, extra;
  std::getline(f, header);
  std::getline(f, l1);
  std::getline(f, l2);
  CHECK(header.rfind("step,loss,ce_full,ce_sparse", 0) == 0);
  CHECK(l1.rfind("1,2.5,2,,", 0) == 0);
  CHECK(l2.rfind("2,2.5,,2.1,", 0) == 0);
  CHECK_FALSE(std::getline(f, extra));
  std::filesystem::remove(path);
  UiState empty;
  CHECK_FALSE(ExportMetricsCsv(empty, path).empty());
}

TEST_CASE("SpecProblem: the probe length and the training sequences both limit k x block size", "[views][controls]") {
  Snapshot snap;
  snap.train.method = Method::Ssa;
  snap.train.seq_len = 128;
  CHECK(SpecProblem(snap, SparseSpec{16, 8}, 512).empty());   // 8 blocks of 16 fit in 128
  CHECK_FALSE(SpecProblem(snap, SparseSpec{32, 8}, 512).empty());  // only 4 blocks of 32 in 128
  CHECK_FALSE(SpecProblem(snap, SparseSpec{16, 8}, 64).empty());   // the probe has 4 blocks
  CHECK_FALSE(SpecProblem(snap, SparseSpec{0, 1}, 512).empty());
  snap.train.method = Method::Full;  // full attention training does not select blocks
  CHECK(SpecProblem(snap, SparseSpec{32, 8}, 512).empty());
}
