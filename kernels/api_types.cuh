// Host-side types shared by every kernel's params struct.  Safe to include from
// plain C++ (only cuda_runtime.h), so engine code can fill params and call the
// launchers without compiling any device code.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace ssa {

enum class DType : int { bf16 = 0, fp16 = 1 };

inline const char* dtype_name(DType t) { return t == DType::bf16 ? "bf16" : "fp16"; }

// Strides (in elements) of a 4-d (B, H, T, D) tensor whose last dim is contiguous.
struct Strides4 {
  int64_t b = 0, h = 0, t = 0;
};

// Shape checks shared by every kernel; "" when fine, else the reason.
inline std::string check_common(int B, int Hq, int Hkv, int T, int D, int bs, int K) {
  if (B < 1 || T < 1) return "empty batch or sequence";
  if (Hkv < 1 || Hq % Hkv != 0) return "query heads must be a multiple of kv heads";
  if (Hq / Hkv > 32) return "GQA ratio above 32 is not supported by the CUDA kernels";
  if (D != 64 && D != 128) return "CUDA kernels support head dim 64 and 128 only";
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128) return "CUDA kernels support block sizes 16, 32, 64, 128";
  if (bs > T) return "block size larger than the sequence";
  const int nb = (T + bs - 1) / bs;
  if (K < 1 || K > nb) return "top-k must be in 1..number of blocks";
  return "";
}

#define SSA_CUDA_CHECK(expr)                                                              \
  do {                                                                                    \
    cudaError_t err__ = (expr);                                                           \
    if (err__ != cudaSuccess) return std::string(#expr ": ") + cudaGetErrorString(err__); \
  } while (0)

}  // namespace ssa
