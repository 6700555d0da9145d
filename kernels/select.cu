// Block top-k selection and the transposed index.  See select.cuh for why.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "select.cuh"
#include "common.cuh"
#include "wgmma.cuh"

namespace ssa {
namespace {

constexpr int kChunk = 256;  // tokens per chunk of the transposed-index build

// Query tokens (warps) per CTA.  They share each kbar chunk load, but at d64
// smaller CTAs won: more of them fit an SM and their barriers wait on fewer
// warps (H100, selection at 32K: 8 -> 4 warps took C from 4.64 to 4.38 ms; at
// d128 4 warps were slower, 3.28 -> 4.26 ms, and 16 warps were slower at both;
// with the fixed-trip chunk loads below, 8 warps still lost at d64: 3.52 vs 3.96 ms).
template <int D>
constexpr int sel_warps() { return D == 64 ? 4 : 8; }
constexpr int kSelStages = 2;  // kbar chunks in flight (4 measured slower: 7.3 vs 4.6 ms at 32K)
// 16-block MMA tiles per kbar chunk (one CTA barrier each).  Two halve the
// barriers per block scored; that won at d128 (H100, D: 3.04 -> 2.80 ms) but
// lost at d64 (C: 3.55 -> 4.14 ms), where more CTAs per SM matter more.
template <int D>
__host__ __device__ constexpr int sel_rows() { return D == 64 ? 16 : 32; }

// Where piece `chunk` (16 bytes) of row `row` of a kbar term tile sits, in
// 16-bit elements: rows of D with the chunk swizzled (swz) on the mma.sync
// path; on the wgmma path the 128-byte-swizzle layout of a K-major operand,
// which at d128 splits each row into two 64-element halves, each half of
// the tile a [sel_rows][64] swizzled tile of its own (at d64 the two agree).
template <int D, bool WG, int TR = sel_rows<D>()>
__device__ __forceinline__ int sel_tile_offset(int row, int chunk) {
  if constexpr (WG) return (chunk >> 3) * TR * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
  else return swz<D>(row, chunk);
}
// The first element of 16-block sub-tile `sub` of a term tile (rows within it
// then go through sel_tile_offset: the swizzle repeats every 8 rows).
template <int D, bool WG>
__device__ __forceinline__ int sel_sub_offset(int sub) { return sub * 16 * (WG ? 64 : D); }

// Complete blocks that any query of the call can see: those before the last
// query's position + 1 (keys past it are never scored).
__host__ __device__ inline int visible_blocks(const SelectParams& p) { return (p.q_offset + p.Tq) / p.block_size; }

// Scores run on the fp16 tensor cores at fp32 accuracy: the fp32 kbar is split
// into two fp16 terms (hi + lo: 22 bits) and the bf16 or fp16 q converted to
// fp16 (exact); a 16-bit q times a 16-bit term is exact in the fp32
// accumulator. Three bf16 terms gave the same selections (bench/
// selection_precision.cpp: fp16 x2 against bf16 x3, both against fp64) but
// cost three MMAs per product instead of two. fp16's range is narrow, so each
// pooled block and each query head is scaled by a power of two that brings
// its largest |x| into [2^14, 2^15) (exact; small values keep their bits down
// to 2^-24 of the largest) and the scores are scaled back.

// The exponent e that scales a row whose largest |x| is amax into [2^14, 2^15);
// 0 for an all-zero row (or inf / NaN ones, which then propagate as before).
__device__ __forceinline__ int fp16_exponent(float amax) {
  if (!(amax > 0.f) || isinf(amax)) return 0;
  int ex;
  frexpf(amax, &ex);  // amax = m 2^ex, m in [0.5, 1)
  return min(15 - ex, 126);  // 2^-e stays a normal float
}

// One warp per pooled block (b, hkv, j): its D means (the bs keys summed in
// token order in fp32, then divided by bs), scaled by 2^e and split into the
// fp16 terms hi (split[0 .. n)) and lo (split[n .. 2n)); 2^-e into the
// block's scale (per (b, hkv) rows of nbc rounded up to 4 floats, so every
// row starts 16-byte aligned for cp.async).
template <typename T, int D>
__global__ void pool_keys_kernel(SelectParams p, __half* split, float* scales) {
  constexpr int PER = D / 32;
  const int nbc = visible_blocks(p), nbc4 = (nbc + 3) & ~3;
  const int64_t nblocks = int64_t(p.B) * p.Hkv * nbc, n = nblocks * D;
  const int lane = threadIdx.x % 32;
  const T* k = static_cast<const T*>(p.k);
  for (int64_t blk = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; blk < nblocks;
       blk += int64_t(gridDim.x) * blockDim.x / 32) {
    const int j = int(blk % nbc);
    const int64_t bh = blk / nbc;
    const int h = int(bh % p.Hkv), b = int(bh / p.Hkv);
    const T* src = k + b * p.k_s.b + h * p.k_s.h + int64_t(j) * p.block_size * p.k_s.t;
    float x[PER];
    float amax = 0.f;
#pragma unroll
    for (int u = 0; u < PER; ++u) {
      float s = 0.f;
      for (int t = 0; t < p.block_size; ++t) s += TypeOf<T>::to_float(src[t * p.k_s.t + u * 32 + lane]);
      x[u] = s / float(p.block_size);
      if (p.bf16_pooled_keys) x[u] = __bfloat162float(__float2bfloat16_rn(x[u]));  // then exact in the hi term
      amax = fmaxf(amax, fabsf(x[u]));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    const int e = fp16_exponent(amax);
#pragma unroll
    for (int u = 0; u < PER; ++u) {
      const float xs = ldexpf(x[u], e);
      const __half hi = __float2half_rn(xs);
      split[blk * D + u * 32 + lane] = hi;
      split[n + blk * D + u * 32 + lane] = __float2half_rn(xs - __half2float(hi));
    }
    if (lane == 0) scales[bh * nbc4 + j] = ldexpf(1.f, -e);
  }
}

// S (16 heads x 16 blocks) of one row tile against the chunk's two kbar terms
// (each term's rows TR apart), before any scaling.
template <int D, bool WG = false, int TR = sel_rows<D>()>
__device__ __forceinline__ void chunk_scores(float (&s)[2][4], const uint32_t (&qa)[D / 16][4], const __half* tile,
                                             int lane) {
#pragma unroll
  for (int n = 0; n < 2; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int part = 1; part >= 0; --part)  // the small term first
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t b0, b1, b2, b3;
      ldsm_x4(b0, b1, b2, b3,
              smem_u32(tile + part * TR * D +
                       sel_tile_offset<D, WG, TR>((lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1))));
      mma16816<__half>(s[0], qa[ks], b0, b1);
      mma16816<__half>(s[1], qa[ks], b2, b3);
    }
}

#if SSA_HAVE_WGMMA
// The same S for the four warps (tokens) of a warpgroup at once: the tensor
// cores read the chunk's terms from shared memory once per 64 rows instead of
// every warp loading them with ldmatrix. A k-step's 16 columns lie in one
// 64-column half of the tile (sel_tile_offset), 32 bytes into its swizzle atom.
template <int D>
__device__ __forceinline__ void chunk_scores_wgmma(float (&s)[2][4], const uint32_t (&qa)[D / 16][4], const __half* tile) {
  wgmma_fence();
#pragma unroll
  for (int part = 1; part >= 0; --part)  // the small term first
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
      wgmma_m64n16k16_f16_rs(
          s, qa[ks],
          wgmma_desc_k_sw128(tile + part * sel_rows<D>() * D + (ks >> 2) * sel_rows<D>() * 64 + (ks & 3) * 16),
          part == 0 || ks > 0);
  wgmma_commit();
  wgmma_wait_all();
  wgmma_fence_operands(s);
}
#endif

// The kbar ring of a pass over nchunk chunks, load(ci, stage) copying chunk
// ci: the first kSelStages - 1 chunks start in flight, then each ring_next
// starts the chunk kSelStages - 1 ahead and waits, CTA-wide, for chunk ci.
template <class Load>
__device__ __forceinline__ void ring_start(Load& load, int nchunk) {
#pragma unroll
  for (int st = 0; st < kSelStages - 1; ++st) {
    if (st < nchunk) load(st, st);
    cp_async_commit();
  }
}
template <bool WG, class Load>
__device__ __forceinline__ void ring_next(Load& load, int ci, int nchunk) {
  if (ci + kSelStages - 1 < nchunk) load(ci + kSelStages - 1, (ci + kSelStages - 1) % kSelStages);
  cp_async_commit();
  cp_async_wait<kSelStages - 1>();
#if SSA_HAVE_WGMMA
  if constexpr (WG) fence_proxy_async_smem();  // the copies, then wgmma's reads (async proxy)
#endif
  __syncthreads();
}

// Ranking order of the slots: falling score, ties to the lower block index.
__device__ __forceinline__ bool ranks_before(float v2, int i2, float v, int i) { return v2 > v || (v2 == v && i2 < i); }

// A row's best past blocks, kept while pass 2 produces their group scores (for
// top_k <= 32): one slot per lane in ranking order, so no row of nb scores sits
// in shared memory (which capped CTAs per SM and the sequence length). One side
// uses lanes 0..30 (the K - 1 slots); the nsa-chunked rule's two sides use lanes
// 0..15 (the completed chunks, blocks below own_start) and 16..31 (the row's own
// chunk). A block enters its side only if it ranks before the side's last slot,
// which is rare once the list is full, so most 16-block tiles cost a compare.
struct RunningSlots {
  float v = -1.f;      // this lane's slot: score (-1: empty, below every score)
  int i = 0x7fffffff;  //   and block
  int side = 0, rank = 0, own_start = 0;
  int cap0 = 0, cap1 = 0;  // slots per side
  // each side's last slot: what a new block must rank before (scalars, not
  // arrays: an array indexed by a side would sit in local memory)
  float bar_v0 = -1.f, bar_v1 = -1.f;
  int bar_i0 = 0, bar_i1 = 0;

