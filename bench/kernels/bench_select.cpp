// Block selection (kernels/select.cuh): int32 (B, Hkv, T, K) blocks and counts
// for one shape and selection config, and the check that its output is well
// formed before anything is timed.  Its ranking is tested slot by slot against
// fp64 in tests/test_kernels.cu; the sparse forward check (bench_sparse.cpp)
// uses whatever it selected.
#include "bench/kernels/bench_kernels.h"

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

void SelectKernel::run() { ok(ssa::select_blocks(p_, stream())); }

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
