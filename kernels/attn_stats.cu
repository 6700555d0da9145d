// Full-attention statistics and pooled map.  See attn_stats.cuh for the design.
#include <cmath>

#include "attn_stats.cuh"
#include "sparse_tiles.cuh"
#include "wgmma.cuh"

namespace ssa {
namespace {

constexpr int kRows = 128;  // query tokens per CTA (8 warps x 16)
// Keys per chunk: 64 for the statistics; the map pass at d64 takes 128 (half the
// barriers and per-chunk bookkeeping; its scores die right after their exponent).
template <bool MAP, int D>
__host__ __device__ constexpr int chunk_keys() { return D == 64 ? 128 : 64; }
constexpr int kStages = 4;  // K chunks in flight (cp.async ring)

// Pass 2 also splits each map cell into its kept part (the sparse map) and its
// dropped part: asked for by both pointers, and it needs the full map and a selection.
__host__ __device__ inline bool splits_maps(const StatsParams& p) {
  return p.map && p.blocks && p.map_sparse && p.map_dropped;
}

// Sums N values (a power of two, <= 32) over the warp's lanes with N - 1 halving
// exchanges plus a butterfly over the lanes left (5 N shuffles done one value at
// a time).  Lane l returns the total of value reduce_scatter_index<N>(l); the
// lanes 0 .. N-1 hold the N totals.
template <int N>
__device__ __forceinline__ float warp_reduce_scatter(float (&v)[N], int lane) {
  static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N: a power of two up to 32");
#pragma unroll
  for (int o = 1; o < N; o *= 2) {  // o = 1, 2, .. N/2 exchanges N / (2 o) values
    const int half = N / (2 * o);
    const bool upper = lane & o;
#pragma unroll
    for (int j = 0; j < half; ++j) {
      const float keep = upper ? v[half + j] : v[j], give = upper ? v[j] : v[half + j];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, give, o);
    }
  }
  float x = v[0];
#pragma unroll
  for (int o = N; o < 32; o *= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
template <int N>
__device__ __forceinline__ int reduce_scatter_index(int lane) {
  int idx = 0;
#pragma unroll
  for (int o = 1; o < N; o *= 2)
    if (lane & o) idx += N / (2 * o);
  return idx;
}

// Largest sum of one chunk's weights (16 per thread and row) before the
// statistics pass raises its reference: any term then stays below 2^32.
constexpr float kLazyLimit = 4294967296.f;

// A masked score: finite, so that its weight 0 times the score stays 0 in the
// entropy sum, and far below any real score, so that its weight is 0.
constexpr float kMaskedScore = -1e30f;

// PASS 0: the statistics; 1: the full map; 2: the full, sparse and dropped maps.
// Two CTAs (16 warps) per SM: at 3 (80 registers) the d64 kernel spilled and was
// slower (H100, C: 12.8 -> 14.8 ms without the map).
template <typename T, int D, int PASS>
__global__ void __launch_bounds__(kRows * 2, 2) stats_kernel(StatsParams p, int words) {
  constexpr bool MAP = PASS > 0, SPLIT = PASS == 2;
  constexpr int kKeys = chunk_keys<MAP, D>(), NG = kKeys / 16;  // 16-key groups per chunk
  constexpr int kMaps = SPLIT ? 3 : 1;
  constexpr int NV = SPLIT ? (NG == 8 ? 32 : 16) : NG;  // map values per chunk and warp (a power of two)
  // d64 on sm_90a: the warpgroup MMA (wgmma.cuh), the two warpgroups of the CTA
  // each multiplying their 64 rows; otherwise every warp its own 16 (mma.sync)
  constexpr bool WG = SSA_HAVE_WGMMA && D == 64;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16, CH = D / 8;
  // the K ring starts on a 1024-byte boundary (the launcher adds the slack)
  T* sK = reinterpret_cast<T*>(smem_raw + ((kSwizzle128Align - smem_u32(smem_raw) % kSwizzle128Align) % kSwizzle128Align));  // [kStages][kKeys][D]
  uint32_t* bits = reinterpret_cast<uint32_t*>(sK + kStages * kKeys * D);  // [kRows][words]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int ntile = (p.Tq + kRows - 1) / kRows;
  const int tile = ntile - 1 - blockIdx.x;  // heavy tiles first
  const int h = blockIdx.y, b = blockIdx.z, G = p.Hq / p.Hkv, hk = h / G, bs = p.block_size;
  const int bs_shift = __ffs(bs) - 1;  // bs is a power of two: no integer division per chunk
  // query rows (tok*) and their positions among the keys (pos*)
  const int q0 = tile * kRows, tq0 = q0 + warp * 16;
  const int tok0 = tq0 + g, tok1 = tq0 + g + 8;
  const int ptq0 = p.q_offset + tq0, pos0 = p.q_offset + tok0, pos1 = p.q_offset + tok1;

  if ((!MAP && p.blocks) || SPLIT)  // selection bitmask of the CTA's 128 rows
    build_selection_bits(bits, p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq) * p.top_k, q0, kRows, words, p.Tq,
                         p.top_k, tid, kRows * 2);
  uint32_t qa[NK][4];
  load_rows_frag<T, D>(qa, static_cast<const T*>(p.q) + b * p.q_s.b + h * p.q_s.h, p.q_s.t, p.Tq, tok0, tok1, c);
  const float scale_log2 = p.scale * kLog2e;
  float* st0 = p.stats + ((int64_t(b) * p.Hq + h) * p.Tq + tok0) * kStatCount;
  float* st1 = st0 + 8 * kStatCount;
  // pass 2 needs the LSE (log2 units); rows beyond Tq get +inf -> p = 0
  const float L0 = MAP ? (tok0 < p.Tq ? st0[kStatLse] * kLog2e : INFINITY) : 0.f;
  const float L1 = MAP ? (tok1 < p.Tq ? st1[kStatLse] * kLog2e : INFINITY) : 0.f;
  // sparse map weights: 1 / selected mass of the row (0 beyond Tq or for an empty selection)
  const float inv0 = SPLIT && tok0 < p.Tq && st0[kStatSelected] > 0.f ? 1.f / st0[kStatSelected] : 0.f;
  const float inv1 = SPLIT && tok1 < p.Tq && st1[kStatSelected] > 0.f ? 1.f / st1[kStatSelected] : 0.f;

  const T* kb = static_cast<const T*>(p.k) + b * p.k_s.b + hk * p.k_s.h;
  const int kend = p.q_offset + min(p.Tq, q0 + kRows);  // causal: keys < kend (<= Tk)
  const int nchunk = (kend + kKeys - 1) / kKeys;
  // each thread copies the same NL 16-byte pieces of every chunk: a fixed trip
  // count with the offsets computed once (a loop bounded by threadIdx cost
  // about 100 instructions per chunk, a third of the score work)
  constexpr int NL = kKeys * CH / (kRows * 2);
  static_assert(NL * kRows * 2 == kKeys * CH, "chunk pieces divide among the threads");
  int ld_row[NL], ld_smem[NL];
#pragma unroll
  for (int u = 0; u < NL; ++u) {
    const int i = tid + u * kRows * 2, ch = i % CH;
    ld_row[u] = i / CH;
    ld_smem[u] = swz<D>(ld_row[u], ch);
  }
  auto load = [&](int ci, int st) {
#pragma unroll
    for (int u = 0; u < NL; ++u) {
      const int i = tid + u * kRows * 2, key = ci * kKeys + ld_row[u];
      const bool ok = key < p.Tk;
      cp_async16(sK + st * kKeys * D + ld_smem[u], kb + int64_t(ok ? key : 0) * p.k_s.t + (i % CH) * 8, ok);
    }
  };
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < nchunk) load(st, st);
    cp_async_commit();
  }

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, ax[2] = {0.f, 0.f}, sm[2] = {0.f, 0.f},
        b0[2] = {0.f, 0.f}, x0[2] = {-INFINITY, -INFINITY};
  float* map_row[3] = {nullptr, nullptr, nullptr};  // this warp's pooled row in the full / sparse / dropped map
  float map_w = 0.f;
  if (MAP && tq0 < p.Tq) {
    const int nrow = (p.Tq + p.map_row_pool - 1) / p.map_row_pool, nb = (p.Tk + bs - 1) / bs;
    const int pr = tq0 / p.map_row_pool;
    const int hm = p.map_mean_heads ? 0 : h, Hm = p.map_mean_heads ? 1 : p.Hq;
    const int64_t off = ((int64_t(b) * Hm + hm) * nrow + pr) * nb;
    map_row[0] = p.map + off;
    if (SPLIT) map_row[1] = p.map_sparse + off, map_row[2] = p.map_dropped + off;
    map_w = 1.f / float(min(p.map_row_pool, p.Tq - pr * p.map_row_pool)) / (p.map_mean_heads ? float(p.Hq) : 1.f);
  }