  __device__ void init(int lane, bool two_sides, int cap_before, int cap_own, int own_start_) {
    side = two_sides && lane >= 16;
    rank = lane - (side ? 16 : 0);
    own_start = own_start_;
    cap0 = cap_before, cap1 = cap_own;
    bar_v0 = cap0 > 0 ? -1.f : INFINITY;  // a side without slots takes nothing
    bar_i0 = cap0 > 0 ? 0x7fffffff : -1;
    bar_v1 = cap1 > 0 ? -1.f : INFINITY;
    bar_i1 = cap1 > 0 ? 0x7fffffff : -1;
  }
  __device__ bool wanted(float vn, int jn) const {
    return jn >= own_start ? ranks_before(vn, jn, bar_v1, bar_i1) : ranks_before(vn, jn, bar_v0, bar_i0);
  }
  // All 32 lanes, the same (vn, jn), which ranks before its side's last slot.
  __device__ void insert(float vn, int jn) {
    const int s = jn >= own_start ? 1 : 0;
    const bool mine = side == s && rank < (s ? cap1 : cap0);
    const int pos = __popc(__ballot_sync(0xffffffffu, mine && ranks_before(v, i, vn, jn)));
    const float up_v = __shfl_up_sync(0xffffffffu, v, 1);
    const int up_i = __shfl_up_sync(0xffffffffu, i, 1);
    if (mine && rank > pos) v = up_v, i = up_i;
    else if (mine && rank == pos) v = vn, i = jn;
    const int last = s ? 16 + cap1 - 1 : cap0 - 1;
    const float lv = __shfl_sync(0xffffffffu, v, last);
    const int li = __shfl_sync(0xffffffffu, i, last);
    if (s) bar_v1 = lv, bar_i1 = li;
    else bar_v0 = lv, bar_i0 = li;
  }
  // The four scores a quad-0 lane holds for blocks cj[k] (valid[k]): those that
  // enter, one at a time across the warp.
  __device__ void offer(const float (&cv)[4], const int (&cj)[4], unsigned valid, int lane) {
    unsigned bits = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if ((valid >> k & 1) && wanted(cv[k], cj[k])) bits |= 1u << k;
    for (unsigned who = __ballot_sync(0xffffffffu, bits != 0); who; who = __ballot_sync(0xffffffffu, bits != 0)) {
      const int src = __ffs(who) - 1, k = __ffs(bits) - 1;
      float vk = 0.f;
      int jk = 0;
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (u == k) vk = cv[u], jk = cj[u];
      vk = __shfl_sync(0xffffffffu, vk, src);
      jk = __shfl_sync(0xffffffffu, jk, src);
      insert(vk, jk);
      if (lane == src) bits &= bits - 1;
#pragma unroll
      for (int u = 0; u < 4; ++u)  // the bars rose: drop what no longer enters
        if ((bits >> u & 1) && !wanted(cv[u], cj[u])) bits &= ~(1u << u);
    }
  }
  // Slots 1.. of the output row: each side's slots merged in ranking order.
  __device__ void write(int32_t* out) const {
    const int cap_mine = side ? cap1 : cap0, cap_other = side ? cap0 : cap1;
    int at = rank;
    if (cap1 > 0) {  // two sides: count the other side's slots that rank first
      for (int r = 0; r < 16; ++r) {
        const int src = (side ? 0 : 16) + r;
        const float ov = __shfl_sync(0xffffffffu, v, src);
        const int oi = __shfl_sync(0xffffffffu, i, src);
        if (r < cap_other && ranks_before(ov, oi, v, i)) ++at;
      }
    }
    if (rank < cap_mine) out[1 + at] = i;
  }
};

// Where a CTA of W query rows puts this warp's row: row t, whether it exists
// (the last CTA's spare warps take the last row's values, tt), the row's own
// block bt and its visible complete blocks nvis, and the largest of both over
// the CTA's rows (the chunks every pass must load).
struct SelectRow {
  int t, tt, bt, nvis, nvis_max, bt_max;
  bool active;
};
template <int W>
__device__ __forceinline__ SelectRow select_row(const SelectParams& p, int warp) {
  SelectRow r;
  const int bs = p.block_size, t0 = blockIdx.x * W;
  r.t = t0 + warp;
  r.active = r.t < p.Tq;
  r.tt = r.active ? r.t : p.Tq - 1;
  const int pos = p.q_offset + r.tt;  // the row's position among the keys
  r.bt = pos / bs, r.nvis = (pos + 1) / bs;
  const int pos_last = p.q_offset + min(p.Tq - 1, t0 + W - 1);
  r.nvis_max = (pos_last + 1) / bs, r.bt_max = pos_last / bs;
  return r;
}

// The steps both kernels take per m16n8 fragment s of scores (rows: heads g
// and g + 8; columns: blocks j .. j + 1 of this lane, j = its first), shared
// so that both round alike.
// Each score times its block's scale ku (the row's scale goes into the
// exponent's FMA: y = s * kscale, and exp2(y * q_unscale - m)).
__device__ __forceinline__ void scale_by_blocks(float (&s)[4], float2 ku) {
#pragma unroll
  for (int e = 0; e < 4; ++e) s[e] *= e & 1 ? ku.y : ku.x;
}
// Pass 1 masks blocks at or past lim; pass 2's scores of such blocks are
// finite (zero-filled rows) and never kept.
__device__ __forceinline__ void mask_past(float (&s)[4], int j, int lim) {
#pragma unroll
  for (int e = 0; e < 4; ++e)
    if (j + (e & 1) >= lim) s[e] = -INFINITY;
}
// Pass 1 over a 16-block tile (fragments s0, s1) for head row r (0: g, 1:
// g + 8) of scale qu: this lane's running max m and sum l over its own
// columns, in log2 units; the quad's four are merged once, after the pass
// (log_normaliser). Merging per tile took two quad reductions (eight
// shuffles) on every tile's dependency chain. m starts at kNoScore, not -inf,
// so that a lane whose blocks so far are all past the row needs no test:
// exp2(-inf - kNoScore) = 0, exp2(kNoScore - max) = 0.
constexpr float kNoScore = -1e30f;
__device__ __forceinline__ void normaliser_step(const float (&s0)[4], const float (&s1)[4], int r, float qu, float& m,
                                                float& l) {
  // q_unscale > 0, and rounding is monotone: the max of y times qu is the max of y * qu
  const float mx = fmaxf(fmaxf(s0[2 * r], s0[2 * r + 1]), fmaxf(s1[2 * r], s1[2 * r + 1]));
  const float mn = fmaxf(m, mx * qu);
  float add = 0.f;
  add += fast_exp2(fmaf(s0[2 * r], qu, -mn)) + fast_exp2(fmaf(s0[2 * r + 1], qu, -mn));
  add += fast_exp2(fmaf(s1[2 * r], qu, -mn)) + fast_exp2(fmaf(s1[2 * r + 1], qu, -mn));
  l = fmaf(l, fast_exp2(m - mn), add);
  m = mn;
}
// After pass 1: the quad's four (m, l) of a head row merged into m + log2(l)
// (all lanes of the warp call it).
__device__ __forceinline__ float log_normaliser(float m, float l) {
  const float mq = quad_max(m);
  return mq + __log2f(quad_sum(l * fast_exp2(m - mq)));
}
// Pass 2: block j + e's probabilities under this lane's two heads, summed
// (m holds m + log2(l) by then).
__device__ __forceinline__ float head_pair_probability(const float (&s)[4], int e, const float (&qu)[2],
                                                       const float (&m)[2]) {
  return fast_exp2(fmaf(s[e], qu[0], -m[0])) + fast_exp2(fmaf(s[e + 2], qu[1], -m[1]));
}

// Query row tt's G heads of group hk as fp16 MMA fragments, each head scaled
// into fp16's range (qa[rt][ks]: [0], [2] head rt*16 + g, [1], [3] head
// rt*16 + g + 8; a quad holds a head's D; heads past G are zero), and per head
// the factor that takes its scores back and into log2 units
// (q_unscale = 2^-e / sqrt(D) * log2(e), for heads g and g + 8 of each row tile).
template <typename T, int D, int RT>
__device__ __forceinline__ void load_query_fp16(const SelectParams& p, int b, int hk, int tt, int g, int c,
                                                uint32_t (&qa)[RT][D / 16][4], float (&q_unscale)[RT][2]) {
  constexpr int NK = D / 16;
  const int G = p.Hq / p.Hkv;
  const float ys = float(1.0 / sqrt(double(D))) * kLog2e;
  const T* qb = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk) * G * p.q_s.h + tt * p.q_s.t;
#pragma unroll
  for (int rt = 0; rt < RT; ++rt) {
    const int r0 = rt * 16 + g, r1 = r0 + 8;
    float amax[2] = {0.f, 0.f};
#pragma unroll
    for (int ks = 0; ks < NK; ++ks) {
      const int d0 = ks * 16 + 2 * c;
#pragma unroll
      for (int f = 0; f < 4; ++f) {  // the raw 16-bit pairs first, then converted in place
        const int r = f & 1 ? r1 : r0, d = d0 + (f & 2 ? 8 : 0);
        qa[rt][ks][f] = r < G ? *reinterpret_cast<const uint32_t*>(qb + r * p.q_s.h + d) : 0u;
        const float2 x = TypeOf<T>::unpack(qa[rt][ks][f]);
        amax[f & 1] = fmaxf(amax[f & 1], fmaxf(fabsf(x.x), fabsf(x.y)));
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int e = fp16_exponent(quad_max(amax[r]));
      q_unscale[rt][r] = ldexpf(ys, -e);
#pragma unroll
      for (int ks = 0; ks < NK; ++ks)
#pragma unroll
        for (int f = r; f < 4; f += 2) {
          const float2 x = TypeOf<T>::unpack(qa[rt][ks][f]);
          qa[rt][ks][f] = TypeOf<__half>::pack(ldexpf(x.x, e), ldexpf(x.y, e));
        }
    }
  }
}

// How a row's K - 1 past slots split between the two sides of the nsa-chunked
// rule (select.cuh), once the row's own block bt is past the first chunk of K
// blocks: the completed chunks [0, own_chunk_start) fill K/2 slots and the
// row's own chunk [own_chunk_start, bt) the other K/2 - 1 (or fewer, when a
// side has fewer blocks). Otherwise one side, [0, bt), fills K - 1 slots.
struct SlotPlan {
  bool chunked;
  int own_chunk_start, cap_before, cap_own, rounds;
};
__device__ __forceinline__ SlotPlan slot_plan(const SelectParams& p, int bt) {
  const int K = p.top_k;
  SlotPlan s;
  s.chunked = p.nsa_chunked && K >= kNsaChunkBlocks && bt >= K;
  s.own_chunk_start = s.chunked ? bt / K * K : bt;
  s.cap_before = s.chunked ? min(K / 2, s.own_chunk_start) : min(K - 1, bt);
  s.cap_own = s.chunked ? min(K - K / 2 - 1, bt - s.own_chunk_start) : 0;
  s.rounds = s.cap_before + s.cap_own;
  return s;
}

// A lane's kPickDepth best entries of one side of its column of a row (blocks
// j = lane mod 32 in [lo, hi)), best first; -1 where there are none. The
// column is scanned again only once all of them have been picked, so a pick
// costs its lane a shift instead of a rescan of up to nb / 32 entries (the
// rescans were most of the picking's instructions at 32K, bs16).
constexpr int kPickDepth = 4;
struct ColumnBest {
  float v[kPickDepth];
  int i[kPickDepth];
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int d = 0; d < kPickDepth; ++d) v[d] = -1.f, i[d] = 0x7fffffff;
  }
  // picked entries are -2 in buf, so they never come back
  __device__ __forceinline__ void scan(const float* buf, int lo, int hi, int lane) {
    clear();
    for (int j = lo + ((lane - lo) & 31); j < hi; j += 32) {
      float x = buf[j];
      if (!ranks_before(x, j, v[kPickDepth - 1], i[kPickDepth - 1])) continue;
      int xj = j;
#pragma unroll
      for (int d = 0; d < kPickDepth; ++d)
        if (ranks_before(x, xj, v[d], i[d])) {
          const float tv = v[d];
          const int ti = i[d];
          v[d] = x, i[d] = xj, x = tv, xj = ti;
        }
    }
  }
  // the best entry picked: drop it, and scan [lo, hi) again once none is left
  __device__ __forceinline__ void take(const float* buf, int lo, int hi, int lane) {
#pragma unroll
    for (int d = 0; d + 1 < kPickDepth; ++d) v[d] = v[d + 1], i[d] = i[d + 1];
    v[kPickDepth - 1] = -1.f, i[kPickDepth - 1] = 0x7fffffff;
    if (v[0] < 0.f) scan(buf, lo, hi, lane);
  }
};

