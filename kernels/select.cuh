// Block top-k selection (SSA.md "Sparse attention") and its transposed index.
//
// Why this shape: the ranking must match the fp32 reference, so scores need
// fp32 accuracy, yet there are T x nb x G of them.  The pooled keys (fp32) are
// split into three 16-bit terms hi + mid + lo; q is 16-bit already, so each
// product q*term is exact in the MMA's fp32 accumulator and three tensor-core
// MMAs give q.kbar to about fp32 rounding.  One warp owns one query token and
// all G query heads of its group (the MMA rows); 8 consecutive tokens per CTA
// share the kbar chunks (16 blocks) in shared memory.  Pass 1 gets each head's
// softmax max/sum over the visible complete blocks, pass 2 writes the
// group-summed probabilities of the past blocks into one shared-memory row per
// token (nb floats, never a T x T matrix), then K-1 rounds of warp argmax
// (ties -> lower block index) pick the slots.
//
// The transposed index (for each key block, the query tokens that selected it)
// feeds the atomic-free dK/dV kernel.  It is built with integer counts only, so
// its content and order are deterministic.
#pragma once
#include "api_types.cuh"

namespace ssa {

struct SelectParams {
  const void* q;  // (B, Hq, T, D) bf16/fp16, post-RoPE; last dim contiguous
  const void* k;  // (B, Hkv, T, D) same dtype; last dim contiguous
  int64_t q_stride_b, q_stride_h, q_stride_t;  // element strides of q
  int64_t k_stride_b, k_stride_h, k_stride_t;  // element strides of k
  void* kbar;        // workspace, select_workspace_bytes(): mean of each complete block's keys,
                     // as three 16-bit terms (hi, mid, lo) for fp32-accurate tensor-core scores
  int32_t* blocks;   // out (B, Hkv, T, K) contiguous: slot 0 = own block, then past blocks
                     //     by falling group score (ties: lower index), -1 = empty slot
  int32_t* counts;   // out (B, Hkv, T) contiguous: valid slots per token; may be null
  int B = 0, Hq = 0, Hkv = 0, T = 0, D = 0;
  int block_size = 16, top_k = 16;
  DType dtype = DType::bf16;
};

// Bytes of the kbar workspace.
size_t select_workspace_bytes(const SelectParams& p);
// "" when select_blocks can run these params, else the reason.
std::string select_supported(const SelectParams& p);
// Runs pooling + selection on `stream`; "" or an error message.
std::string select_blocks(const SelectParams& p, cudaStream_t stream);

struct BlockIndexParams {
  const int32_t* blocks;  // (B, Hkv, T, K) from select_blocks
  int B = 0, Hkv = 0, T = 0, K = 0, block_size = 16;
  // out (B, Hkv, nb+1), nb = ceil(T/bs): within the (b, hkv) segment, the tokens
  // that selected block j are tokens[offsets[j] .. offsets[j+1])
  int32_t* offsets;
  int32_t* tokens;  // out (B, Hkv, T*K): token ids (deterministic order)
  int32_t* work;    // workspace, block_index_workspace_bytes()
};
size_t block_index_workspace_bytes(const BlockIndexParams& p);
std::string block_index_supported(const BlockIndexParams& p);
std::string build_block_index(const BlockIndexParams& p, cudaStream_t stream);

}  // namespace ssa
