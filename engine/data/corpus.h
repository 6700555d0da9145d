// Plain-text corpora and the sentencepiece tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/data/token_cache.h"

namespace ssalab {

struct Document {
  std::string path;
  std::string text;
};

// The corpus used when none is given: the reStructuredText sources of the
// Python 3.11 documentation (Debian package python3.11-doc, ~11 MB).
std::string default_corpus_path();

// Reads one UTF-8 text file, or every regular file below a folder (recursive,
// sorted by path so the order is the same on every machine). Throws Error
// naming the file when it is missing or unreadable, contains a NUL byte
// (binary), is not valid UTF-8, or when the corpus holds no text at all.
// In a folder, empty/whitespace-only files and hidden entries (".git",
// ".DS_Store": names starting with '.') are skipped; any other binary file is
// an error.
std::vector<Document> read_corpus(const std::string& path);

// Byte offset of the first invalid UTF-8 sequence (truncated, stray
// continuation, overlong, surrogate, above U+10FFFF), or npos when valid.
std::size_t find_invalid_utf8(std::string_view text);

class Tokenizer {
 public:
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Trains a unigram sentencepiece model on `docs`; writes it to model_path
  // atomically. Deterministic for the same docs and vocab size.
  static Tokenizer train(const std::vector<Document>& docs, int vocab_size, const std::string& model_path);
  static Tokenizer load(const std::string& model_path);       // throws Error on missing/corrupt file
  static Tokenizer from_bytes(const std::string& model_proto);  // serialized ModelProto

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::string piece(int id) const;
  int vocab_size() const;
  int eos_id() const;
  const std::string& serialized() const;  // the .model bytes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Token ids of a corpus, split deterministically into train and validation:
// a document goes to validation when a hash of its path (relative to the
// corpus root) falls in the val_fraction bucket; documents are joined with
// eos. Cached in a binary file keyed by the tokenizer, val_fraction and the
// corpus (relative paths, sizes, content hashes); a stale or corrupt cache is
// rebuilt. An empty cache_path disables the cache. With >= 2 documents both
// sides are non-empty; a single document is split by tokens (its last
// val_fraction, or 5% when val_fraction is 0, goes to validation).
TokenData load_token_data(const std::vector<Document>& docs, const std::string& corpus_root,
                          const Tokenizer& tok, const std::string& cache_path, double val_fraction = 0.05);

}  // namespace ssalab
