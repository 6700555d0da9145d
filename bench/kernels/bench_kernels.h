// The kernel benchmark's parts: what each file measures and the records the
// driver (bench_main.cpp) turns into tables and JSON.
//
//   bench_dense.cpp      LibTorch's dense causal SDPA (cuDNN, flash): the peer
//   bench_select.cpp     block selection, checked for well-formed output
//   bench_sparse.cpp     sparse forward / backward, checked against a masked
//                        dense fp32 reference; the split dual stream (dense + ours)
//   bench_stats.cpp      full-attention statistics and pooled maps
//   experimental/bench/bench_dual_fused.cpp   the fused dual-stream kernels
//
// Every kernel's params come from engine/attention/kernel_params.h, as in the
// engine, filled once per shape and selection so that a timed call is the
// launch alone.
#pragma once
#include <map>

#include "engine/attention/kernel_params.h"
#include "bench/kernels/bench_common.h"

namespace ssabench {

// ---------------------------------------------------------------- records

enum class SdpaBackend { cudnn, flash };
const char* backend_name(SdpaBackend b);

struct DenseResult {
  SdpaBackend backend;
  double fwd_ms = kNaN, fwd_bwd_ms = kNaN;
  std::string error;  // empty when timed
};

struct FlexResult {
  bool found = false;
  bool same_inputs = false, same_selection = false;
  double fwd_ms = kNaN, fwd_bwd_ms = kNaN;
  json raw;  // flex_bench.py's entry as written
};

// Which pooled maps a statistics run also writes: none, the full-attention map,
// or that and the sparse and dropped maps (what the app's views show).
enum class StatsMaps { none, full, all };
std::string stats_maps_label(StatsMaps m);

struct StatsResult {
  StatsMaps maps = StatsMaps::none;
  double ms = kNaN;
  double mean_selected_mass = kNaN;
};

// Sizes that follow from a selection: attended (query, key) pairs, and the K/V
// bytes our forward must bring from L2.
struct SelectionSize {
  int64_t pairs = 0;
  double fwd_kv_bytes = 0;
  double density = 0;  // pairs / causal dense pairs
};

struct ForwardCheck {
  std::vector<int64_t> rows;
  double max_err_output = kNaN, max_err_lse = kNaN;
};

struct FusedDualResult {
  double fwd_ms = kNaN;       // fused forward (full + sparse outputs, one pass)
  double fwd_bwd_ms = kNaN;   // fused forward + backward
  double sparse_diff = kNaN;  // max |fused sparse O - sparse_fwd O| (same selection)
};

struct SelectionResult {
  SelectionSpec spec{};
  int64_t selection_checksum = 0;
  SelectionSize size;
  ForwardCheck check;
  double select_ms = kNaN, fwd_ms = kNaN, fwd_bwd_ms = kNaN;
  double index_ms = kNaN, bwd_ms = kNaN;  // stages of fwd+bwd
  double fwd_all_tiles_ms = kNaN;          // the forward with every tile a query tile (fwd_ms: none,
                                           // the default; kernels/sparse_fwd.cuh)
  double query_tile_share = kNaN;          // of the forward's 8-token tiles, the share whose tokens use
                                           // each block of their union twice or more on average
  double dual_ms = kNaN;                   // cuDNN dense fwd+bwd + our fwd+bwd, timed as one op
  double dual_streams_ms = kNaN;           // the same with ours on a second CUDA stream (overlapped)
  double split_fwd_ms = kNaN;              // cuDNN dense fwd + our sparse fwd, as one op
  FusedDualResult fused;
  FlexResult flex;
  std::vector<StatsResult> stats;
};

struct ShapeResult {
  ShapeSpec shape{};
  std::vector<int64_t> input_checksums;  // q, k, v, dO
  std::vector<DenseResult> dense;
  std::vector<SelectionResult> selections;

  const DenseResult* dense_of(SdpaBackend b) const {
    for (const auto& d : dense)
      if (d.backend == b && d.error.empty()) return &d;
    return nullptr;
  }
  int64_t dense_pairs() const { return int64_t(kBatch) * shape.Hq * int64_t(shape.T) * (shape.T + 1) / 2; }
};

// ---------------------------------------------------------------- bench_dense.cpp

// Dense causal SDPA on one shape.  K and V are expanded to all query heads, as
// the engine's full() does; the expanded copies are the leaves, so the timed
// backward is the attention kernel's alone, without the group sum of dK / dV.
class DenseSdpa {
 public:
  explicit DenseSdpa(const Inputs& in);
  DenseResult time(SdpaBackend backend, GpuTimer& timer);
  // With the backend flags as they are (see OnlySdpa):
  void forward();           // as training runs it: inputs require grad, the LSE is written
  void forward_backward();  // through torch::autograd::grad, with the fixed dO