// The row's slots 1.. from its group scores buf[0 .. bt) (one warp): rounds of
// warp argmax over both sides at once, each side only while it has slots
// left, so the slots come out in one order: falling score, ties to the lower
// block index. Each lane caches its best entries of each side (ColumnBest).
// Overwrites buf.
__device__ __forceinline__ void pick_from_row(float* buf, int32_t* out, const SlotPlan& plan, int bt, int lane) {
  int quota_before = plan.cap_before, quota_own = plan.cap_own;
  ColumnBest before, own;
  before.scan(buf, 0, plan.own_chunk_start, lane);
  if (plan.chunked) own.scan(buf, plan.own_chunk_start, bt, lane);
  else own.clear();
  for (int r = 0; r < plan.rounds; ++r) {
    float v = -1.f;
    int i = 0x7fffffff;
    if (quota_before > 0 && ranks_before(before.v[0], before.i[0], v, i)) v = before.v[0], i = before.i[0];
    if (quota_own > 0 && ranks_before(own.v[0], own.i[0], v, i)) v = own.v[0], i = own.i[0];
    for (int off = 16; off > 0; off >>= 1) {
      float v2 = __shfl_xor_sync(0xffffffffu, v, off);
      int i2 = __shfl_xor_sync(0xffffffffu, i, off);
      if (ranks_before(v2, i2, v, i)) { v = v2; i = i2; }
    }
    if (lane == 0) out[1 + r] = i;
    const bool own_side = i >= plan.own_chunk_start;
    if (own_side) --quota_own;
    else --quota_before;
    if ((i & 31) == lane) {  // the winner's lane drops it, and rescans that side only once its cache is empty
      buf[i] = -2.f;
      // (not one reference to either side: that would put both in local memory)
      if (own_side) own.take(buf, plan.own_chunk_start, bt, lane);
      else before.take(buf, 0, plan.own_chunk_start, lane);
    }
  }
}

