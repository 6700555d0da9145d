// A tokenizer.json pipeline (Hugging Face `tokenizers` format) that gives
// the same ids as the Rust library:
//
//   1. added tokens with normalized=false are cut out of the raw text
//      (leftmost-longest; single_word / lstrip / rstrip as HF applies them);
//   2. every other stretch is normalized, then added tokens with
//      normalized=true are cut out of the normalized text;
//   3. the remaining stretches are pre-tokenized into words, and the model
//      turns each word into ids;
//   4. the post-processor adds BOS/EOS etc. when add_special_tokens.
//
// decode() maps ids to token strings (special ones dropped on request) and
// runs the decoder.
//
// Without tokenizer_config.json the ids are those of `tokenizers`
// (Tokenizer.from_file). With it, those of transformers 5's AutoTokenizer:
// bos_token / eos_token name BOS and EOS; add_bos_token / add_eos_token
// replace the post-processor by "[bos] $A [eos]"; and a tokenizer_class that
// transformers builds from its own stages (LlamaTokenizer) gets those stages.
//
// Not kept: offsets, type ids, attention masks, pairs of sequences; the
// file's truncation and padding (transformers turns them off as well).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/tokenizer/stages.h"
#include "engine/tokenizer/tokenizer.h"

namespace ssalab::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool single_word = false;
  std::string pattern;  // what is matched: content, normalized when `normalized`
};

class AddedTokenMatcher;

class HfTokenizer final : public Tokenizer {
 public:
  // `tokenizer_json` is the file's text, `file` its name for messages;
  // `config_json` is tokenizer_config.json's text or empty.
  HfTokenizer(std::string_view tokenizer_json, const std::string& file, std::string_view config_json = {},
              const std::string& config_file = "tokenizer_config.json");
  ~HfTokenizer() override;

  // Reads tokenizer_config.json from the same folder when it exists.
  static std::unique_ptr<HfTokenizer> from_file(const std::string& tokenizer_json_path);

  using Tokenizer::encode;
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override;
  std::string describe() const override;

  const std::vector<AddedToken>& added_tokens() const { return added_; }

 private:
  void load_added_tokens(const nlohmann::json& list, const JsonPlace& at);
  void apply_config(std::string_view config_json, const std::string& config_file);
  void use_llama_class_pipeline(const nlohmann::json& config, const JsonPlace& at);
  // Steps 2-3 for one stretch of raw text.
  void encode_stretch(std::string_view raw, bool at_start, bool parse_special, std::vector<int32_t>& ids) const;

  std::string file_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;

  std::vector<AddedToken> added_;
  std::vector<int32_t> added_index_;  // id -> index into added_, -1 when not added
  std::unordered_map<std::string, int32_t> added_by_content_;
  std::unordered_set<std::string> special_contents_;
  std::unique_ptr<AddedTokenMatcher> raw_matcher_, normalized_matcher_;

  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace ssalab::tokenizer