  // Leaves exactly one SDPA backend enabled (math off too, so an unsupported
  // case fails instead of silently timing the math path); restores the flags.
  class OnlySdpa {
   public:
    explicit OnlySdpa(SdpaBackend b);
    ~OnlySdpa();
    OnlySdpa(const OnlySdpa&) = delete;
    OnlySdpa& operator=(const OnlySdpa&) = delete;

   private:
    bool saved_[4];
  };

 private:
  Tensor q_, k_expanded_, v_expanded_, dout_;
};
void print_dense_table(const std::vector<ShapeResult>& results);
json dense_json(const ShapeResult& r);

// ---------------------------------------------------------------- bench_select.cpp

// A selection recorded elsewhere (`ssalab analyze` writes a model's per layer
// as layerL_selected_blocks.npy, (groups, T, K)) to replay at each shape.
struct RecordedSelection {
  std::string path;
  std::vector<int32_t> blocks;
  int64_t groups = 0, T = 0, K = 0;
  int block_size = 16;
};
RecordedSelection read_recorded_selection(const std::string& path, int block_size);

class SelectKernel {
 public:
  SelectKernel(const Inputs& in, SelectionSpec sel);
  // Replays `recorded` (engine/metrics/selection_locality.h) into blocks and
  // counts; run() then still times the select kernel on these inputs, into
  // scratch tensors, and leaves the replayed selection in place.
  void use_recorded(const Inputs& in, const RecordedSelection& recorded);
  void run();
  SelectionSpec spec() const { return spec_; }
  Tensor blocks;  // (B, Hkv, T, K) int32, -1 = empty slot
  Tensor counts;  // (B, Hkv, T) int32: valid slots

 private:
  SelectionSpec spec_;
  ssa::SelectParams p_;
  Tensor ws_, scratch_blocks_, scratch_counts_;
};
// Slot 0 is every token's own block and counts match the valid slots; throws CheckFailure.
void check_selection(const Inputs& in, const SelectKernel& sel);

// ---------------------------------------------------------------- bench_sparse.cpp

class SparseKernels {
 public:
  SparseKernels(const Inputs& in, const SelectKernel& sel);
  void forward();
  // every tile a query tile (min_block_reuse 0)
  void forward_all_tiles();
  // the share of 8-token tiles whose tokens use each union block twice or more
  double query_tile_share();
  void build_index();
  void backward();  // needs forward() and build_index()
  // What a training step pays for the sparse part once the selection exists.
  void forward_backward() {
    forward();
    build_index();
    backward();
  }
  Tensor o, lse;  // forward()'s outputs
  Tensor index_offsets, index_tokens, dq, dk, dv;

 private:
  ssa::BlockIndexParams index_p_;
  ssa::SparseFwdParams fwd_p_;
  ssa::SparseBwdParams bwd_p_;
  Tensor index_ws_, bwd_ws_;
};
SelectionSize measure_selection(const Inputs& in, const SelectKernel& sel);
// Our forward on a few query rows (all heads) against a masked dense fp32
// reference; throws CheckFailure when it is off.
ForwardCheck check_forward(const Inputs& in, const SelectKernel& sel, const SparseKernels& ours);
// Times selection, the sparse kernels, and (when cuDNN ran: `cudnn` not null)
// the split dual stream, dense and ours as one op; prints their lines.
void bench_sparse(const Inputs& in, SelectKernel& sel, SparseKernels& ours, DenseSdpa& dense,
                  const DenseResult* cudnn, GpuTimer& timer, SelectionResult& s);
void print_sparse_table(const std::vector<ShapeResult>& results);
void add_sparse_json(json& j, const ShapeResult& r, const SelectionResult& s);

// ---------------------------------------------------------------- bench_stats.cpp

// The statistics are a full-attention pass: one long shape with the first
// selection config says how they compare with dense SDPA.
constexpr const char* kStatsShape = "C";
constexpr int kStatsMapRowPool = 64;  // query rows per map row; one map per head
constexpr double kStatsBudgetMs = 400;
void bench_stats(const Inputs& in, const SelectKernel& sel, GpuTimer& timer, SelectionResult& s);
void print_stats_table(const std::vector<ShapeResult>& results);
void add_stats_json(json& j, const ShapeResult& r, const SelectionResult& s);

// ---------------------------------------------------------------- experimental/bench/bench_dual_fused.cpp

// Times the fused dual-stream forward and forward+backward and compares its
// sparse output with sparse_fwd's (re-runs ours.forward()).
void bench_fused_dual(const Inputs& in, const SelectKernel& sel, SparseKernels& ours, GpuTimer& timer,
                      SelectionResult& s);
void print_fused_table(const std::vector<ShapeResult>& results);
void add_fused_json(json& j, const ShapeResult& r, const SelectionResult& s);

}  // namespace ssabench