// Slot 0 (the own block), the empty slots after the picks, and the count.
__device__ __forceinline__ void finish_row(const SelectParams& p, int32_t* out, int64_t row, int bt, int rounds,
                                           int lane) {
  if (lane == 0) out[0] = bt;
  for (int s2 = 1 + rounds + lane; s2 < p.top_k; s2 += 32) out[s2] = -1;
  if (p.counts && lane == 0) p.counts[row] = 1 + rounds;
}

// One warp per query row i (all G <= 16*RT heads of its group), at position
// q_offset + i; W rows per CTA share the kbar chunks (kSelRows blocks x 2
// terms and their scales) in shared memory. Pass 2 writes the row's group
// scores to shared memory and K - 1 argmax rounds pick the slots; Stream keeps
// the slots in RunningSlots while pass 2 runs instead (uses_register_slots).
// WG (sm_90a; one warpgroup per CTA at d64, two at d128): the scores by
// wgmma; every warp then takes part in each tile any row of the CTA needs.
template <typename T, int D, int RT, bool Stream, bool WG = false, int W = sel_warps<D>()>
__global__ void __launch_bounds__(W * 32)
    select_kernel(SelectParams p, const __half* split, const float* scales, int buf_stride) {
  static_assert(!WG || W % 4 == 0, "the wgmma path takes whole warpgroups");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16, CH = D / 8, kSelRows = sel_rows<D>(), kSelSub = kSelRows / 16;
  // WG: the kbar ring starts on a 1024-byte boundary (the launcher adds the slack)
  __half* sKb = reinterpret_cast<__half*>(
      smem_raw + (WG ? (kSwizzle128Align - smem_u32(smem_raw) % kSwizzle128Align) % kSwizzle128Align : 0));  // [kSelStages][2 terms][kSelRows][D]
  float* sScale = reinterpret_cast<float*>(sKb + kSelStages * 2 * kSelRows * D);  // [kSelStages][kSelRows]
  float* bufs = sScale + kSelStages * kSelRows;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int b = blockIdx.z, hk = blockIdx.y;
  const int G = p.Hq / p.Hkv, nbc = visible_blocks(p);
  const auto [t, tt, bt, nvis, nvis_max, bt_max, active] = select_row<W>(p, warp);
  float* buf = bufs + warp * buf_stride;

  uint32_t qa[RT][NK][4];
  float q_unscale[RT][2];
  load_query_fp16<T, D, RT>(p, b, hk, tt, g, c, qa, q_unscale);
  const int64_t nsplit = int64_t(p.B) * p.Hkv * nbc * D;
  const __half* kb = split + (int64_t(b) * p.Hkv + hk) * nbc * D;
  const float* kscale = scales + (int64_t(b) * p.Hkv + hk) * ((nbc + 3) & ~3);
  // each thread copies the same NL 16-byte pieces of every chunk: a fixed trip
  // count with the offsets computed once (a loop bounded by threadIdx cost more
  // instructions per chunk than the chunk's scores)
  constexpr int kPieces = 2 * kSelRows * CH, NL = (kPieces + W * 32 - 1) / (W * 32);
  int ld_row[NL], ld_smem[NL];
  int64_t ld_src[NL];
#pragma unroll
  for (int u = 0; u < NL; ++u) {
    const int i = min(tid + u * W * 32, kPieces - 1), part = i / (kSelRows * CH), ch = i % CH;
    ld_row[u] = (i / CH) % kSelRows;
    ld_smem[u] = part * kSelRows * D + sel_tile_offset<D, WG>(ld_row[u], ch);
    ld_src[u] = part * nsplit + ch * 8;
  }
  auto load = [&](int ci, int st) {
#pragma unroll
    for (int u = 0; u < NL; ++u) {
      if (kPieces % (W * 32) != 0 && tid + u * W * 32 >= kPieces) break;
      const int j = ci * kSelRows + ld_row[u];
      const bool ok = j < nbc;
      cp_async16(sKb + st * 2 * kSelRows * D + ld_smem[u], kb + ld_src[u] + int64_t(ok ? j : 0) * D, ok);
    }
    if (tid < kSelRows / 4) {  // the chunk's block scales, 4 per piece (rows padded to 4)
      const int j = ci * kSelRows + tid * 4;
      const bool ok = j < nbc;
      cp_async16(sScale + st * kSelRows + tid * 4, kscale + (ok ? j : 0), ok);
    }
  };
  const SlotPlan plan = slot_plan(p, bt);
  RunningSlots slots;
  if constexpr (Stream) slots.init(lane, plan.chunked, plan.cap_before, plan.cap_own, plan.own_chunk_start);

  float m[RT][2], l[RT][2];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt) m[rt][0] = m[rt][1] = kNoScore, l[rt][0] = l[rt][1] = 0.f;

  for (int pass = 0; pass < 2; ++pass) {
    const int nchunk = ((pass == 0 ? nvis_max : bt_max) + kSelRows - 1) / kSelRows;
    const int lim = pass == 0 ? nvis : bt;  // this token's blocks for the pass
    ring_start(load, nchunk);
    for (int ci = 0; ci < nchunk; ++ci) {
      ring_next<WG>(load, ci, nchunk);
#pragma unroll
      for (int sub = 0; sub < kSelSub; ++sub) {
        const int j0 = ci * kSelRows + sub * 16;  // first block of this 16-block tile
        const bool mine = active && j0 < lim;
        if (WG ? j0 < (pass == 0 ? nvis_max : bt_max) : mine) {
          const __half* tile = sKb + (ci % kSelStages) * 2 * kSelRows * D + sel_sub_offset<D, WG>(sub);
          // the scales of this lane's four blocks: j0 + n * 8 + 2c + {0, 1}
          float2 kun[2];
#pragma unroll
          for (int n = 0; n < 2; ++n)
            kun[n] = *reinterpret_cast<const float2*>(sScale + (ci % kSelStages) * kSelRows + sub * 16 + n * 8 + 2 * c);
          float colsum[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
#pragma unroll
          for (int rt = 0; rt < RT; ++rt) {
            float s[2][4];
#if SSA_HAVE_WGMMA
            if constexpr (WG) chunk_scores_wgmma<D>(s, qa[rt], tile);
            else
#endif
              chunk_scores<D, WG>(s, qa[rt], tile, lane);
            if (!mine) continue;  // (WG) a tile only other rows of the CTA need
            // pass 2's 1/l is taken into m as m + log2(l)
#pragma unroll
            for (int n = 0; n < 2; ++n) scale_by_blocks(s[n], kun[n]);
            if (pass == 0) {
              if (j0 + 16 > lim) {
#pragma unroll
                for (int n = 0; n < 2; ++n) mask_past(s[n], j0 + n * 8 + 2 * c, lim);
              }
#pragma unroll
              for (int r = 0; r < 2; ++r) normaliser_step(s[0], s[1], r, q_unscale[rt][r], m[rt][r], l[rt][r]);
            } else {
#pragma unroll
              for (int n = 0; n < 2; ++n)
#pragma unroll
                for (int e = 0; e < 2; ++e) colsum[n][e] += head_pair_probability(s[n], e, q_unscale[rt], m[rt]);
            }
          }
          if (pass == 1 && mine) {
            float cv[4];  // this lane's four group scores (the same in every quad after the sums)
            int cj[4];
            unsigned valid = 0;
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                float v = colsum[n][e];
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                const int j = j0 + n * 8 + 2 * c + e;
                if constexpr (Stream) {
                  cv[n * 2 + e] = v, cj[n * 2 + e] = j;
                  if (g == 0 && j < lim) valid |= 1u << (n * 2 + e);
                } else if (g == 0 && j < lim) {
                  buf[j] = v;
                }
              }
            if constexpr (Stream) slots.offer(cv, cj, valid, lane);
          }
        }
      }
      __syncthreads();
    }
    if (pass == 0) {
#pragma unroll
      for (int rt = 0; rt < RT; ++rt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          // m + log2(l); padded heads +inf, so they add exp2(-inf) = 0
          const float lse = log_normaliser(m[rt][r], l[rt][r]);
          m[rt][r] = rt * 16 + g + 8 * r < G ? lse : INFINITY;
        }
    }
  }
  if (!active) return;
  const int64_t row = (int64_t(b) * p.Hkv + hk) * p.Tq + t;
  int32_t* out = p.blocks + row * p.top_k;
  if constexpr (Stream) {
    slots.write(out);
  } else {
    __syncwarp();
    pick_from_row(buf, out, plan, bt, lane);
  }
  finish_row(p, out, row, bt, plan.rounds, lane);
}

