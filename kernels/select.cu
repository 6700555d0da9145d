// Block top-k selection and the transposed index.  See select.cuh for why.
#include <algorithm>
#include <cmath>

#include "select.cuh"
#include "common.cuh"

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

// Complete blocks that any query of the call can see: those before the last
// query's position + 1 (keys past it are never scored).
__host__ __device__ inline int visible_blocks(const SelectParams& p) { return (p.q_offset + p.Tq) / p.block_size; }

// kbar split into three 16-bit terms (hi + mid + lo == the fp32 mean to ~24 bits),
// so q . kbar runs on the tensor cores at fp32 accuracy: 16-bit q times a
// 16-bit term is exact in the fp32 accumulator.
template <typename T>
__global__ void pool_keys_kernel(SelectParams p, T* split) {
  // one thread per (b, hkv, j, d): mean over the bs keys of complete block j
  const int nbc = visible_blocks(p);
  const int64_t n = int64_t(p.B) * p.Hkv * nbc * p.D;
  const T* k = static_cast<const T*>(p.k);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int d = int(i % p.D);
    int64_t r = i / p.D;
    int j = int(r % nbc);
    r /= nbc;
    int h = int(r % p.Hkv), b = int(r / p.Hkv);
    const T* src = k + b * p.k_s.b + h * p.k_s.h + int64_t(j) * p.block_size * p.k_s.t + d;
    float s = 0.f;
    for (int u = 0; u < p.block_size; ++u) s += TypeOf<T>::to_float(src[u * p.k_s.t]);
    const float x = s / float(p.block_size);
    const T hi = TypeOf<T>::from_float(x);
    const float r1 = x - TypeOf<T>::to_float(hi);
    const T mid = TypeOf<T>::from_float(r1);
    const T lo = TypeOf<T>::from_float(r1 - TypeOf<T>::to_float(mid));
    split[i] = hi;
    split[n + i] = mid;
    split[2 * n + i] = lo;
  }
}

// S (16 heads x 16 blocks) of one row tile against the chunk's three kbar terms
// (each term's rows sel_rows<D>() apart).
template <typename T, int D>
__device__ __forceinline__ void chunk_scores(float (&s)[2][4], const uint32_t (&qa)[D / 16][4], const T* tile,
                                             int lane) {
#pragma unroll
  for (int n = 0; n < 2; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int part = 2; part >= 0; --part)  // small terms first
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t b0, b1, b2, b3;
      ldsm_x4(b0, b1, b2, b3,
              smem_u32(tile + part * sel_rows<D>() * D + swz<D>((lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1))));
      mma16816<T>(s[0], qa[ks], b0, b1);
      mma16816<T>(s[1], qa[ks], b2, b3);
    }
}

// One warp per query row i (all G <= 16*RT heads of its group), at position
// q_offset + i; W rows per CTA share the kbar chunks (kSelRows blocks x 3
// terms) in shared memory.
template <typename T, int D, int RT, int W = sel_warps<D>()>
__global__ void __launch_bounds__(W * 32) select_kernel(SelectParams p, const T* split, int buf_stride) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NK = D / 16, CH = D / 8, kSelRows = sel_rows<D>(), kSelSub = kSelRows / 16;
  T* sKb = reinterpret_cast<T*>(smem_raw);  // [kSelStages][3 terms][kSelRows][D]
  float* bufs = reinterpret_cast<float*>(sKb + kSelStages * 3 * kSelRows * D);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int b = blockIdx.z, hk = blockIdx.y;
  const int t0 = blockIdx.x * W, t = t0 + warp;  // query rows
  const int G = p.Hq / p.Hkv, bs = p.block_size, K = p.top_k, nbc = visible_blocks(p);
  const bool active = t < p.Tq;
  const int tt = active ? t : p.Tq - 1;
  const int pos = p.q_offset + tt;  // the row's position among the keys
  const int bt = pos / bs, nvis = (pos + 1) / bs;
  const int pos_last = p.q_offset + min(p.Tq - 1, t0 + W - 1);
  const int nvis_max = (pos_last + 1) / bs, bt_max = pos_last / bs;
  float* buf = bufs + warp * buf_stride;

  uint32_t qa[RT][NK][4];
  {
    const T* qb = static_cast<const T*>(p.q) + b * p.q_s.b + int64_t(hk) * G * p.q_s.h + tt * p.q_s.t;
#pragma unroll
    for (int rt = 0; rt < RT; ++rt) {
      const int r0 = rt * 16 + g, r1 = r0 + 8;
#pragma unroll
      for (int ks = 0; ks < NK; ++ks) {
        int d0 = ks * 16 + 2 * c;
        qa[rt][ks][0] = r0 < G ? *reinterpret_cast<const uint32_t*>(qb + r0 * p.q_s.h + d0) : 0u;
        qa[rt][ks][1] = r1 < G ? *reinterpret_cast<const uint32_t*>(qb + r1 * p.q_s.h + d0) : 0u;
        qa[rt][ks][2] = r0 < G ? *reinterpret_cast<const uint32_t*>(qb + r0 * p.q_s.h + d0 + 8) : 0u;
        qa[rt][ks][3] = r1 < G ? *reinterpret_cast<const uint32_t*>(qb + r1 * p.q_s.h + d0 + 8) : 0u;
      }
    }
  }
  const int64_t nsplit = int64_t(p.B) * p.Hkv * nbc * D;
  const T* kb = split + (int64_t(b) * p.Hkv + hk) * nbc * D;
  // each thread copies the same NL 16-byte pieces of every chunk: a fixed trip
  // count with the offsets computed once (a loop bounded by threadIdx cost more
  // instructions per chunk than the chunk's scores)
  constexpr int kPieces = 3 * kSelRows * CH, NL = (kPieces + W * 32 - 1) / (W * 32);
  int ld_row[NL], ld_smem[NL];
  int64_t ld_src[NL];