  for (int ci = 0; ci < nchunk; ++ci) {
    if (ci + kStages - 1 < nchunk) load(ci + kStages - 1, (ci + kStages - 1) % kStages);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
#if SSA_HAVE_WGMMA
    if (WG) fence_proxy_async_smem();
#endif
    __syncthreads();
    const int key0 = ci * kKeys;
    const T* tK = sK + (ci % kStages) * kKeys * D;
    float s[2 * NG][4];
#if SSA_HAVE_WGMMA
    if (WG) {  // the warpgroup's 64 rows at once; warps past the diagonal get masked scores
      const int wq0 = q0 + (warp / 4) * 64;
      if (key0 <= p.q_offset + wq0 + 63 && wq0 < p.Tq) {
        wgmma_fence();
#pragma unroll
        for (int h64 = 0; h64 < kKeys / 64; ++h64)
#pragma unroll
          for (int ks = 0; ks < NK; ++ks)
            wgmma_m64n64k16_rs<T>(reinterpret_cast<float(&)[8][4]>(s[8 * h64]), qa[ks],
                                  wgmma_desc_k_sw128(tK + h64 * 64 * D + ks * 16), ks > 0);
        wgmma_commit();
        wgmma_wait_all();
        wgmma_fence_operands(s);
      }
    }
#endif
    if (key0 <= ptq0 + 15 && tq0 < p.Tq) {
      if (!WG) {
#pragma unroll
        for (int n = 0; n < 2 * NG; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        // key pair (16 keys) by key pair: the first pairs' scores are done while
        // the later pairs' MMAs still run, so the exponentials below can start early
#pragma unroll
        for (int np = 0; np < NG; ++np)
#pragma unroll
          for (int ks = 0; ks < NK; ++ks) {
            uint32_t b0r, b1r, b2r, b3r;
            ldsm_x4(b0r, b1r, b2r, b3r,
                    smem_u32(tK + swz<D>(np * 16 + (lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1))));
            mma16816<T>(s[2 * np], qa[ks], b0r, b1r);
            mma16816<T>(s[2 * np + 1], qa[ks], b2r, b3r);
          }
      }
      const bool diag = key0 + kKeys - 1 > ptq0;  // some (row, key) of this warp is masked
      if (diag) {
#pragma unroll
        for (int n = 0; n < 2 * NG; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = key0 + n * 8 + 2 * c + (e & 1);
            if (key > ((e >> 1) ? pos1 : pos0)) s[n][e] = kMaskedScore;
          }
      }
      // selection bits of the chunk's key blocks for this thread's two rows,
      // shifted so that bit (16 i) / bs belongs to the chunk's 16-key group i
      // (a block never straddles a group: bs >= 16)
      uint32_t selw[2] = {0u, 0u};
      if ((!MAP && p.blocks) || SPLIT) {
        const int jb0 = key0 >> bs_shift;
#pragma unroll
        for (int r = 0; r < 2; ++r) selw[r] = bits[(warp * 16 + g + 8 * r) * words + jb0 / 32] >> (jb0 % 32);
      }
      if (!MAP) {
        // Raw scores; the scale is folded into the exponent (one FFMA per score).
        // Each thread keeps its own reference m[r] for its quarter of row r, and
        // weighs scores against it instead of against the chunk's max: no max, no
        // shuffle and no rescale per chunk.  The reference is raised (sums
        // rescaled, chunk redone) only when the chunk's weights pass 2^32 (or on
        // the first chunk, when it is -inf), so no term overflows; terms far
        // below it vanish just as they would below the true max.  The four
        // quarters merge once, after the loop.
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float grp[NG], axp;
          auto weigh = [&](float msl) {
            float tot = 0.f;
            axp = 0.f;
#pragma unroll
            for (int i = 0; i < NG; ++i) {
              // the group's 4 scores of this row, summed as a tree (short dependency chains)
              float x[4], w[4];
#pragma unroll
              for (int u = 0; u < 4; ++u) {
                x[u] = s[2 * i + u / 2][2 * r + u % 2];
                w[u] = fast_exp2(fmaf(x[u], scale_log2, -msl));
              }
              grp[i] = (w[0] + w[1]) + (w[2] + w[3]);
              tot += grp[i];
              // masked scores: weight 0 times a finite sentinel
              axp += fmaf(w[0], x[0], w[1] * x[1]) + fmaf(w[2], x[2], w[3] * x[3]);
            }
            return tot;
          };
          float msl = m[r] * scale_log2;
          if (!(weigh(msl) <= kLazyLimit)) {  // also inf / NaN (first chunk)
            float mx = kMaskedScore;
#pragma unroll
            for (int n = 0; n < 2 * NG; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
            if (mx <= kMaskedScore) {  // nothing unmasked seen yet
#pragma unroll
              for (int i = 0; i < NG; ++i) grp[i] = 0.f;
              axp = 0.f;
            } else {
              const float mn = fmaxf(m[r], mx);
              const float a = fast_exp2((m[r] - mn) * scale_log2);  // 0 from -inf
              l[r] *= a; ax[r] *= a; sm[r] *= a; b0[r] *= a;
              m[r] = mn;
              msl = mn * scale_log2;
              weigh(msl);
            }
          }
          ax[r] += axp;
#pragma unroll
          for (int i = 0; i < NG; ++i) {
            l[r] += grp[i];
            if ((selw[r] >> ((16 * i) >> bs_shift)) & 1u) sm[r] += grp[i];
          }
          if (key0 < bs) {  // block-0 mass and the score of token 0
#pragma unroll
            for (int n = 0; n < 2 * NG; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int key = key0 + n * 8 + 2 * c + e;
                if (key < bs) b0[r] += fast_exp2(fmaf(s[n][2 * r + e], scale_log2, -msl));
                if (key == 0) x0[r] = s[n][2 * r + e];
              }
          }
        }
      } else {
        // probability mass per 16-key group and row: the full mass, and with the
        // selection the kept mass renormalised per row (sparse) and the mass left
        // out (dropped); v[map * NG + group], summed over the warp's 16 rows below
        float v[NV];
#pragma unroll
        for (int i = 0; i < NV; ++i) v[i] = 0.f;
#pragma unroll
        for (int i = 0; i < NG; ++i) {
          float grp[2];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float w[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) w[u] = fast_exp2(fmaf(s[2 * i + u / 2][2 * r + u % 2], scale_log2, -(r ? L1 : L0)));
            grp[r] = (w[0] + w[1]) + (w[2] + w[3]);
          }
          v[i] = grp[0] + grp[1];
          if (SPLIT) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              if ((selw[r] >> ((16 * i) >> bs_shift)) & 1u) v[NG + i] = fmaf(grp[r], r ? inv1 : inv0, v[NG + i]);
              else v[2 * NG + i] += grp[r];
            }
          }
        }
        // groups -> key blocks of the chunk: pairs merge once per doubling of bs
#pragma unroll
        for (int m2 = 0; m2 < kMaps; ++m2) {
          float* u = v + NG * m2;
#pragma unroll
          for (int gpb = 1; gpb < NG; gpb *= 2)
            if (bs >= 32 * gpb) {
#pragma unroll
              for (int k = 0; k < NG / (2 * gpb); ++k) u[k] = u[2 * k] + u[2 * k + 1];
            }
        }
        const float total = warp_reduce_scatter(v, lane);
        const int idx = reduce_scatter_index<NV>(lane), m2 = idx / NG, i = idx % NG;
        const int nblk = bs >= kKeys ? 1 : kKeys >> bs_shift;
        if (lane < NV && m2 < kMaps && i < nblk && total != 0.f) {
          // fire-and-forget reductions in L2 (a shared-memory sum was slower: H100,
          // C with the full map 22.4 vs 21.5 ms; all three maps 25.1 vs 22.6 ms)
          atomicAdd((m2 == 0 ? map_row[0] : m2 == 1 ? map_row[1] : map_row[2]) + (key0 >> bs_shift) + i, total * map_w);
        }
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  if (!MAP) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // merge the four quarters of each row at their common max
      const float mq = quad_max(m[r]);
      const float a = mq == -INFINITY ? 0.f : fast_exp2((m[r] - mq) * scale_log2);
      m[r] = mq;
      l[r] *= a; ax[r] *= a; sm[r] *= a; b0[r] *= a;
      l[r] = quad_sum(l[r]);
      ax[r] = quad_sum(ax[r]);
      sm[r] = quad_sum(sm[r]);
      b0[r] = quad_sum(b0[r]);
      x0[r] = quad_max(x0[r]);
    }
    if (c == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int tok = r ? tok1 : tok0;
        if (tok >= p.Tq) continue;
        float* o = r ? st1 : st0;
        const float lse2 = m[r] * scale_log2 + log2f(l[r]);
        o[kStatLse] = lse2 * kLn2;
        o[kStatEntropy] = (lse2 - ax[r] * scale_log2 / l[r]) * kLn2;
        o[kStatSinkToken] = fast_exp2(x0[r] * scale_log2 - lse2);
        o[kStatSinkBlock] = b0[r] / l[r];
        o[kStatSelected] = p.blocks ? sm[r] / l[r] : 0.f;
      }
    }
  }
}