// ---------------------------------------------------------------- wide tiles
// Blocks per kbar chunk of the wide kernel: one m64n64k16 wgmma per k-step
// and term scores a warpgroup's four tokens x 16 heads against 64 blocks, so
// a CTA waits on a wgmma and a barrier once per 64 blocks instead of once per
// 16 (or 32), and each lane works through 32 scores at a time.
constexpr int kWideRows = 64;

// S (16 heads x 64 blocks) of this warp's row against a wide chunk's two kbar
// terms (each term's rows kWideRows apart), before any scaling: s[j] is the
// m16n8 C fragment of blocks 8 j .. 8 j + 7. Other architectures take four
// 16-block mma.sync tiles.
template <int D>
__device__ __forceinline__ void wide_scores(float (&s)[8][4], const uint32_t (&qa)[D / 16][4], const __half* tile,
                                            int lane) {
#if SSA_HAVE_WGMMA
  wgmma_fence();
#pragma unroll
  for (int part = 1; part >= 0; --part)  // the small term first
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
      wgmma_m64n64k16_rs<__half>(
          s, qa[ks], wgmma_desc_k_sw128(tile + part * kWideRows * D + (ks >> 2) * kWideRows * 64 + (ks & 3) * 16),
          part == 0 || ks > 0);
  wgmma_commit();
  wgmma_wait_all();
  wgmma_fence_operands(s);
#else
#pragma unroll
  for (int sub = 0; sub < kWideRows / 16; ++sub) {
    float t[2][4];
    chunk_scores<D, true, kWideRows>(t, qa, tile + sel_sub_offset<D, true>(sub), lane);
#pragma unroll
    for (int e = 0; e < 4; ++e) s[2 * sub][e] = t[0][e], s[2 * sub + 1][e] = t[1][e];
  }
#endif
}