#pragma unroll
  for (int u = 0; u < NL; ++u) {
    const int i = min(tid + u * W * 32, kPieces - 1), part = i / (kSelRows * CH), ch = i % CH;
    ld_row[u] = (i / CH) % kSelRows;
    ld_smem[u] = part * kSelRows * D + swz<D>(ld_row[u], ch);
    ld_src[u] = part * nsplit + ch * 8;
  }
  auto load = [&](int ci, int st) {
#pragma unroll
    for (int u = 0; u < NL; ++u) {
      if (kPieces % (W * 32) != 0 && tid + u * W * 32 >= kPieces) break;
      const int j = ci * kSelRows + ld_row[u];
      const bool ok = j < nbc;
      cp_async16(sKb + st * 3 * kSelRows * D + ld_smem[u], kb + ld_src[u] + int64_t(ok ? j : 0) * D, ok);
    }
  };
  // scores are scaled into log2 units: y = s / sqrt(D) * log2(e)
  const float ys = float(1.0 / sqrt(double(D))) * kLog2e;
  float m[RT][2], l[RT][2];
#pragma unroll
  for (int rt = 0; rt < RT; ++rt) m[rt][0] = m[rt][1] = -INFINITY, l[rt][0] = l[rt][1] = 0.f;

  for (int pass = 0; pass < 2; ++pass) {
    const int nchunk = ((pass == 0 ? nvis_max : bt_max) + kSelRows - 1) / kSelRows;
    const int lim = pass == 0 ? nvis : bt;  // this token's blocks for the pass
#pragma unroll
    for (int st = 0; st < kSelStages - 1; ++st) {
      if (st < nchunk) load(st, st);
      cp_async_commit();
    }
    for (int ci = 0; ci < nchunk; ++ci) {
      if (ci + kSelStages - 1 < nchunk) load(ci + kSelStages - 1, (ci + kSelStages - 1) % kSelStages);
      cp_async_commit();
      cp_async_wait<kSelStages - 1>();
      __syncthreads();
#pragma unroll
      for (int sub = 0; sub < kSelSub; ++sub) {
        const int j0 = ci * kSelRows + sub * 16;  // first block of this 16-block tile
        if (active && j0 < lim) {
          const T* tile = sKb + (ci % kSelStages) * 3 * kSelRows * D + sub * 16 * D;
          float colsum[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
#pragma unroll
          for (int rt = 0; rt < RT; ++rt) {
            float s[2][4];
            chunk_scores<T, D>(s, qa[rt], tile, lane);
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int j = j0 + n * 8 + 2 * c + (e & 1);
                s[n][e] = j < lim ? s[n][e] * ys : -INFINITY;
              }
            if (pass == 0) {
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                float mx = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
                const float mn = fmaxf(m[rt][r], quad_max(mx));
                float add = 0.f;
#pragma unroll
                for (int n = 0; n < 2; ++n) add += fast_exp2(s[n][2 * r] - mn) + fast_exp2(s[n][2 * r + 1] - mn);
                l[rt][r] = l[rt][r] * fast_exp2(m[rt][r] - mn) + quad_sum(add);
                m[rt][r] = mn;
              }
            } else {
              const bool v0 = rt * 16 + g < G, v1 = rt * 16 + g + 8 < G;  // padded heads add nothing
#pragma unroll
              for (int n = 0; n < 2; ++n)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                  colsum[n][e] += (v0 ? fast_exp2(s[n][e] - m[rt][0]) * l[rt][0] : 0.f) +
                                  (v1 ? fast_exp2(s[n][e + 2] - m[rt][1]) * l[rt][1] : 0.f);
            }
          }
          if (pass == 1) {
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                float v = colsum[n][e];
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                const int j = j0 + n * 8 + 2 * c + e;
                if (g == 0 && j < lim) buf[j] = v;
              }
          }
        }
      }
      __syncthreads();
    }
    if (pass == 0) {  // l -> 1/l for pass 2
#pragma unroll
      for (int rt = 0; rt < RT; ++rt) l[rt][0] = 1.f / l[rt][0], l[rt][1] = 1.f / l[rt][1];
    }
  }
  if (!active) return;
  __syncwarp();

  int32_t* out = p.blocks + ((int64_t(b) * p.Hkv + hk) * p.Tq + t) * K;
  // The nsa-chunked rule (select.cuh), once the row's own block is past the
  // first chunk of K blocks: the completed chunks [0, own_chunk_start) fill K/2
  // slots and the row's own chunk [own_chunk_start, bt) the other K/2 - 1 (or fewer, when a
  // side has fewer blocks). Otherwise one side, [0, bt), fills K - 1 slots.
  const bool chunked = p.nsa_chunked && K >= kNsaChunkBlocks && bt >= K;
  const int own_chunk_start = chunked ? bt / K * K : bt;
  int quota_before = chunked ? min(K / 2, own_chunk_start) : min(K - 1, bt);
  int quota_own = chunked ? min(K - K / 2 - 1, bt - own_chunk_start) : 0;
  const int rounds = quota_before + quota_own;
  // Rounds of warp argmax over both sides at once, each side only while it
  // has slots left, so the slots come out in one order: falling score, ties
  // to the lower block index. Each lane caches its best entry of each side.
  auto better = [](float v2, int i2, float v, int i) { return v2 > v || (v2 == v && i2 < i); };
  float best_before = -1.f, best_own = -1.f;
  int at_before = 0x7fffffff, at_own = 0x7fffffff;
  auto rescan = [&](bool own_side) {
    float bv = -1.f;
    int bi = 0x7fffffff;
    const int lo = own_side ? own_chunk_start : 0, hi = own_side ? bt : own_chunk_start;
    for (int j = lo + ((lane - lo) & 31); j < hi; j += 32)
      if (buf[j] > bv) { bv = buf[j]; bi = j; }
    if (own_side) best_own = bv, at_own = bi;
    else best_before = bv, at_before = bi;
  };
  rescan(false);
  if (chunked) rescan(true);
  for (int r = 0; r < rounds; ++r) {
    float v = -1.f;
    int i = 0x7fffffff;
    if (quota_before > 0 && better(best_before, at_before, v, i)) v = best_before, i = at_before;
    if (quota_own > 0 && better(best_own, at_own, v, i)) v = best_own, i = at_own;
    for (int off = 16; off > 0; off >>= 1) {
      float v2 = __shfl_xor_sync(0xffffffffu, v, off);
      int i2 = __shfl_xor_sync(0xffffffffu, i, off);
      if (better(v2, i2, v, i)) { v = v2; i = i2; }
    }
    if (lane == 0) out[1 + r] = i;
    const bool own_side = i >= own_chunk_start;
    if (own_side) --quota_own;
    else --quota_before;
    if ((i & 31) == lane) {  // the winner's lane removes it and rescans its column of that side
      buf[i] = -2.f;
      rescan(own_side);
    }
  }
  if (lane == 0) out[0] = bt;
  for (int s2 = 1 + rounds + lane; s2 < K; s2 += 32) out[s2] = -1;
  if (p.counts && lane == 0) p.counts[(int64_t(b) * p.Hkv + hk) * p.Tq + t] = 1 + rounds;
}

