// The SSA dual stream forward in one pass over K/V: the full causal attention
// output and the sparse (block top-k) output for the same Q, K, V
// (docs/method.md "Training (SSA)": every layer computes both).
//
// Design: one CTA holds 64 query rows of one head (4 warps x 16 rows); key
// chunks of 64 (K and V) stream through a shared-memory cp.async ring.  Per
// chunk the scores S = Q K^T are computed once and feed two online softmaxes:
// the full stream's over every key up to the diagonal, and the sparse stream's
// over the keys of the row's selected blocks (a per-row bitmask built from the
// selection in shared memory, as in attn_stats).  Each stream has its own P V;
// the sparse one is skipped for a 16-key group that no row of the warp
// selected.  The sparse output equals sparse_fwd's (same selection semantics:
// slot 0 = own block, causal inside it).
//
// Experimental (kernels/experimental/README.md): correct and tested, but about
// 3x slower than cuDNN dense attention plus the sparse kernels, which the
// engine runs by default; built into ssalab_kernels_experimental only.
// Training only: whole sequences (Tq = Tk = T, q_offset 0).
#pragma once
#include "../api_types.cuh"

namespace ssa {

struct DualFwdParams {
  const void* q;  // (B, Hq, T, D) bf16/fp16, strides q_s
  const void* k;  // (B, Hkv, T, D), strides k_s
  const void* v;  // (B, Hkv, T, D), strides v_s
  void* o_full;     // out (B, Hq, T, D), strides of_s: causal full attention
  void* o_sparse;   // out (B, Hq, T, D), strides os_s: attention over the selected blocks
  float* lse_full;    // out (B, Hq, T) contiguous, natural log
  float* lse_sparse;  // out (B, Hq, T) contiguous, natural log
  const int32_t* blocks;  // (B, Hkv, T, K) contiguous selection (select_blocks' format)
  Strides4 q_s, k_s, v_s, of_s, os_s;
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // api_types.cuh; these kernels need Tq = Tk (T below), q_offset 0
  int block_size = 16, top_k = 16;
  float scale = 0.f;  // softmax scale; 0 means 1/sqrt(D)
  DType dtype = DType::bf16;
};

std::string dual_fwd_supported(const DualFwdParams& p);
std::string dual_fwd(const DualFwdParams& p, cudaStream_t stream);

}  // namespace ssa
