// Block selection (kernels/select.cuh): int32 (B, Hkv, T, K) blocks and counts
// for one shape and selection config, and the check that its output is well
// formed before anything is timed.  Its ranking is tested slot by slot against
// fp64 in tests/test_kernels.cu; the sparse forward check (bench_sparse.cpp)
// uses whatever it selected.
#include "bench/kernels/bench_kernels.h"

#include <cstring>

#include "engine/metrics/selection_locality.h"
#include "engine/util/npy.h"

namespace ssabench {

SelectKernel::SelectKernel(const Inputs& in, SelectionSpec sel) : spec_(sel) {
  const ShapeSpec& s = in.shape;
  auto i32 = in.q.options().dtype(torch::kInt32);
  blocks = torch::empty({kBatch, s.Hkv, s.T, sel.top_k}, i32);
  counts = torch::empty({kBatch, s.Hkv, s.T}, i32);
  p_ = ssalab::select_params(in.q, in.k, sel.block_size, sel.top_k, /*q_offset=*/0, blocks, counts);
  ws_ = workspace(ssa::select_workspace_bytes(p_), in.q);
  p_.kbar = ws_.data_ptr();
}

void SelectKernel::use_recorded(const Inputs& in, const RecordedSelection& recorded) {
  const ShapeSpec& s = in.shape;
  if (recorded.K != spec_.top_k || recorded.block_size != spec_.block_size)
    throw std::runtime_error(strf("%s: recorded at block %d k %lld, asked for %s", recorded.path.c_str(),
                                  recorded.block_size, (long long)recorded.K, spec_.label().c_str()));
  std::vector<int32_t> replayed = ssalab::replay_selection(recorded.blocks, recorded.groups, recorded.T, recorded.K,
                                                           recorded.block_size, kBatch, s.Hkv, s.T);
  Tensor host = torch::from_blob(replayed.data(), {kBatch, s.Hkv, s.T, recorded.K}, torch::kInt).clone();
  scratch_blocks_ = torch::empty_like(blocks);
  scratch_counts_ = torch::empty_like(counts);
  p_ = ssalab::select_params(in.q, in.k, spec_.block_size, spec_.top_k, /*q_offset=*/0, scratch_blocks_, scratch_counts_);
  p_.kbar = ws_.data_ptr();
  blocks.copy_(host.to(blocks.device()));
  counts.copy_(blocks.ge(0).sum(3).to(torch::kInt));
}

void SelectKernel::run() { ok(ssa::select_blocks(p_, stream())); }

RecordedSelection read_recorded_selection(const std::string& path, int block_size) {
  RecordedSelection r;
  r.path = path;
  r.block_size = block_size;
  std::vector<int64_t> shape;
  std::string descr;
  const std::vector<char> raw = ssalab::read_npy(path, &shape, &descr);
  if (descr != "<i4" || shape.size() != 3)
    throw std::runtime_error(path + ": expected int32 (groups, T, K), as ssalab analyze writes layer*_selected_blocks.npy");
  r.groups = shape[0], r.T = shape[1], r.K = shape[2];
  r.blocks.resize(raw.size() / sizeof(int32_t));
  std::memcpy(r.blocks.data(), raw.data(), raw.size());
  return r;
}

void check_selection(const Inputs& in, const SelectKernel& sel) {
  const ShapeSpec& s = in.shape;
  auto i64 = torch::TensorOptions().device(in.q.device()).dtype(torch::kLong);
  Tensor block_of_token = torch::arange(int64_t(s.T), i64).div(sel.spec().block_size, "floor");
  Tensor blocks = sel.blocks.to(torch::kLong);  // (B, Hkv, T, K)
  const bool own_block_first = blocks.select(3, 0).eq(block_of_token).all().item<bool>();
  const bool counts_match = blocks.ge(0).sum(3).eq(sel.counts.to(torch::kLong)).all().item<bool>();
  if (!own_block_first || !counts_match)
    throw CheckFailure(strf("shape %s %s: selection malformed (slot 0 = own block: %s, counts match: %s)", s.name,
                            sel.spec().label().c_str(), own_block_first ? "yes" : "no", counts_match ? "yes" : "no"));
}

}  // namespace ssabench
