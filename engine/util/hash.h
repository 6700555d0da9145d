// Small non-cryptographic hashes: FNV-1a for cache keys and file digests,
// splitmix64 for deterministic per-(seed, step, micro-batch) random streams.
// Their values are part of on-disk cache names and of training determinism:
// changing them invalidates caches and changes runs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ssalab {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}
inline uint64_t fnv1a(std::string_view s, uint64_t h = kFnvOffset) { return fnv1a(s.data(), s.size(), h); }
inline uint64_t fnv1a_u64(uint64_t v, uint64_t h) { return fnv1a(&v, sizeof v, h); }

// The splitmix64 finaliser: a cheap, well-mixed hash of a 64-bit value.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace ssalab