// The group sums of a wide tile's 16 column values v[2 j + e] (block
// 8 j + 2 c + e) over the eight lanes that share column c (lanes c, c + 4, ..,
// c + 28): three exchanges, each sending half of what is left, after which
// lane (g, c) holds the whole sums of blocks 8 j + 2 c and + 1 with j the
// bit reverse of g, returned in *block_group. 14 shuffles where a butterfly
// per value takes 48; the exchanges go xor 4, 8, 16, as select_kernel's
// butterfly, so each sum is the same tree of additions (bit for bit).
__device__ __forceinline__ float2 wide_group_sums(const float (&v)[16], int g, int* block_group) {
  float h[8], q[4], r[2];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const bool up = g & 1;
    h[i] = (up ? v[8 + i] : v[i]) + __shfl_xor_sync(0xffffffffu, up ? v[i] : v[8 + i], 4);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool up = g & 2;
    q[i] = (up ? h[4 + i] : h[i]) + __shfl_xor_sync(0xffffffffu, up ? h[i] : h[4 + i], 8);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const bool up = g & 4;
    r[i] = (up ? q[2 + i] : q[i]) + __shfl_xor_sync(0xffffffffu, up ? q[i] : q[2 + i], 16);
  }
  *block_group = (g & 1) * 4 + (g & 2) + (g >> 2 & 1);
  return make_float2(r[0], r[1]);
}

// select_kernel's shared-memory-row path for groups of at most 16 heads, on
// chunks of kWideRows blocks (see kWideRows): the same two passes and picks.
// A row's sums run over the same blocks in an order fixed by the block
// indices alone, so a chunk of queries still selects bit for bit as the same
// rows of the whole call.
template <typename T, int D, int W = sel_warps<D>()>
__global__ void __launch_bounds__(W * 32)
    select_wide_kernel(SelectParams p, const __half* split, const float* scales, int buf_stride) {
  static_assert(W % 4 == 0, "the wgmma path takes whole warpgroups");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16, CH = D / 8, TR = kWideRows;
  __half* sKb = reinterpret_cast<__half*>(
      smem_raw + (kSwizzle128Align - smem_u32(smem_raw) % kSwizzle128Align) % kSwizzle128Align);  // [kSelStages][2 terms][TR][D]
  float* sScale = reinterpret_cast<float*>(sKb + kSelStages * 2 * TR * D);  // [kSelStages][TR]
  float* bufs = sScale + kSelStages * TR;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int b = blockIdx.z, hk = blockIdx.y;
  const int G = p.Hq / p.Hkv, nbc = visible_blocks(p);
  const auto [t, tt, bt, nvis, nvis_max, bt_max, active] = select_row<W>(p, warp);
  float* buf = bufs + warp * buf_stride;

  uint32_t qa[1][NK][4];
  float q_unscale[1][2];
  load_query_fp16<T, D, 1>(p, b, hk, tt, g, c, qa, q_unscale);
  const int64_t nsplit = int64_t(p.B) * p.Hkv * nbc * D;
  const __half* kb = split + (int64_t(b) * p.Hkv + hk) * nbc * D;
  const float* kscale = scales + (int64_t(b) * p.Hkv + hk) * ((nbc + 3) & ~3);
  // each thread copies NL 16-byte pieces of every chunk (a whole number: W * 32
  // divides 2 * TR * CH), their places worked out with shifts
  constexpr int kPieces = 2 * TR * CH, NL = kPieces / (W * 32);
  static_assert(kPieces % (W * 32) == 0, "pieces per thread");
  auto load = [&](int ci, int st) {
#pragma unroll
    for (int u = 0; u < NL; ++u) {
      const int i = tid + u * W * 32, part = i / (TR * CH), row = (i / CH) % TR, ch = i % CH;
      const int j = ci * TR + row;
      const bool ok = j < nbc;
      cp_async16(sKb + st * 2 * TR * D + part * TR * D + sel_tile_offset<D, true, TR>(row, ch),
                 kb + part * nsplit + int64_t(ok ? j : 0) * D + ch * 8, ok);
    }
    if (tid < TR / 4) {  // the chunk's block scales, 4 per piece (rows padded to 4)
      const int j = ci * TR + tid * 4;
      const bool ok = j < nbc;
      cp_async16(sScale + st * TR + tid * 4, kscale + (ok ? j : 0), ok);
    }
  };
  const SlotPlan plan = slot_plan(p, bt);

  float m[2] = {kNoScore, kNoScore}, l[2] = {0.f, 0.f};
  for (int pass = 0; pass < 2; ++pass) {
    const int nchunk = ((pass == 0 ? nvis_max : bt_max) + TR - 1) / TR;
    const int lim = pass == 0 ? nvis : bt;  // this token's blocks for the pass
    ring_start(load, nchunk);
    for (int ci = 0; ci < nchunk; ++ci) {
      ring_next<true>(load, ci, nchunk);
      const int j0 = ci * TR;
      const bool mine = active && j0 < lim;
      // every chunk is needed by some row of the CTA, so the warpgroup's
      // wgmma always runs; mma.sync only for the warp's own rows
      if (SSA_HAVE_WGMMA || mine) {
        const int st = ci % kSelStages;
        float s[8][4];
        wide_scores<D>(s, qa[0], sKb + st * 2 * TR * D, lane);
        if (mine) {
#pragma unroll
          for (int j = 0; j < 8; ++j)
            scale_by_blocks(s[j], *reinterpret_cast<const float2*>(sScale + st * TR + j * 8 + 2 * c));
          if (pass == 0) {
            if (j0 + TR > lim) {
#pragma unroll
              for (int j = 0; j < 8; ++j) mask_past(s[j], j0 + j * 8 + 2 * c, lim);
            }
            // 16 blocks at a time, as select_kernel does, so that m and l take
            // the same roundings (a 16-block tile wholly past the row leaves
            // them as they were: its max is -inf and its terms 0)
#pragma unroll
            for (int sub = 0; sub < TR / 16; ++sub)
#pragma unroll
              for (int r = 0; r < 2; ++r) normaliser_step(s[2 * sub], s[2 * sub + 1], r, q_unscale[0][r], m[r], l[r]);
          } else {
            float v[16];
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
              for (int e = 0; e < 2; ++e) v[2 * j + e] = head_pair_probability(s[j], e, q_unscale[0], m);
            int jg;
            const float2 sum = wide_group_sums(v, g, &jg);
            const int j = j0 + jg * 8 + 2 * c;  // blocks past the row (finite scores of zero-filled rows) are not kept
            if (j + 1 < lim) *reinterpret_cast<float2*>(buf + j) = sum;
            else if (j < lim) buf[j] = sum.x;
          }
        }
      }
      __syncthreads();
    }
    if (pass == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {  // m + log2(l); padded heads +inf, so they add exp2(-inf) = 0
        const float lse = log_normaliser(m[r], l[r]);
        m[r] = g + 8 * r < G ? lse : INFINITY;
      }
    }
  }
  if (!active) return;
  const int64_t row = (int64_t(b) * p.Hkv + hk) * p.Tq + t;
  int32_t* out = p.blocks + row * p.top_k;
  __syncwarp();
  pick_from_row(buf, out, plan, bt, lane);
  finish_row(p, out, row, bt, plan.rounds, lane);
}

