// The token cache's file format (engine/data/token_cache.h), read as
// untrusted data: what reads back is exactly what was written, and any other
// file, however close, reads as "no cache". (load_token_data's use of the
// cache, with a real tokenizer, is in test_corpus.cpp.)
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "engine/data/token_cache.h"
#include "engine/util/files.h"
#include "tests/test_support.h"

using namespace ssalab;

namespace {

constexpr uint64_t kKey = 0x0123456789abcdefull;
constexpr int kVocab = 1000;

TokenData some_tokens() {
  TokenData d;
  for (int i = 0; i < 300; ++i) d.train.push_back((i * 37) % kVocab);
  for (int i = 0; i < 40; ++i) d.val.push_back((i * 11) % kVocab);
  return d;
}

template <class T>
void poke(std::string& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}
// The checksum made to match again after an edit, as a forger would.
void fix_checksum(std::string& b) {
  poke<uint64_t>(b, 40, token_cache_checksum(std::string_view(b).substr(kTokenCacheHeaderBytes)));
}

}  // namespace

TEST_CASE("token cache: what reads back is what was written", "[cache]") {
  const TokenData d = some_tokens();
  const std::string bytes = serialize_token_cache(kKey, d);
  CHECK(bytes.size() == kTokenCacheHeaderBytes + 4 * (300 + 40));
  auto back = parse_token_cache(bytes, kKey, kVocab);
  REQUIRE(back);
  CHECK(back->train == d.train);
  CHECK(back->val == d.val);

  auto empty = parse_token_cache(serialize_token_cache(kKey, TokenData{}), kKey, kVocab);
  REQUIRE(empty);
  CHECK(empty->train.empty());

  test::TempDir dir;
  const std::string path = dir / "cache/tokens.bin";
  CHECK_FALSE(read_token_cache(path, kKey, kVocab));  // missing
  make_dirs(dir / "cache");
  write_token_cache(path, kKey, d);
  CHECK(read_file(path) == bytes);
  auto from_file = read_token_cache(path, kKey, kVocab);
  REQUIRE(from_file);
  CHECK(from_file->val == d.val);
  CHECK_FALSE(read_token_cache(dir.str(), kKey, kVocab));  // a folder
}

TEST_CASE("token cache: any other file reads as no cache", "[cache]") {
  const std::string good = serialize_token_cache(kKey, some_tokens());

  SECTION("another key, a different vocabulary") {
    CHECK_FALSE(parse_token_cache(good, kKey + 1, kVocab));
    CHECK_FALSE(parse_token_cache(good, kKey, 500));  // ids up to 999
  }
  SECTION("every single-bit change of the header") {
    for (size_t byte = 0; byte < kTokenCacheHeaderBytes; ++byte)
      for (int bit = 0; bit < 8; ++bit) {
        std::string b = good;
        b[byte] ^= char(1 << bit);
        INFO("byte " << byte << " bit " << bit);
        CHECK_FALSE(parse_token_cache(b, kKey, kVocab));
      }
  }
  SECTION("cut anywhere") {
    for (size_t n = 0; n < good.size(); n += 7) CHECK_FALSE(parse_token_cache(good.substr(0, n), kKey, kVocab));
  }
  SECTION("counts that lie, with the checksum forged to match") {
    std::string huge = good;
    poke<uint64_t>(huge, 24, ~0ull);  // n_train: 2^64 - 1 (would size a vector past memory)
    CHECK_FALSE(parse_token_cache(huge, kKey, kVocab));
    std::string wrap = good;
    poke<uint64_t>(wrap, 24, 301);  // n_val then disagrees with the size
    CHECK_FALSE(parse_token_cache(wrap, kKey, kVocab));
    std::string odd = good + "x";
    fix_checksum(odd);
    CHECK_FALSE(parse_token_cache(odd, kKey, kVocab));
  }
  SECTION("ids outside the vocabulary, with the checksum forged to match") {
    for (int32_t id : {kVocab, -1, INT32_MIN}) {
      std::string b = good;
      poke<int32_t>(b, kTokenCacheHeaderBytes + 4 * 310, id);  // in val
      fix_checksum(b);
      INFO("id " << id);
      CHECK_FALSE(parse_token_cache(b, kKey, kVocab));
    }
    std::string ok = good;
    poke<int32_t>(ok, kTokenCacheHeaderBytes, kVocab - 1);
    fix_checksum(ok);
    CHECK(parse_token_cache(ok, kKey, kVocab));
  }
}
