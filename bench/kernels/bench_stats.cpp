// Full-attention statistics (kernels/attn_stats.cuh) for one selection:
// per-row statistics alone, with the full-attention map, and with the full,
// sparse and dropped maps, against cuDNN's dense forward.  Its values are
// tested against fp64 in tests/test_kernels.cu; here the mean selected mass is
// printed as a plausibility figure.
#include "bench/kernels/bench_kernels.h"

namespace ssabench {

std::string stats_maps_label(StatsMaps m) {
  return m == StatsMaps::none ? "no map"
         : m == StatsMaps::full ? "full map"
                                : "full, sparse and dropped maps";
}

namespace {

class StatsKernel {
 public:
  StatsKernel(const Inputs& in, const SelectKernel& sel) {
    const ShapeSpec& s = in.shape;
    stats_ = torch::empty({kBatch, s.Hq, s.T, ssa::kStatCount}, in.q.options().dtype(torch::kFloat));
    p_ = ssalab::stats_params(in.q, in.k, sel.blocks, sel.spec().block_size, sel.spec().top_k, /*q_offset=*/0,
                              stats_);
    p_.map_row_pool = kStatsMapRowPool;
    p_.map_mean_heads = false;
    for (Tensor* m : {&map_, &map_sparse_, &map_dropped_})
      *m = torch::empty({int64_t(ssa::stats_map_elems(p_))}, stats_.options());
  }
  void run(StatsMaps maps) {
    p_.map = maps != StatsMaps::none ? map_.data_ptr<float>() : nullptr;
    p_.map_sparse = maps == StatsMaps::all ? map_sparse_.data_ptr<float>() : nullptr;
    p_.map_dropped = maps == StatsMaps::all ? map_dropped_.data_ptr<float>() : nullptr;
    ok(ssa::attn_stats(p_, stream()));
  }
  // Mean attention mass inside the selected blocks (what the app calls sparsity).
  double mean_selected_mass() const { return stats_.select(3, ssa::kStatSelected).mean().item<double>(); }

 private:
  ssa::StatsParams p_;
  Tensor stats_, map_, map_sparse_, map_dropped_;
};

}  // namespace

void bench_stats(const Inputs& in, const SelectKernel& sel, GpuTimer& timer, SelectionResult& s) {
  StatsKernel stats(in, sel);
  for (StatsMaps maps : {StatsMaps::none, StatsMaps::full, StatsMaps::all}) {
    StatsResult st;
    st.maps = maps;
    st.ms = timer.median_ms([&] { stats.run(maps); }, kStatsBudgetMs);
    sync();
    st.mean_selected_mass = stats.mean_selected_mass();
    s.stats.push_back(st);
    print_line(in.shape.name, "stats", stats_maps_label(maps), st.ms, kNaN,
               strf("mean selected mass %.4f", st.mean_selected_mass));
  }
}

void print_stats_table(const std::vector<ShapeResult>& results) {
  bool header = false;
  for (const auto& r : results) {
    const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
    for (const auto& s : r.selections)
      for (const auto& st : s.stats) {
        if (!header) {
          std::printf("\n| shape | selection | statistics | ms | x cuDNN dense fwd | mean selected mass |\n");
          std::printf("| --- | --- | --- | --- | --- | --- |\n");
          header = true;
        }
        std::printf("| %s | %s | %s | %s | %s | %.4f |\n", r.shape.name, s.spec.label().c_str(),
                    st.maps == StatsMaps::none
                        ? "no map"
                        : strf("%s (rows pooled by %d, per head)", stats_maps_label(st.maps).c_str(), kStatsMapRowPool)
                              .c_str(),
                    fmt_ms(st.ms).c_str(), cudnn ? strf("%.2fx", st.ms / cudnn->fwd_ms).c_str() : "-",
                    st.mean_selected_mass);
      }
  }
}

void add_stats_json(json& j, const ShapeResult& r, const SelectionResult& s) {
  const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
  for (const auto& st : s.stats) {
    json map = st.maps == StatsMaps::none ? json()
               : json{{"row_pool", kStatsMapRowPool}, {"per_head", true},
                      {"sparse_and_dropped", st.maps == StatsMaps::all}};
    j["stats"].push_back(json{{"map", map},
                              {"ms", st.ms},
                              {"x_cudnn_dense_fwd", cudnn ? json(st.ms / cudnn->fwd_ms) : json()},
                              {"mean_selected_mass", st.mean_selected_mass}});
  }
}

}  // namespace ssabench
