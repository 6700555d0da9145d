// load_tokenizer(): tokenizer.json through HfTokenizer, or tokenizer.model
// through the engine's sentencepiece wrapper (engine/data/corpus.h), behind
// the one Tokenizer interface. This file is the only part of the tokenizer
// module that needs the engine library (corpus.cpp, which dlopen()s
// libsentencepiece); the rest builds without LibTorch.
#include <filesystem>
#include <unordered_map>

#include "engine/data/corpus.h"
#include "engine/tokenizer/hf_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"

namespace ssalab::tokenizer {

namespace fs = std::filesystem;

namespace {

// corpus.h's Tokenizer has no bos_id() and no piece -> id lookup: both are
// taken from the pieces themselves ("<s>" is sentencepiece's default BOS).
class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(::ssalab::Tokenizer sp, std::string path) : sp_(std::move(sp)), path_(std::move(path)) {
    const int n = sp_.vocab_size();
    for (int id = 0; id < n; ++id) by_piece_.emplace(sp_.piece(id), id);
    auto it = by_piece_.find("<s>");
    bos_ = it == by_piece_.end() ? -1 : it->second;
  }

  using Tokenizer::encode;
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    // sentencepiece never parses control symbols out of text, so
    // parse_special has nothing to switch off.
    std::vector<int32_t> ids;
    if (options.add_special_tokens && bos_ >= 0) ids.push_back(bos_);
    for (int id : sp_.encode(std::string(text))) ids.push_back(id);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    std::vector<int> keep;
    keep.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_.vocab_size()) continue;
      if (skip_special_tokens && is_special(id)) continue;
      keep.push_back(id);
    }
    return sp_.decode(keep);
  }
  int32_t vocab_size() const override { return sp_.vocab_size(); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return sp_.eos_id(); }
  int32_t token_to_id(std::string_view token) const override {
    auto it = by_piece_.find(std::string(token));
    return it == by_piece_.end() ? -1 : it->second;
  }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < sp_.vocab_size() ? sp_.piece(id) : std::string();
  }
  bool is_special(int32_t id) const override { return id == bos_ || id == sp_.eos_id(); }
  std::string describe() const override {
    return "sentencepiece " + path_ + ", " + std::to_string(sp_.vocab_size()) + " pieces";
  }

 private:
  ::ssalab::Tokenizer sp_;
  std::string path_;
  std::unordered_map<std::string, int32_t> by_piece_;
  int32_t bos_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& folder_or_file) {
  const fs::path p(folder_or_file);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json")) return HfTokenizer::from_file((p / "tokenizer.json").string());
    if (fs::exists(p / "tokenizer.model")) return load_tokenizer((p / "tokenizer.model").string());
    throw TokenizerError(folder_or_file + ": no tokenizer.json or tokenizer.model in this folder");
  }
  if (!fs::exists(p, ec)) throw TokenizerError(folder_or_file + ": no such file or folder");
  if (p.extension() == ".json") return HfTokenizer::from_file(p.string());
  try {
    return std::make_unique<SentencePieceTokenizer>(::ssalab::Tokenizer::load(p.string()), p.string());
  } catch (const TokenizerError&) {
    throw;
  } catch (const Error& e) {
    throw TokenizerError(folder_or_file + ": " + e.what());
  }
}

std::unique_ptr<Tokenizer> wrap_sentencepiece(const ::ssalab::Tokenizer& sp, const std::string& name) {
  return std::make_unique<SentencePieceTokenizer>(::ssalab::Tokenizer::from_bytes(sp.serialized()), name);
}

}  // namespace ssalab::tokenizer
