// One tokenizer interface for the two formats a model folder can bring:
//
//   tokenizer.json   Hugging Face `tokenizers` format, run by HfTokenizer
//                    (engine/tokenizer/hf_tokenizer.h) through the same five
//                    stages as the Rust library, giving the same ids;
//   tokenizer.model  a sentencepiece model, run by libsentencepiece through
//                    the engine's corpus.h wrapper (load.cpp).
//
// load_tokenizer() picks the one a folder (or file) holds. The tokenizer.json
// implementation itself is plain C++17 (nlohmann-json, PCRE2, utf8proc) and
// does not need LibTorch; only load.cpp, which reaches sentencepiece through
// the engine, is compiled into the engine library.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/util/error.h"

namespace ssalab {
class Tokenizer;  // engine/data/corpus.h: the sentencepiece wrapper
}  // namespace ssalab

namespace ssalab::tokenizer {

// Everything a user can get wrong: unreadable or malformed files, stages we
// do not support, invalid input text. The message names the file and, for
// tokenizer.json, the JSON path of the offending value (e.g.
// "/pre_tokenizer/pretokenizers/0/pattern").
struct TokenizerError : Error {
  explicit TokenizerError(const std::string& what) : Error(what) {}
};

struct EncodeOptions {
  // Run the post-processor: BOS/EOS and the other template tokens (HF's
  // `add_special_tokens`). It never changes how the text itself is split.
  bool add_special_tokens = true;
  // Recognise special tokens written in the text ("<|im_start|>", "<s>").
  // Off = HF's `split_special_tokens=True` / `encode_special_tokens`: special
  // strings are tokenized as plain text. Non-special added tokens are still
  // recognised either way, as in HF.
  bool parse_special = true;
};

// encode() and decode() may be called from several threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text must be valid UTF-8 (throws TokenizerError naming the byte offset
  // otherwise: HF's Python API cannot even receive such text).
  virtual std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const = 0;
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
    EncodeOptions o;
    o.add_special_tokens = add_special_tokens;
    return encode(text, o);
  }
  // Unknown ids are skipped, as HF does.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;

  // One more than the largest id, added tokens included: the rows an
  // embedding table needs (the number of distinct tokens when ids are dense).
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t eos_id() const = 0;  // -1 when the tokenizer has none
  virtual int32_t token_to_id(std::string_view token) const = 0;  // -1 when unknown
  virtual std::string id_to_token(int32_t id) const = 0;          // "" when out of range
  virtual bool is_special(int32_t id) const = 0;
  // One line for logs and the UI: "tokenizer.json: BPE, 128256 tokens".
  virtual std::string describe() const = 0;
};

// A folder holding tokenizer.json (preferred) or tokenizer.model, or the path
// of either file. With a tokenizer_config.json beside tokenizer.json the ids
// are those of transformers' AutoTokenizer, else those of `tokenizers`
// (hf_tokenizer.h says where they differ). Throws TokenizerError when there
// is neither file. Defined in load.cpp (engine library).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& folder_or_file);
// The engine's sentencepiece tokenizer (a training session's) behind the same
// interface; `name` is what describe() shows. Defined in load.cpp.
std::unique_ptr<Tokenizer> wrap_sentencepiece(const ::ssalab::Tokenizer& sp, const std::string& name);

}  // namespace ssalab::tokenizer