int bitmask_words(const StatsParams& p) { return ((p.Tk + p.block_size - 1) / p.block_size + 31) / 32; }

}  // namespace

size_t stats_map_elems(const StatsParams& p) {
  if (p.map_row_pool < 1) return 0;
  const size_t nrow = (p.Tq + p.map_row_pool - 1) / p.map_row_pool, nb = (p.Tk + p.block_size - 1) / p.block_size;
  return size_t(p.B) * (p.map_mean_heads ? 1 : p.Hq) * nrow * nb;
}

std::string attn_stats_supported(const StatsParams& p) {
  std::string e = check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
  if (!e.empty()) return e;
  if (p.map && (p.map_row_pool < 16 || p.map_row_pool % 16 != 0)) return "map row pooling must be a multiple of 16";
  if ((p.map_sparse || p.map_dropped) && !splits_maps(p))
    return "the sparse and dropped maps come together, with the full map and a selection";
  if (size_t(kRows) * bitmask_words(p) * 4 > 96 * 1024) return "sequence too long for the statistics kernel";
  return "";
}

std::string attn_stats(const StatsParams& p_in, cudaStream_t stream) {
  std::string e = attn_stats_supported(p_in);
  if (!e.empty()) return e;
  StatsParams p = p_in;
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(double(p.D)));
  const int words = bitmask_words(p);
  dim3 grid((p.Tq + kRows - 1) / kRows, p.Hq, p.B);
  const bool split = splits_maps(p);
  if (p.map) SSA_CUDA_CHECK(cudaMemsetAsync(p.map, 0, stats_map_elems(p) * sizeof(float), stream));
  if (split) {
    SSA_CUDA_CHECK(cudaMemsetAsync(p.map_sparse, 0, stats_map_elems(p) * sizeof(float), stream));
    SSA_CUDA_CHECK(cudaMemsetAsync(p.map_dropped, 0, stats_map_elems(p) * sizeof(float), stream));
  }
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    SSA_DISPATCH_HEADDIM(p.D, D, {
      // K ring, then the selection bitmask (pass 1 with a selection; pass 2 when split)
      const int bitmask = kRows * words * 4;
      const int smem1 = kSwizzle128Align + kStages * chunk_keys<false, D>() * D * 2 + bitmask,
                smem2 = kSwizzle128Align + kStages * chunk_keys<true, D>() * D * 2 + (split ? bitmask : 0);
      auto k1 = stats_kernel<T, D, 0>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(k1, cudaFuncAttributeMaxDynamicSharedMemorySize, smem1));
      k1<<<grid, kRows * 2, smem1, stream>>>(p, words);
      SSA_CUDA_CHECK(cudaGetLastError());
      if (p.map) {
        auto k2 = split ? stats_kernel<T, D, 2> : stats_kernel<T, D, 1>;
        SSA_CUDA_CHECK(cudaFuncSetAttribute(k2, cudaFuncAttributeMaxDynamicSharedMemorySize, smem2));
        k2<<<grid, kRows * 2, smem2, stream>>>(p, words);
        SSA_CUDA_CHECK(cudaGetLastError());
      }
    });
  });
  return "";
}

}  // namespace ssa
