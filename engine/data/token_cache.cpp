#include "engine/data/token_cache.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/hash.h"

namespace ssalab {

namespace {

constexpr char kMagic[8] = {'S', 'S', 'A', 'L', 'T', 'O', 'K', '\0'};

template <class T>
T get(std::string_view b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <class T>
void put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof v);
}

bool ids_in_range(const std::vector<int32_t>& ids, int vocab_size) {
  return std::all_of(ids.begin(), ids.end(), [&](int32_t id) { return id >= 0 && id < vocab_size; });
}

}  // namespace

uint64_t token_cache_checksum(std::string_view token_bytes) { return fnv1a(token_bytes); }

std::optional<TokenData> parse_token_cache(std::string_view b, uint64_t key, int vocab_size) {
  if (b.size() < kTokenCacheHeaderBytes || std::memcmp(b.data(), kMagic, 8) != 0) return std::nullopt;
  if (get<uint32_t>(b, 8) != kTokenCacheVersion || get<uint32_t>(b, 12) != 0 || get<uint64_t>(b, 16) != key)
    return std::nullopt;
  const std::string_view tokens = b.substr(kTokenCacheHeaderBytes);
  if (tokens.size() % sizeof(int32_t) != 0) return std::nullopt;
  // n_train and n_val come from the file: check them against its size before
  // they size anything
  const uint64_t n_tok = tokens.size() / sizeof(int32_t);
  const auto n_train = get<uint64_t>(b, 24), n_val = get<uint64_t>(b, 32);
  if (n_train > n_tok || n_val != n_tok - n_train) return std::nullopt;
  if (token_cache_checksum(tokens) != get<uint64_t>(b, 40)) return std::nullopt;
  TokenData d;
  d.train.resize(n_train);
  d.val.resize(n_val);
  // (an empty vector's data() may be null, which memcpy must not get even
  // for 0 bytes: found by fuzzing)
  if (n_train) std::memcpy(d.train.data(), tokens.data(), n_train * sizeof(int32_t));
  if (n_val) std::memcpy(d.val.data(), tokens.data() + n_train * sizeof(int32_t), n_val * sizeof(int32_t));
  // an id past the vocabulary would index past the embedding table
  if (!ids_in_range(d.train, vocab_size) || !ids_in_range(d.val, vocab_size)) return std::nullopt;
  return d;
}

std::string serialize_token_cache(uint64_t key, const TokenData& d) {
  std::string tokens;
  tokens.reserve((d.train.size() + d.val.size()) * sizeof(int32_t));
  tokens.append(reinterpret_cast<const char*>(d.train.data()), d.train.size() * sizeof(int32_t));
  tokens.append(reinterpret_cast<const char*>(d.val.data()), d.val.size() * sizeof(int32_t));
  std::string b;
  b.reserve(kTokenCacheHeaderBytes + tokens.size());
  b.append(kMagic, 8);
  put<uint32_t>(b, kTokenCacheVersion);
  put<uint32_t>(b, 0);
  put<uint64_t>(b, key);
  put<uint64_t>(b, d.train.size());
  put<uint64_t>(b, d.val.size());
  put<uint64_t>(b, token_cache_checksum(tokens));
  b += tokens;
  return b;
}

std::optional<TokenData> read_token_cache(const std::string& path, uint64_t key, int vocab_size) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  try {
    return parse_token_cache(read_file(path), key, vocab_size);
  } catch (const Error&) {
    return std::nullopt;  // unreadable cache: tokenize again
  }
}

void write_token_cache(const std::string& path, uint64_t key, const TokenData& d) {
  write_file_atomic(path, serialize_token_cache(key, d));
}

}  // namespace ssalab