int select_warps(const SelectParams& p) { return p.D == 64 ? sel_warps<64>() : sel_warps<128>(); }
// On Hopper the scores come from wgmma: at d64 a CTA's four tokens x 16 heads
// are one warpgroup's m64n16k16 rows against the kbar tile (9% faster than
// mma.sync at C on an H100, bench/results/h100-2026-12-06-select-wgmma-ab.txt);
// at d128 two warpgroups, the tile stored as two 128-byte-swizzled 64-column
// halves (D 2.34 -> 1.99 ms, ...-select-wgmma-d128-ab.txt). Builds for other
// architectures compile the same kernel to mma.sync. SSA_SELECT_WGMMA=0 keeps
// mma.sync on Hopper too, so that its path stays tested and timed there.
bool select_uses_wgmma() {
  static const bool on = [] { const char* e = std::getenv("SSA_SELECT_WGMMA"); return !e || std::atoi(e) != 0; }();
  return on;
}
// The wide kernel (kWideRows blocks a chunk, one m64n64k16 wgmma per k-step
// and term) for groups of at most 16 heads with the scores in shared-memory
// rows, where wgmma is on. Chosen by shape from an H100 run (2026-12-07,
// bench/results/h100-2026-12-07-select-wide-ab.txt), 8 warps against
// select_kernel: at d64 with 256 or more visible blocks it is faster (C bs16
// 2.87 -> 2.01 ms, C bs64 0.90 -> 0.78, A bs16 0.140 -> 0.116, B bs16
// 0.250 -> 0.217), with fewer it is not (A bs64 0.075 -> 0.077, B bs64
// 0.125 -> 0.134: rows of 128 blocks fill two 64-block chunks half masked);
// at d128 it gains nothing at bs16 (D 2.03 -> 2.01) and loses at bs64
// (0.68 -> 0.78), its 181+ registers leaving one CTA of 8 warps per SM.
// Chosen on Hopper only: elsewhere it compiles to mma.sync, never timed.
// SSA_SELECT_WIDE=0 / =1 forces it off / on (wherever it can run), so that
// both kernels stay tested and timed on every shape.
bool uses_wide_kernel_by_shape(const SelectParams& p) {
  static const int forced = [] { const char* e = std::getenv("SSA_SELECT_WIDE"); return e ? std::atoi(e) : -1; }();
  static const bool hopper = current_device_attribute(cudaDevAttrComputeCapabilityMajor, 0) == 9;
  if (!select_uses_wgmma() || forced == 0) return false;
  return forced > 0 || (hopper && p.D == 64 && visible_blocks(p) >= 256);
}
// Warps (tokens) per CTA of the wide kernel: 8, two warpgroups sharing each
// chunk's kbar stages (C bs16 2.39 ms at 4 warps against 2.01 at 8, D 1.95
// against 2.01: within run-to-run noise). SSA_SELECT_WIDE_WARPS=4 runs the
// 4-warp build, kept so that both stay tested.
int wide_warps() {
  static const int forced = [] { const char* e = std::getenv("SSA_SELECT_WIDE_WARPS"); return e ? std::atoi(e) : 0; }();
  return forced == 4 ? 4 : 8;
}
int select_row_stride(const SelectParams& p) { return (visible_blocks(p) + 4 + 3) & ~3; }
// The kbar stages (after 1024 bytes of alignment slack on the wgmma path), and
// each warp's row of block scores unless the slots are in registers.
size_t select_smem(const SelectParams& p, bool register_slots) {
  const int rows = p.D == 64 ? sel_rows<64>() : sel_rows<128>();
  return (select_uses_wgmma() ? kSwizzle128Align : 0) + size_t(kSelStages) * rows * (2 * p.D * sizeof(__half) + sizeof(float)) +
         (register_slots ? 0 : size_t(select_warps(p)) * select_row_stride(p) * sizeof(float));
}
// The wide kernel's kbar stages (after the alignment slack) and rows.
size_t select_wide_smem(const SelectParams& p) {
  return kSwizzle128Align + size_t(kSelStages) * kWideRows * (2 * p.D * sizeof(__half) + sizeof(float)) +
         size_t(wide_warps()) * select_row_stride(p) * sizeof(float);
}
constexpr size_t kSelMaxSmem = 220 * 1024;
// The slots in registers (RunningSlots, one per lane, so k <= 32) where asked
// for, or where the rows of scores would not fit in shared memory. Otherwise
// the shared-memory row: measured faster (C bs16 3.14 against 3.68 ms, H200,
// 2026-12-06), since a block offered to full slots costs a compare per lane
// and one that enters a warp-wide insert, where the row costs one store.
bool uses_register_slots(const SelectParams& p) {
  return p.top_k <= 32 && (p.register_slots || select_smem(p, false) > kSelMaxSmem);
}
bool uses_wide_kernel(const SelectParams& p) {
  return uses_wide_kernel_by_shape(p) && p.Hq / p.Hkv <= 16 && !uses_register_slots(p) && select_wide_smem(p) <= kSelMaxSmem;
}

// ---------------------------------------------------------------- transposed index
__global__ void index_count_kernel(BlockIndexParams p, int nb, int nchunks) {
  int64_t n = int64_t(p.B) * p.Hkv * p.Tq * p.K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int j = p.blocks[i];
    if (j < 0) continue;
    int64_t r = i / p.K;  // (bh, t)
    int t = int(r % p.Tq);
    int64_t bh = r / p.Tq;
    atomicAdd(&p.work[(bh * nchunks + t / kChunk) * nb + j], 1);
  }
}

// per (bh, j): exclusive scan over chunks in place; the total goes to offsets[j]
__global__ void index_colscan_kernel(BlockIndexParams p, int nb, int nchunks) {
  int64_t n = int64_t(p.B) * p.Hkv * nb;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int j = int(i % nb);
    int64_t bh = i / nb;
    int run = 0;
    for (int c = 0; c < nchunks; ++c) {
      int32_t* w = &p.work[(bh * nchunks + c) * nb + j];
      int v = *w;
      *w = run;
      run += v;
    }
    p.offsets[bh * (nb + 1) + j] = run;
  }
}

