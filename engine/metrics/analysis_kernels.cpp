#include "engine/metrics/analysis_kernels.h"

namespace ssalab {
torch::ScalarType kernel_input_dtype(const torch::Tensor& q) {
  return q.scalar_type() == torch::kHalf ? torch::kHalf : torch::kBFloat16;
}
}  // namespace ssalab

#ifdef SSALAB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "engine/attention/kernel_params.h"
#include "engine/util/error.h"

namespace ssalab {

// q and k as the kernels read them, and the backend that runs them; `cuda`
// stays null when the kernels cannot take this call (not CUDA tensors, a
// batch, a shape or rule the backend refuses).
struct KernelInputs {
  AttentionBackend* cuda = nullptr;
  torch::Tensor q, k;
};
static KernelInputs kernel_inputs(const torch::Tensor& q_in, const torch::Tensor& k_in, const SparseSpec& spec,
                                  int64_t q_offset) {
  KernelInputs in;
  AttentionBackend* cuda = cuda_backend();
  if (!cuda || !q_in.is_cuda() || !k_in.is_cuda() || q_in.size(0) != 1) return in;
  const auto dt = kernel_input_dtype(q_in);
  in.q = q_in.detach().to(dt).contiguous(), in.k = k_in.detach().to(dt).contiguous();
  if (cuda->supports(in.q, in.k, spec, q_offset).empty()) in.cuda = cuda;
  return in;
}

bool analyze_layer_kernels(const torch::Tensor& q_in, const torch::Tensor& k_in, const SparseSpec& spec, int cell_size,
                           KernelLayerRows& out, int64_t q_offset) {
  const KernelInputs in = kernel_inputs(q_in, k_in, spec, q_offset);
  if (!in.cuda) return false;
  AttentionBackend* cuda = in.cuda;
  const torch::Tensor &q = in.q, &k = in.k;
  const int64_t H = q.size(1), Tq = q.size(2), Tk = k.size(2);
  const int64_t bs = spec.block_size, nb = (Tk + bs - 1) / bs, nrow = (Tq + cell_size - 1) / cell_size;

  ssa::StatsParams p = stats_params(q, k, torch::Tensor(), spec.block_size, spec.top_k, q_offset);
  p.map_row_pool = cell_size;
  p.map_mean_heads = false;
  // Ask whether the kernel takes this shape before any work: dummy non-null
  // map pointers make it check the map settings too.
  float dummy = 0.f;
  int32_t dummy_blocks = 0;
  p.map = p.map_sparse = p.map_dropped = &dummy;
  p.blocks = &dummy_blocks;
  if (!ssa::attn_stats_supported(p).empty()) return false;

  c10::cuda::CUDAGuard guard(q.device());
  torch::NoGradGuard no_grad;
  Selection sel = cuda->select(q, k, spec, q_offset);
  torch::Tensor blocks = sel.blocks.to(torch::kInt32).contiguous();
  auto fopt = q.options().dtype(torch::kFloat);
  torch::Tensor stats = torch::empty({H, Tq, int64_t(ssa::kStatCount)}, fopt);
  out.map_full = torch::empty({H, nrow, nb}, fopt);
  out.map_sparse = torch::empty({H, nrow, nb}, fopt);
  out.map_dropped = torch::empty({H, nrow, nb}, fopt);
  p = stats_params(q, k, blocks, spec.block_size, spec.top_k, q_offset, stats);
  p.map_row_pool = cell_size;
  p.map_mean_heads = false;
  p.map = out.map_full.data_ptr<float>();
  p.map_sparse = out.map_sparse.data_ptr<float>();
  p.map_dropped = out.map_dropped.data_ptr<float>();
  const std::string e = ssa::attn_stats(p, at::cuda::getCurrentCUDAStream().stream());
  if (!e.empty()) throw Error("analysis on the GPU: " + e);
  out.blocks = sel.blocks;
  out.sparsity = stats.select(-1, ssa::kStatSelected);
  out.entropy = stats.select(-1, ssa::kStatEntropy);
  out.sink_token = stats.select(-1, ssa::kStatSinkToken);
  out.sink_block = stats.select(-1, ssa::kStatSinkBlock);
  out.lse = stats.select(-1, ssa::kStatLse);
  return true;
}

bool selection_mass_kernels(const torch::Tensor& q_in, const torch::Tensor& k_in, const SparseSpec& spec,
                            const torch::Tensor& row_lse, KernelSelectionMass& out) {
  if (!row_lse.is_cuda()) return false;
  const KernelInputs in = kernel_inputs(q_in, k_in, spec, 0);
  if (!in.cuda) return false;
  const torch::Tensor &q = in.q, &k = in.k;
  c10::cuda::CUDAGuard guard(q.device());
  torch::NoGradGuard no_grad;
  out.blocks = in.cuda->select(q, k, spec).blocks;
  const torch::Tensor blocks = out.blocks.to(torch::kInt32).contiguous();
  const torch::Tensor lse = row_lse.to(torch::kFloat).contiguous();
  out.mass = torch::empty({q.size(1), q.size(2), int64_t(spec.top_k) + 1}, q.options().dtype(torch::kFloat));
  const ssa::BlockMassParams p = block_mass_params(q, k, blocks, lse, spec.block_size, 0, out.mass);
  const std::string e = ssa::block_mass(p, at::cuda::getCurrentCUDAStream().stream());
  if (!e.empty()) throw Error("selected-block mass on the GPU: " + e);
  return true;
}

torch::Tensor to_host_off_stream(const torch::Tensor& t) {
  if (!t.is_cuda()) return t;
  c10::cuda::CUDAGuard guard(t.device());
  c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool(false, t.device().index()));
  return t.to(torch::kCPU);
}

}  // namespace ssalab

#else  // !SSALAB_WITH_CUDA

namespace ssalab {
bool analyze_layer_kernels(const torch::Tensor&, const torch::Tensor&, const SparseSpec&, int, KernelLayerRows&,
                           int64_t) {
  return false;
}
bool selection_mass_kernels(const torch::Tensor&, const torch::Tensor&, const SparseSpec&, const torch::Tensor&,
                            KernelSelectionMass&) {
  return false;
}
torch::Tensor to_host_off_stream(const torch::Tensor& t) { return t.to(torch::kCPU); }
}  // namespace ssalab

#endif
