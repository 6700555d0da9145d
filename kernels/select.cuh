// Block top-k selection (docs/method.md "Sparse attention") and its transposed
// index.
//
// Why this shape: the ranking must match the fp32 reference, so scores need
// fp32 accuracy, yet there are Tq x nb x G of them.  The pooled keys (fp32) are
// split into two fp16 terms hi + lo (22 bits) and q converted to fp16, each
// block and each query head first scaled by a power of two into fp16's range;
// each product q*term is exact in the MMA's fp32 accumulator, so two
// tensor-core MMAs give q.kbar to about fp32 rounding (the selections of three
// bf16 terms, at two thirds of the MMAs: bench/selection_precision.cpp).  One warp owns one query token and
// all G query heads of its group (the MMA rows); consecutive tokens of one CTA
// (4 at d64, 8 at d128) share the kbar chunks (16 blocks at d64, 32 at d128) in
// shared memory.  Pass 1 gets each head's softmax max/sum over the visible
// complete blocks, pass 2 writes the group-summed probabilities of the past
// blocks into one shared-memory row per token (nb floats, never a Tq x Tk
// matrix), then K-1 rounds of warp argmax (ties -> lower block index) pick the
// slots.
//
// Two ranking rules (docs/method.md "Selection rules"): the exact top-k, and
// the released checkpoints' nsa-chunked rule (nsa_chunked, for K >= 16): once
// a row's own block is past the first K blocks, K/2 slots go to the best
// blocks of the completed K-block chunks and the rest (own block included) to
// the chunk holding it; the argmax rounds then take from each side only while
// it has slots left.
//
// Queries and keys follow the contract in api_types.cuh: query i sits at
// position q_offset + i of the Tk keys, so a chunk of queries against a KV
// cache selects exactly as the same rows of the whole sequence would.
//
// The transposed index (for each key block, the queries that selected it)
// feeds the atomic-free dK/dV kernel.  It is built with integer counts only, so
// its content and order are deterministic.
#pragma once
#include "api_types.cuh"

namespace ssa {

struct SelectParams {
  const void* q;  // (B, Hq, Tq, D) bf16/fp16, post-RoPE; last dim contiguous
  const void* k;  // (B, Hkv, Tk, D) same dtype; last dim contiguous
  Strides4 q_s, k_s;  // element strides of q and k
  void* kbar;        // workspace, select_workspace_bytes(): mean of each complete block's keys,
                     // as two fp16 terms (hi, lo) and a power-of-two scale per block
  int32_t* blocks;   // out (B, Hkv, Tq, K) contiguous: slot 0 = own block, then past blocks
                     //     by falling group score (ties: lower index), -1 = empty slot
  int32_t* counts;   // out (B, Hkv, Tq) contiguous: valid slots per query; may be null
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tq = 0, Tk = 0, q_offset = 0;  // queries, keys, position of query 0 (api_types.cuh)
  int block_size = 16, top_k = 16;
  bool nsa_chunked = false;  // the released kernel's chunked rule instead of the exact top-k
  bool bf16_pooled_keys = false;  // each block's fp32 mean rounded to bf16 (the released kernel's pooling)
  // k <= 32: keep the slots in registers while scoring (the same indices; chosen
  // anyway where a row of block scores would not fit in shared memory)
  bool register_slots = false;
  DType dtype = DType::bf16;
};

// Blocks per chunk of the nsa-chunked rule (K = 16 in the released models;
// for K > 16 the chunk is K blocks, as engine/attention/reference.cpp extends it).
constexpr int kNsaChunkBlocks = 16;

// Bytes of the kbar workspace.
size_t select_workspace_bytes(const SelectParams& p);
// "" when select_blocks can run these params, else the reason.
std::string select_supported(const SelectParams& p);
// Runs pooling + selection on `stream`; "" or an error message.
std::string select_blocks(const SelectParams& p, cudaStream_t stream);

struct BlockIndexParams {
  const int32_t* blocks;  // (B, Hkv, Tq, K) from select_blocks
  int B = 0, Hkv = 0, K = 0, block_size = 16;
  int Tq = 0, Tk = 0;  // query rows of the selection; keys (they set the blocks nb = ceil(Tk/bs))
  // out (B, Hkv, nb+1): within the (b, hkv) segment, the query rows that
  // selected block j are tokens[offsets[j] .. offsets[j+1])
  int32_t* offsets;
  int32_t* tokens;  // out (B, Hkv, Tq*K): query row indices 0 .. Tq-1 (deterministic order)
  int32_t* work;    // workspace, block_index_workspace_bytes()
};
size_t block_index_workspace_bytes(const BlockIndexParams& p);
std::string block_index_supported(const BlockIndexParams& p);
std::string build_block_index(const BlockIndexParams& p, cudaStream_t stream);

}  // namespace ssa
