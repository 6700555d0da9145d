// load_tokenizer(): one interface over tokenizer.json (HfTokenizer) and
// tokenizer.model (libsentencepiece through corpus.h).
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "engine/data/corpus.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/files.h"  // remove_tree: std::filesystem::remove_all crashes beside PyTorch's libtorch
#include "engine/tokenizer/unicode.h"
#include "tests/tokenizer/tokenizer_fixtures.h"

using namespace ssalab::tokenizer;
using namespace ssalab::tokenizer::test;

namespace {

struct Folder {
  std::filesystem::path path;
  explicit Folder(const std::string& tag) {
    path = std::filesystem::temp_directory_path() / ("ssalab_tok_" + tag + "_" + std::to_string(::getpid()));
    ssalab::remove_tree(path.string());
    std::filesystem::create_directories(path);
  }
  ~Folder() { ssalab::remove_tree(path.string()); }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
  }
};

}  // namespace

TEST_CASE("load_tokenizer: a folder with tokenizer.json and tokenizer_config.json", "[tokenizer][load]") {
  Folder dir("llama3");
  dir.write("tokenizer.json", read_gz(fixture_dir() + "/llama3/tokenizer.json.gz"));
  dir.write("tokenizer_config.json", read_gz(fixture_dir() + "/llama3/tokenizer_config.json"));
  const auto tok = load_tokenizer(dir.path.string());
  CHECK(tok->vocab_size() == 128256);
  CHECK(tok->bos_id() == 128000);
  CHECK(tok->eos_id() == 128001);
  CHECK(tok->id_to_token(128000) == "<|begin_of_text|>");
  CHECK(tok->token_to_id("<|end_of_text|>") == 128001);
  CHECK(tok->is_special(128001));
  CHECK_FALSE(tok->is_special(9906));
  CHECK_THAT(tok->describe(), Catch::Matchers::Contains("BPE"));
  const std::vector<int32_t> ids = tok->encode("Hello world", false);
  CHECK(ids == std::vector<int32_t>{9906, 1917});
  CHECK(tok->decode(ids) == "Hello world");
  // the file alone: the same pipeline
  CHECK(load_tokenizer((dir.path / "tokenizer.json").string())->encode("Hello world", false) == ids);

  // special strings in the text: parsed by default, plain text when parse_special is off
  EncodeOptions opt;
  opt.add_special_tokens = false;
  CHECK(tok->encode("<|end_of_text|>", opt) == std::vector<int32_t>{128001});
  opt.parse_special = false;
  CHECK(tok->encode("<|end_of_text|>", opt).size() > 1);
  CHECK(tok->decode(tok->encode("<|end_of_text|>", opt)) == "<|end_of_text|>");
  CHECK(tok->decode({128000, 9906}, true) == "Hello");
}

TEST_CASE("load_tokenizer: tokenizer.model through sentencepiece", "[tokenizer][load]") {
  Folder dir("spm");
  std::vector<ssalab::Document> docs;
  std::string text;
  const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "tokens", "attention",
                         "sparse", "model", "layer", "head", "query", "key", "value", "softmax", "window", "block"};
  uint32_t seed = 7;
  for (int i = 0; i < 4000; ++i) {
    seed = seed * 1664525u + 1013904223u;
    text += words[(seed >> 16) % 20];
    text += (i % 13 == 12) ? ".\n" : " ";
  }
  docs.push_back({"doc.txt", text});
  ssalab::Tokenizer::train(docs, 300, (dir.path / "tokenizer.model").string());
  const auto tok = load_tokenizer(dir.path.string());
  CHECK_THAT(tok->describe(), Catch::Matchers::Contains("sentencepiece"));
  CHECK(tok->vocab_size() == 300);
  const auto ids = tok->encode("the lazy dog", false);
  REQUIRE_FALSE(ids.empty());
  CHECK(tok->decode(ids) == "the lazy dog");
  CHECK(tok->eos_id() >= 0);
  CHECK(tok->id_to_token(ids[0]) == ssalab::Tokenizer::load((dir.path / "tokenizer.model").string()).piece(ids[0]));
  CHECK(tok->token_to_id(tok->id_to_token(ids[0])) == ids[0]);
  if (tok->bos_id() >= 0) {
    CHECK(tok->encode("the lazy dog", true).front() == tok->bos_id());
    CHECK(tok->decode(tok->encode("the lazy dog", true), true) == "the lazy dog");
  }
  // a tokenizer.json next to it wins
  dir.write("tokenizer.json", read_gz(fixture_dir() + "/gpt2/tokenizer.json.gz"));
  CHECK_THAT(load_tokenizer(dir.path.string())->describe(), Catch::Matchers::Contains("tokenizer.json"));
}
