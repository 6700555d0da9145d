// Open-addressing hash tables keyed by byte strings, looked up by
// std::string_view without building a std::string (C++17's unordered_map
// cannot): the vocabulary, the BPE word cache, the merge ranks.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ssalab::tokenizer {

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t(n) * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

inline uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// string -> V. Keys live in one arena; no erase.
template <class V>
class StrTable {
 public:
  size_t size() const { return size_; }

  // Inserts or overwrites (the last value given for a key wins, as when
  // serde reads a JSON object with a repeated key).
  void put(std::string_view key, const V& value) {
    if ((size_ + 1) * 4 > slots_.size() * 3) grow();
    const uint64_t h = hash_bytes(key.data(), key.size());
    size_t i = h & mask_;
    while (slots_[i].used) {
      if (slots_[i].hash == h && view(slots_[i]) == key) {
        slots_[i].value = value;
        return;
      }
      i = (i + 1) & mask_;
    }
    Slot& s = slots_[i];
    s.used = true;
    s.hash = h;
    s.off = arena_.size();
    s.len = uint32_t(key.size());
    s.value = value;
    arena_.append(key.data(), key.size());
    ++size_;
  }

  const V* find(std::string_view key) const {
    if (slots_.empty()) return nullptr;
    const uint64_t h = hash_bytes(key.data(), key.size());
    size_t i = h & mask_;
    while (slots_[i].used) {
      if (slots_[i].hash == h && view(slots_[i]) == key) return &slots_[i].value;
      i = (i + 1) & mask_;
    }
    return nullptr;
  }

  template <class F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.used) f(view(s), s.value);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    size_t off = 0;
    uint32_t len = 0;
    bool used = false;
    V value{};
  };
  std::string_view view(const Slot& s) const { return std::string_view(arena_.data() + s.off, s.len); }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (!s.used) continue;
      size_t i = s.hash & mask_;
      while (slots_[i].used) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
  std::string arena_;
};

// (int32, int32) -> V, for BPE merges keyed by the pair of token ids.
template <class V>
class PairTable {
 public:
  void reserve(size_t n) {
    size_t cap = 64;
    while (cap * 3 < n * 4 + 4) cap *= 2;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  void put(int32_t a, int32_t b, const V& v) {
    if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.empty() ? 64 : slots_.size() * 2);
    const uint64_t k = key(a, b);
    size_t i = mix64(k) & mask_;
    while (slots_[i].used) {
      if (slots_[i].key == k) {
        slots_[i].value = v;
        return;
      }
      i = (i + 1) & mask_;
    }
    slots_[i] = Slot{k, v, true};
    ++size_;
  }
  const V* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    const uint64_t k = key(a, b);
    size_t i = mix64(k) & mask_;
    while (slots_[i].used) {
      if (slots_[i].key == k) return &slots_[i].value;
      i = (i + 1) & mask_;
    }
    return nullptr;
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key = 0;
    V value{};
    bool used = false;
  };
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  void rehash(size_t cap) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (!s.used) continue;
      size_t i = mix64(s.key) & mask_;
      while (slots_[i].used) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace ssalab::tokenizer
