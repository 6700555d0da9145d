// Sparse decoding: one new query per sequence against a KV cache, with block
// top-k selection from the cache's pooled block keys (engine/generate/kv_cache.h).
//
// The query is the last token, at position p = Tk - 1 (the contract of
// api_types.cuh with Tq = 1, q_offset = Tk - 1). Selection is the exact top-k
// rule: softmax of q . kbar / sqrt(D) per head over the complete blocks
// (j < Tk / bs), summed over the KV group's heads; the own block p / bs first,
// then the best K - 1 blocks before it by falling score, ties to the lower
// index, -1 where there are fewer. Attention then reads only those blocks.
// With nsa_chunked (K >= 16, the own block past the first K blocks) the K - 1
// slots are split as select.cuh does: the best K/2 of the completed K-block
// chunks and the best K - K/2 - 1 of the chunk holding the own block, merged
// in the same order; slots a side cannot fill stay -1.
//
// Three launches:
//   decode_scores: grid (ceil(nbc / 128), Hkv, B): the G heads' logits
//     against 128 pooled blocks per CTA on the tensor cores (the fp32 pooled
//     keys split into three 16-bit terms, so the products are fp32-exact; bf16
//     pooled keys take one),
//     kept in the workspace, and each CTA's per-head max and sum of exponentials;
//   decode_pick: the same grid: combines every CTA's partial sums into the
//     softmax, group-sums the probabilities of the past blocks and ranks
//     each CTA's 128 blocks (each warp sorts its 32, then binary searches
//     in the other warps' sorted keys), keeping its best K - 1;
//   decode_attend_mma: grid (Hkv, B): merges the CTAs' ranked lists (a pick
//     compares each list's head, kept as a 64-bit key) and attends over the
//     selected blocks' keys as one token list in 32-token chunks, a warp per
//     chunk, on the tensor cores (the group's heads the rows of the mmas,
//     S = Q K^T, O += P V); the warps' partial outputs are added in warp
//     order (deterministic, no atomics). SSA_DECODE_ATTEND_MMA=0 runs the
//     scalar decode_attend instead (grid (Hkv, B, split): a lane per key for
//     Q K^T, lanes over D for P V, a group's heads split over CTAs).
// Bytes read per (sequence, group): the pooled keys (nbc * D * 4, or 2 in bf16) and the K
// selected blocks of keys and values (2 * K * bs * D * 2), against dense
// decoding's 2 * Tk * D * 2.
#pragma once
#include "api_types.cuh"

namespace ssa {

struct DecodeParams {
  const void* q;             // (B, Hq, 1, D) bf16/fp16, strides q_s (t unused)
  const void* k;             // KV cache keys (B, Hkv, >= Tk, D), strides k_s
  const void* v;             // values, strides v_s
  const float* block_keys;   // (B, Hkv, >= Tk / bs, D) fp32: mean of each complete block of keys, strides kb_s
  // Or the pooled keys rounded to bf16 (the released kernel's pooling,
  // ../shared/SSA.md; a model's PooledKeys::Bf16), same shape and strides,
  // instead of block_keys: half the bytes, one MMA per product. bf16 queries only.
  const void* block_keys_bf16 = nullptr;
  void* o;                   // out (B, Hq, 1, D), strides o_s
  int32_t* blocks = nullptr; // out (B, Hkv, K) contiguous, optional: the selection
  float* workspace = nullptr;  // decode_workspace_bytes(params)
  Strides4 q_s, k_s, v_s, kb_s, o_s;
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int Tk = 0;                // keys in the cache; the query is at Tk - 1
  int block_size = 16, top_k = 16;
  bool nsa_chunked = false;  // the released kernel's chunked rule (select.cuh) instead of the exact top-k
  float scale = 0.f;         // 0: 1/sqrt(D)
  DType dtype = DType::bf16;
};

// The cache update of a step, in one launch: the T new tokens' keys and values
// (B, Hkv, T, D) stored at positions [length, length + T) of the cache, and
// the mean of each block they complete (fp32: the bs keys summed in token
// order, then divided by bs; rounded to bf16 for bf16 pooled keys) into the
// pooled keys. A pooled block reads its
// older keys from the cache and its new ones from k_new, so no thread waits
// for another's store.
struct AppendParams {
  const void* k_new = nullptr;  // (B, Hkv, T, D), strides kn_s
  const void* v_new = nullptr;  // strides vn_s
  void* k_cache = nullptr;      // (B, Hkv, capacity, D), strides kc_s
  void* v_cache = nullptr;      // strides vc_s
  void* block_keys = nullptr;   // (B, Hkv, capacity / bs, D) fp32 or bf16, strides kb_s
  bool block_keys_bf16 = false;
  Strides4 kn_s, vn_s, kc_s, vc_s, kb_s;
  int B = 0, Hkv = 0, D = 0, T = 0;
  int length = 0, capacity = 0, block_size = 16;
  DType dtype = DType::bf16;
};

size_t decode_workspace_bytes(const DecodeParams& p);
std::string decode_supported(const DecodeParams& p);
std::string decode_attention(const DecodeParams& p, cudaStream_t stream);
std::string append_supported(const AppendParams& p);
std::string append_to_cache(const AppendParams& p, cudaStream_t stream);

}  // namespace ssa