int select_buf_stride(const SelectParams& p) { return (visible_blocks(p) + 4 + 3) & ~3; }
int select_warps(const SelectParams& p) { return p.D == 64 ? sel_warps<64>() : sel_warps<128>(); }
size_t select_smem(const SelectParams& p) {
  const int rows = p.D == 64 ? sel_rows<64>() : sel_rows<128>();
  return size_t(kSelStages) * 3 * rows * p.D * 2 + size_t(select_warps(p)) * select_buf_stride(p) * sizeof(float);
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

size_t select_workspace_bytes(const SelectParams& p) {
  return size_t(3) * p.B * p.Hkv * visible_blocks(p) * p.D * 2 + 16;
}

std::string select_supported(const SelectParams& p) {
  std::string e = check_common(p.B, p.Hq, p.Hkv, p.Tq, p.Tk, p.q_offset, p.D, p.block_size, p.top_k);
  if (!e.empty()) return e;
  if (select_smem(p) > 220 * 1024) return "sequence too long for the selection kernel's shared-memory rows";
  return "";
}

std::string select_blocks(const SelectParams& p, cudaStream_t stream) {
  std::string e = select_supported(p);
  if (!e.empty()) return e;
  const int64_t npool = int64_t(p.B) * p.Hkv * visible_blocks(p) * p.D;
  const size_t smem = select_smem(p);
  const int G = p.Hq / p.Hkv, stride = select_buf_stride(p);
  const int W = select_warps(p);
  dim3 grid((p.Tq + W - 1) / W, p.Hkv, p.B);
  SSA_DISPATCH_DTYPE(p.dtype, T, {
    T* split = reinterpret_cast<T*>(p.kbar);
    if (npool > 0)
      pool_keys_kernel<T><<<int(std::min<int64_t>((npool + 255) / 256, 65536)), 256, 0, stream>>>(p, split);
    SSA_DISPATCH_HEADDIM(p.D, D, {
      auto kern = G <= 16 ? select_kernel<T, D, 1> : select_kernel<T, D, 2>;
      SSA_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      kern<<<grid, W * 32, smem, stream>>>(p, split, stride);
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
