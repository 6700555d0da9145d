// The token cache: a corpus's token ids saved after its first tokenization,
// so that the next run on the same corpus and tokenizer starts at once. The
// file is read back as untrusted data (another run, a copied folder, a full
// disk may have left it half-written): anything that does not check out is
// "no cache" and the corpus is tokenized again, never an error or a crash.
//
// Layout (little-endian):
//   [0,8)   magic "SSALTOK\0"     [8,12)  u32 version   [12,16) u32 zero
//   [16,24) u64 key               [24,32) u64 n_train   [32,40) u64 n_val
//   [40,48) u64 FNV-1a of the token bytes
//   [48, ...) int32 train[n_train], int32 val[n_val]
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ssalab {

// Token ids of a corpus, split into training and validation text.
struct TokenData {
  std::vector<int32_t> train, val;
};

constexpr uint32_t kTokenCacheVersion = 1;
constexpr size_t kTokenCacheHeaderBytes = 48;

// The checksum stored at [40,48): FNV-1a over the token bytes after the header.
uint64_t token_cache_checksum(std::string_view token_bytes);

// The data in `bytes` when it is an intact cache written for `key` whose ids
// all lie in [0, vocab_size); otherwise nothing.
std::optional<TokenData> parse_token_cache(std::string_view bytes, uint64_t key, int vocab_size);
std::string serialize_token_cache(uint64_t key, const TokenData& d);

// The same for a file: nothing when it is missing or unreadable. The write is
// atomic, so a reader sees the old file or the new one, never half of one.
std::optional<TokenData> read_token_cache(const std::string& path, uint64_t key, int vocab_size);
void write_token_cache(const std::string& path, uint64_t key, const TokenData& d);

}  // namespace ssalab
