// Shared device helpers for the ssalab kernels: dtypes, tensor-core MMA,
// ldmatrix, cp.async, and a swizzled shared-memory tile layout.
//
// Every attention kernel here uses the sm_80+ warp-level MMA m16n8k16 with
// fp32 accumulation (it runs on sm_80 and sm_90a alike).  Fragment layouts,
// for lane = 4*g + c (g = lane/4, c = lane%4):
//   A (16x16, row major): a0 (g, 2c..2c+1)  a1 (g+8, 2c..)  a2 (g, 2c+8..)  a3 (g+8, 2c+8..)
//   B (16x8,  col major): b0 (k 2c..2c+1, n g)  b1 (k 2c+8.., n g)
//   C (16x8):             c0,c1 (g, 2c..2c+1)   c2,c3 (g+8, 2c..2c+1)
// So a C tile pair (keys 16j..16j+15) converts to an A fragment in registers,
// the FlashAttention-2 trick used by every P*V product below.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "api_types.cuh"

namespace ssa {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// An attribute of the current GPU, or `fallback` where it cannot be read.
// Launchers ask once per process (a static) and shape their launches by it.
inline int current_device_attribute(cudaDeviceAttr attribute, int fallback) {
  int device = 0, value = fallback;
  if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&value, attribute, device);
  return value;
}

// ------------------------------------------------------------ dtype traits
template <typename T> struct TypeOf;
template <> struct TypeOf<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16(x); }
  static __device__ __forceinline__ float2 unpack(uint32_t u) {
    __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&u);
    return __bfloat1622float2(h);
  }
};
template <> struct TypeOf<__half> {
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half(x); }
  static __device__ __forceinline__ float2 unpack(uint32_t u) {
    __half2 h = *reinterpret_cast<__half2*>(&u);
    return __half22float2(h);
  }
};

// c += a * b, m16n8k16, fp32 accumulate.
template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldsm_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
// 16-byte async copy global -> shared; zero-fills when !valid (src is not read then).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
// 4-byte async copy (through L1); zero-fills when !valid.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Shared tile of `rows` x D elements (16-bit), stored as 16-byte chunks with the
// chunk index XOR-swizzled by (row & 7): the 8 row addresses of one ldmatrix
// then hit 8 different bank groups.  Offsets in units of 16-bit elements.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// 2^x on the special-function unit, denormal results flushed to zero.  exp2f()
// wraps the same instruction in a range check and two multiplies to produce
// denormals, which probabilities summed in fp32 never need; in the softmax
// loops that was a third of the instructions per score.  -inf gives +0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Row max / sum over the 4 lanes that share one C-fragment row.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Exclusive prefix sum over the 1024 threads of a CTA: `own` is this thread's
// value; returns the sum of the lower threads' values.  `part` is shared
// memory of 1024 ints; afterwards part[1023] holds the total.  (Hillis-Steele:
// log2(1024) rounds; these scans run once per (batch, head), not in a hot loop.)
__device__ __forceinline__ int block_exclusive_scan_1024(int* part, int own) {
  part[threadIdx.x] = own;
  __syncthreads();
  for (int d = 1; d < 1024; d <<= 1) {
    int v = threadIdx.x >= d ? part[threadIdx.x - d] : 0;
    __syncthreads();
    part[threadIdx.x] += v;
    __syncthreads();
  }
  return part[threadIdx.x] - own;
}

// Dispatch helpers: runtime dtype / head dim -> template arguments.
#define SSA_DISPATCH_DTYPE(dt, T, ...)          \
  do {                                          \
    if ((dt) == ::ssa::DType::bf16) {           \
      using T = __nv_bfloat16;                  \
      __VA_ARGS__                               \
    } else {                                    \
      using T = __half;                         \
      __VA_ARGS__                               \
    }                                           \
  } while (0)
#define SSA_DISPATCH_HEADDIM(d, DC, ...)        \
  do {                                          \
    if ((d) == 64) {                            \
      constexpr int DC = 64;                    \
      __VA_ARGS__                               \
    } else {                                    \
      constexpr int DC = 128;                   \
      __VA_ARGS__                               \
    }                                           \
  } while (0)

}  // namespace ssa
