// Hopper (sm_90a) warpgroup MMA for Q K^T with Q in registers and a K tile in
// shared memory.  Four warps issue one wgmma together and the tensor cores read
// the K tile straight from shared memory, once per 64 query rows; with the
// warp-level mma.sync every warp ldmatrix'es the whole tile into registers
// itself, which made shared-memory bandwidth as scarce as the exponent unit
// in the statistics kernel.
//
// Layouts line up with the rest of the kernels:
//  * A (this warp's 16 rows x 16 of D) is the m16n8k16 A fragment (common.cuh):
//    warp w of the warpgroup supplies rows 16 w .. 16 w + 15.
//  * The accumulator of m64nNk16 is, per warp, the m16n8 C layout repeated over
//    N / 8 column tiles: d[j][0..3] = rows g, g + 8, columns 8 j + 2 c, + 1.
//  * The K tile is K-major (a key's D elements contiguous) in rows of 128 bytes
//    with 16-byte chunk index XOR (row % 8): swz<64> (common.cuh), which is the
//    hardware's 128-byte swizzle when the tile starts on a 1024-byte boundary.
//    So only D = 64 takes this path; D = 128 (256-byte rows) keeps mma.sync.
#pragma once
#include "common.cuh"

// The wgmma instructions exist only when compiling for sm_90a.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SSA_HAVE_WGMMA 1
#else
#define SSA_HAVE_WGMMA 0
#endif

namespace ssa {

// Alignment the 128-byte swizzle needs of a tile's first byte.
constexpr int kSwizzle128Align = 1024;

#if SSA_HAVE_WGMMA
// Descriptor of a K-major, 128-byte-swizzled operand: 8-row atoms of 1024 bytes
// one after another along N (stride byte offset); the leading byte offset is
// unused for swizzled K-major layouts.  Advancing along K inside the 128-byte
// row moves only the start address (the hardware applies the swizzle).
__device__ __forceinline__ uint64_t wgmma_desc_k_sw128(const void* tile) {
  const uint64_t addr = smem_u32(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// cp.async writes shared memory through the generic proxy, wgmma reads it
// through the async proxy: each writer fences before the CTA barrier.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins accumulator registers at this point of the program: the compiler must
// not read them before wgmma_wait_all() nor write them while a wgmma runs.
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
    asm volatile("" : "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])::"memory");
}

#define SSA_WGMMA_M64N64K16_RS(TYPE)                                                                           \
  asm volatile(                                                                                                \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                             \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                                          \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n" \
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),    \
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),    \
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),    \
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),    \
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])                                                  \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(int(accumulate)))

// d (+)= A B for this warp's 16 rows and the tile's 64 keys (k = 16 of D);
// accumulate = false overwrites d.
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc,
                                                   bool accumulate);
template <>
__device__ __forceinline__ void wgmma_m64n64k16_rs<__nv_bfloat16>(float (&d)[8][4], const uint32_t (&a)[4],
                                                                  uint64_t desc, bool accumulate) {
  SSA_WGMMA_M64N64K16_RS("bf16");
}
template <>
__device__ __forceinline__ void wgmma_m64n64k16_rs<__half>(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc,
                                                           bool accumulate) {
  SSA_WGMMA_M64N64K16_RS("f16");
}
#undef SSA_WGMMA_M64N64K16_RS

// d (+)= A B for this warp's 16 rows and a 16-row tile (fp16 operands).
__device__ __forceinline__ void wgmma_m64n16k16_f16_rs(float (&d)[2][4], const uint32_t (&a)[4], uint64_t desc,
                                                       bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
        "+f"(d[1][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(int(accumulate)));
}
#endif  // SSA_HAVE_WGMMA

}  // namespace ssa