// per bh: exclusive scan of the block totals (one CTA of 1024 threads)
__global__ void index_scan_kernel(BlockIndexParams p, int nb) {
  __shared__ int part[1024];
  int32_t* off = p.offsets + int64_t(blockIdx.x) * (nb + 1);
  const int per = (nb + 1023) / 1024, j0 = threadIdx.x * per, j1 = min(nb, j0 + per);
  int s = 0;
  for (int j = j0; j < j1; ++j) s += off[j];
  int run = block_exclusive_scan_1024(part, s);
  for (int j = j0; j < j1; ++j) {
    int v = off[j];
    off[j] = run;
    run += v;
  }
  if (threadIdx.x == 1023) off[nb] = part[1023];
}

// per (bh, chunk): one warp places the chunk's tokens; order = (group of 32 tokens, slot, lane)
__global__ void index_fill_kernel(BlockIndexParams p, int nb, int nchunks) {
  extern __shared__ int cur[];
  const int c = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const int lane = threadIdx.x;
  const int32_t* off = p.offsets + bh * (nb + 1);
  const int32_t* w = p.work + (bh * nchunks + c) * nb;
  for (int j = lane; j < nb; j += 32) cur[j] = off[j] + w[j];
  __syncwarp();
  int32_t* tokens = p.tokens + bh * int64_t(p.Tq) * p.K;
  const int t_end = min(p.Tq, (c + 1) * kChunk);
  for (int t0 = c * kChunk; t0 < t_end; t0 += 32) {
    const int t = t0 + lane;
    for (int s = 0; s < p.K; ++s) {
      int j = t < t_end ? p.blocks[(bh * p.Tq + t) * p.K + s] : -1;
      unsigned peers = __match_any_sync(0xffffffffu, j);
      int rank = __popc(peers & ((1u << lane) - 1));
      int base = j >= 0 ? cur[j] : 0;
      __syncwarp();
      if (j >= 0) {
        tokens[base + rank] = t;
        if (rank == 0) cur[j] = base + __popc(peers);
      }
      __syncwarp();
    }
  }
}

}  // namespace

// The two fp16 terms of every pooled block, then the blocks' scales (rows of
// nbc rounded up to 4).
size_t select_workspace_bytes(const SelectParams& p) {
  const size_t rows = size_t(p.B) * p.Hkv, nbc = visible_blocks(p);
  return rows * nbc * p.D * 2 * sizeof(__half) + rows * ((nbc + 3) & ~size_t(3)) * sizeof(float) + 16;
}

std::string select_supported(const SelectParams& p) {
  std::string e = check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
  if (!e.empty()) return e;
  if (select_smem(p, uses_register_slots(p)) > kSelMaxSmem)  // only at k > 32: otherwise the slots go to registers
    return "sequence too long for the selection kernel's shared-memory rows at k > 32";
  return "";
}

template <typename T, int D, bool WG>
auto select_kernel_for(bool register_slots, bool two_row_tiles) {
  return register_slots ? (two_row_tiles ? select_kernel<T, D, 2, true, WG> : select_kernel<T, D, 1, true, WG>)
                        : (two_row_tiles ? select_kernel<T, D, 2, false, WG> : select_kernel<T, D, 1, false, WG>);
}

std::string select_blocks(const SelectParams& p, cudaStream_t stream) {
  std::string e = select_supported(p);
  if (!e.empty()) return e;
  const int64_t npool = int64_t(p.B) * p.Hkv * visible_blocks(p) * p.D;
  const bool streams = uses_register_slots(p), wide = uses_wide_kernel(p);
  const size_t smem = wide ? select_wide_smem(p) : select_smem(p, streams);
  const int G = p.Hq / p.Hkv, stride = streams ? 0 : select_row_stride(p);
  const int W = wide ? wide_warps() : select_warps(p);
  dim3 grid((p.Tq + W - 1) / W, p.Hkv, p.B);
  __half* split = reinterpret_cast<__half*>(p.kbar);
  float* scales = reinterpret_cast<float*>(split + 2 * npool);
  const int64_t pool_warps = npool / std::max(p.D, 1);
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      if (pool_warps > 0)
        pool_keys_kernel<T, D><<<int(std::min<int64_t>((pool_warps + 7) / 8, 65536)), 256, 0, stream>>>(p, split, scales);
      auto kern = wide                  ? (W == 4 ? select_wide_kernel<T, D, 4> : select_wide_kernel<T, D, 8>)
                  : select_uses_wgmma() ? select_kernel_for<T, D, true>(streams, G > 16)
                                        : select_kernel_for<T, D, false>(streams, G > 16);
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      kern<<<grid, W * 32, smem, stream>>>(p, split, scales, stride);
    });
  });
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

size_t block_index_workspace_bytes(const BlockIndexParams& p) {
  const int nb = (p.Tk + p.block_size - 1) / p.block_size, nchunks = (p.Tq + kChunk - 1) / kChunk;
  return size_t(p.B) * p.Hkv * nchunks * nb * sizeof(int32_t);
}

std::string block_index_supported(const BlockIndexParams& p) {
  if (p.B < 1 || p.Hkv < 1 || p.Tq < 1 || p.Tk < 1 || p.K < 1 || p.block_size < 1) return "empty shape";
  if (int64_t(p.Tq) * p.K >= (int64_t(1) << 31)) return "Tq * K too large for int32 token lists";
  const int nb = (p.Tk + p.block_size - 1) / p.block_size;
  if (size_t(nb) * sizeof(int) > 200 * 1024) return "too many blocks for the index fill kernel";
  return "";
}

std::string build_block_index(const BlockIndexParams& p, cudaStream_t stream) {
  std::string e = block_index_supported(p);
  if (!e.empty()) return e;
  const int nb = (p.Tk + p.block_size - 1) / p.block_size, nchunks = (p.Tq + kChunk - 1) / kChunk;
  const int BH = p.B * p.Hkv;
  SSA_CUDA_CHECK(cudaMemsetAsync(p.work, 0, block_index_workspace_bytes(p), stream));
  const int64_t n = int64_t(BH) * p.Tq * p.K;
  index_count_kernel<<<int(std::min<int64_t>((n + 255) / 256, 65536)), 256, 0, stream>>>(p, nb, nchunks);
  const int64_t n2 = int64_t(BH) * nb;
  index_colscan_kernel<<<int((n2 + 255) / 256), 256, 0, stream>>>(p, nb, nchunks);
  index_scan_kernel<<<BH, 1024, 0, stream>>>(p, nb);
  size_t smem = size_t(nb) * sizeof(int);
  if (smem > 48 * 1024) SSA_CUDA_CHECK(cudaFuncSetAttribute(index_fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  index_fill_kernel<<<dim3(nchunks, BH), 32, smem, stream>>>(p, nb, nchunks);
  SSA_CUDA_CHECK(cudaGetLastError());
  return "";
}

}  // namespace ssa
