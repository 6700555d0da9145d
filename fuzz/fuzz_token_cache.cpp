// The token cache (engine/data/token_cache.h): a binary file of token ids
// that a run reads back before tokenizing a corpus again. Anything that does
// not check out must read as "no cache"; what does read must be exactly what
// writing it back produces.
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/data/token_cache.h"
#include "fuzz/fuzz_input.h"

namespace {

constexpr int kVocabSize = 32000;

void check(const std::string& bytes, uint64_t key) {
  auto d = ssalab::parse_token_cache(bytes, key, kVocabSize);
  if (d && ssalab::serialize_token_cache(key, *d) != bytes) std::abort();  // read != written
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ssalab::fuzz::MemoryFile file("token_cache");
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // the key the file claims, so that the checks behind the key are reached
  uint64_t key = 0;
  if (size >= 24) std::memcpy(&key, data + 16, sizeof key);
  check(bytes, key);
  // the same through the file reader
  auto from_file = ssalab::read_token_cache(file.write(data, size), key, kVocabSize);
  if (from_file.has_value() != ssalab::parse_token_cache(bytes, key, kVocabSize).has_value()) std::abort();
  // the same bytes with a matching checksum, so that mutations of the
  // counts and ids reach the checks behind it
  if (size >= ssalab::kTokenCacheHeaderBytes) {
    std::string fixed = bytes;
    const uint64_t sum = ssalab::token_cache_checksum(std::string_view(fixed).substr(ssalab::kTokenCacheHeaderBytes));
    std::memcpy(fixed.data() + 40, &sum, sizeof sum);
    check(fixed, key);
  }
  return 0;
}
