// The five stages of a tokenizer.json pipeline, as HF `tokenizers` runs them:
//
//   text -> [added tokens split off] -> normalizer -> pre-tokenizer -> model
//        -> post-processor (ids)            ...and back: ids -> decoder -> text
//
// Each stage kind is one small class in the matching .cpp file
// (normalizers.cpp, pre_tokenizers.cpp, bpe.cpp, post_processors.cpp,
// decoders.cpp), chosen by one factory per stage from the JSON object's
// "type" key. A new tokenizer family should need a new stage class at most,
// never a new tokenizer.
//
// We only produce ids, not offsets, so the stages work on plain strings where
// HF tracks alignments; where HF's result depends on an offset (Metaspace's
// prepend_scheme "first") the piece carries the one bit that matters.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ssalab::tokenizer {

// Where a JSON value sits, for error messages: file + JSON pointer.
struct JsonPlace {
  std::string file;
  std::string pointer;  // "" for the root, else "/pre_tokenizer/pretokenizers/0"

  JsonPlace at(const std::string& key) const { return {file, pointer + "/" + key}; }
  JsonPlace at(size_t index) const { return {file, pointer + "/" + std::to_string(index)}; }
  [[noreturn]] void fail(const std::string& message) const;
};

// Typed field access that fails with the field's place.
const nlohmann::json& field(const nlohmann::json& obj, const char* key, const JsonPlace& at);
std::string string_field(const nlohmann::json& obj, const char* key, const JsonPlace& at);
bool bool_field(const nlohmann::json& obj, const char* key, const JsonPlace& at, bool fallback);
// The object's "type" key (fails when absent or not a string).
std::string type_of(const nlohmann::json& obj, const JsonPlace& at);
[[noreturn]] void unknown_type(const std::string& stage, const std::string& type,
                               const std::vector<const char*>& supported, const JsonPlace& at);

// A stage's "pattern": {"String": "..."} (a literal) or {"Regex": "..."}.
class Regex;
std::string pattern_of(const nlohmann::json& obj, const JsonPlace& at);
std::unique_ptr<Regex> compile_pattern(const nlohmann::json& obj, const JsonPlace& at);

// A span of text between the pre-tokenizer's cuts.
struct Piece {
  std::string text;
  bool at_start = false;  // begins at byte 0 of the text given to encode()
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their finer split; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word.
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  virtual int32_t token_to_id(std::string_view token) const = 0;  // -1 when absent
  virtual const std::string* id_to_token(int32_t id) const = 0;  // nullptr when absent
  virtual size_t vocab_size() const = 0;                          // tokens in the model's vocab
  virtual int32_t id_bound() const = 0;                            // one more than its largest id
  virtual std::string name() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
  // Special tokens a template puts around the text: used to infer BOS/EOS
  // when no tokenizer_config.json names them.
  virtual void template_ids(std::vector<int32_t>& before, std::vector<int32_t>& after) const {
    (void)before;
    (void)after;
  }
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Factories. `json` is the stage's object; null JSON is the caller's concern
// (no stage). Throw TokenizerError naming `at`.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json, const JsonPlace& at);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json, const JsonPlace& at);
std::unique_ptr<Model> make_model(const nlohmann::json& json, const JsonPlace& at);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& json, const JsonPlace& at);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& json, const JsonPlace& at);

// A post-processor that writes `before` $A `after` (tokenizer_config.json's
// add_bos_token / add_eos_token, as transformers rebuilds it).
std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<int32_t> before, std::vector<int32_t> after);

// GPT-2's byte <-> printable character table (ByteLevel stages).
const std::string& byte_to_char(unsigned char b);  // UTF-8 of the character
int char_to_byte(char32_t c);                        // -1 when not in the table

}  // namespace ssalab::tokenizer
