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

// The attention contract of every kernel (docs/method.md "Attention with a
// cache"): Tq queries at positions q_offset .. q_offset + Tq - 1 against Tk
// keys at positions 0 .. Tk - 1 (a KV cache, a chunk of a prefill, or with
// q_offset = 0 and Tq = Tk plain causal self-attention); q_offset + Tq <= Tk.
// The query at position p sees keys 0 .. p; its own block is p / bs, and block
// j can be selected once it is complete at p: (j + 1) * bs - 1 <= p.
//
// Shape checks shared by every kernel; "" when fine, else the reason.  Block
// size and k are bounded by the keys, as the engine's check_sparse_spec().
inline std::string check_common(int B, int Hq, int Hkv, int Tq, int Tk, int q_offset, int D, int bs, int K) {
  if (B < 1 || Tq < 1 || Tk < 1) return "empty batch or sequence";
  if (q_offset < 0 || int64_t(q_offset) + Tq > Tk)
    return "queries at positions [" + std::to_string(q_offset) + ", " + std::to_string(int64_t(q_offset) + Tq) +
           ") need keys up to there, but there are " + std::to_string(Tk);
  if (Hkv < 1 || Hq % Hkv != 0) return "query heads must be a multiple of kv heads";
  if (Hq / Hkv > 32) return "GQA ratio above 32 is not supported by the CUDA kernels";
  if (D != 64 && D != 128) return "CUDA kernels support head dim 64 and 128 only";
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128) return "CUDA kernels support block sizes 16, 32, 64, 128";
  if (bs > Tk) return "block size larger than the sequence";
  const int nb = (Tk + bs - 1) / bs;
  if (K < 1 || K > nb) return "top-k must be in 1..number of blocks";
  return "";
}

// "" when the params describe whole-sequence self-attention (Tq = Tk, no
// offset), else `who` + why not: for the kernels that run only in training.
inline std::string check_whole_sequence(int Tq, int Tk, int q_offset, const char* who) {
  if (Tq == Tk && q_offset == 0) return "";
  return std::string(who) + " needs the whole sequence (Tq = Tk, q_offset 0), as in training; got Tq " +
         std::to_string(Tq) + ", Tk " + std::to_string(Tk) + ", q_offset " + std::to_string(q_offset);
}

#define SSA_CUDA_CHECK(expr)                                                              \
  do {                                                                                    \
    cudaError_t err__ = (expr);                                                           \
    if (err__ != cudaSuccess) return std::string(#expr ": ") + cudaGetErrorString(err__); \
  } while (0)

}  // namespace ssa
