// The SSA dual stream backward: gradients of Q, K, V through both outputs of
// dual_fwd (full causal and sparse), each with its own upstream gradient; the
// two streams' contributions are summed into one dQ, dK, dV.
//
// Design (FlashAttention-2 style, two kernels that each recompute the scores
// once for both streams):
//  * prep: delta = rowsum(dO * O) per stream, and a global per-row bitmask of
//    the selected blocks;
//  * dQ: one CTA per 64 query rows of a head (as dual_fwd); per 64-key chunk,
//    P_full and P_sparse from the saved LSEs, dP = dO V^T per stream, and
//    dQ += (P_f (dP_f - delta_f) + P_s (dP_s - delta_s)) K;
//  * dK/dV: one CTA per 64 keys of a kv head, looping over the query heads of
//    the group and the query chunks at or after its keys: dV += P_f^T dO_f +
//    P_s^T dO_s and dK += dS^T Q.  Every head's sum happens inside one CTA: no
//    atomics, bitwise reproducible.
// The sparse stream's products are skipped for a 16 x 16 tile in which no
// query selected the key block.
//
// Experimental (kernels/experimental/README.md): correct and tested, but about
// 3x slower than cuDNN dense attention plus the sparse kernels, which the
// engine runs by default; built into ssalab_kernels_experimental only.
// Training only: whole sequences (Tq = Tk = T, q_offset 0).
#pragma once
#include "../api_types.cuh"

namespace ssa {

struct DualBwdParams {
  const void* q;  // (B, Hq, T, D) bf16/fp16, strides q_s
  const void* k;  // (B, Hkv, T, D), strides k_s
  const void* v;  // (B, Hkv, T, D), strides v_s
  const void* o_full;     // dual_fwd's outputs, (B, Hq, T, D), strides of_s / os_s
  const void* o_sparse;
  const void* do_full;    // upstream gradients of the two outputs, strides dof_s / dos_s
  const void* do_sparse;
  const float* lse_full;    // dual_fwd's (B, Hq, T) contiguous LSEs
  const float* lse_sparse;
  const int32_t* blocks;  // (B, Hkv, T, K) contiguous selection, as given to dual_fwd
  void* dq;  // out (B, Hq, T, D), strides dq_s
  void* dk;  // out (B, Hkv, T, D), strides dk_s
  void* dv;  // out (B, Hkv, T, D), strides dv_s
  void* workspace;  // dual_bwd_workspace_bytes(*this) bytes, 16-byte aligned
  Strides4 q_s, k_s, v_s, of_s, os_s, dof_s, dos_s, dq_s, dk_s, dv_s;
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // api_types.cuh; these kernels need Tq = Tk (T below), q_offset 0
  int block_size = 16, top_k = 16;
  float scale = 0.f;  // softmax scale; 0 means 1/sqrt(D)
  DType dtype = DType::bf16;
};

size_t dual_bwd_workspace_bytes(const DualBwdParams& p);
std::string dual_bwd_supported(const DualBwdParams& p);
std::string dual_bwd(const DualBwdParams& p, cudaStream_t stream);

}  // namespace ssa
