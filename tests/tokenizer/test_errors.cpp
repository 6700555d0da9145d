// Bad inputs: each error names the file and the JSON path of what is wrong,
// and unsupported stage types list the supported ones.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "engine/tokenizer/tokenizer.h"
#include "engine/util/files.h"  // remove_tree: std::filesystem::remove_all crashes beside PyTorch's libtorch
#include "tests/tokenizer/tokenizer_fixtures.h"

using namespace ssalab::tokenizer;
using namespace ssalab::tokenizer::test;
using json = nlohmann::json;
using Catch::Matchers::Contains;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const TokenizerError& e) {
    return e.what();
  }
  FAIL("no TokenizerError thrown");
  return "";
}

std::string load_error(const json& overrides) {
  return error_of([&] { HfTokenizer(tiny_json(overrides), "models/x/tokenizer.json"); });
}

}  // namespace

TEST_CASE("errors: malformed JSON names the file and the place", "[tokenizer][errors]") {
  const std::string msg = error_of([] { HfTokenizer("{\"model\": {", "models/x/tokenizer.json"); });
  CHECK_THAT(msg, Contains("models/x/tokenizer.json") && Contains("malformed JSON"));
  CHECK_THAT(error_of([] { HfTokenizer("[1, 2]", "t.json"); }), Contains("expected a JSON object"));
  // a number past double's range (found by fuzz_tokenizer): refused like any malformed file
  CHECK_THAT(error_of([] { HfTokenizer("{\"version\": 12E8154}", "t.json"); }), Contains("t.json: malformed JSON"));
  CHECK_THAT(error_of([] { HfTokenizer("{\"version\": \"1.0\"}", "t.json"); }), Contains("missing key \"model\""));
  CHECK_THAT(load_error({{"version", "2.0"}}), Contains("/version") && Contains("unknown tokenizer.json version"));
}

TEST_CASE("errors: unknown stage types say which and list the supported ones", "[tokenizer][errors]") {
  std::string msg = load_error({{"pre_tokenizer", {{"type", "BertPreTokenizer"}}}});
  CHECK_THAT(msg, Contains("models/x/tokenizer.json: at /pre_tokenizer/type") &&
                      Contains("unsupported pre-tokenizer type \"BertPreTokenizer\"") &&
                      Contains("supported: Split, ByteLevel, Metaspace"));
  msg = load_error({{"pre_tokenizer",
                     {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}}, {{"type", "Punctuation"}}}}}}});
  CHECK_THAT(msg, Contains("/pre_tokenizer/pretokenizers/1/type") && Contains("\"Punctuation\""));
  CHECK_THAT(load_error({{"normalizer", {{"type", "Precompiled"}}}}),
             Contains("/normalizer/type") && Contains("unsupported normalizer type \"Precompiled\"") &&
                 Contains("NFKC"));
  CHECK_THAT(load_error({{"decoder", {{"type", "CTC"}}}}), Contains("unsupported decoder type \"CTC\""));
  CHECK_THAT(load_error({{"post_processor", {{"type", "Magic"}}}}),
             Contains("unsupported post-processor type \"Magic\"") && Contains("TemplateProcessing"));
  CHECK_THAT(load_error({{"model", {{"type", "WordPiece"}, {"vocab", json::object()}}}}),
             Contains("/model/type") && Contains("unsupported model type \"WordPiece\" (supported: BPE)"));
  CHECK_THAT(load_error({{"normalizer", {{"kind", "NFC"}}}}), Contains("/normalizer") && Contains("\"type\""));
}

TEST_CASE("errors: missing or inconsistent vocab and merges", "[tokenizer][errors]") {
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}}}),
             Contains("/model") && Contains("missing vocab/merges"));
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {"a q"}}}}}),
             Contains("/model/merges/0") && Contains("\"q\" is not in the vocabulary"));
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {"a a"}}}}}),
             Contains("merge result \"aa\""));
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"aa", 1}}}, {"merges", {"a a a"}}}}}),
             Contains("/model/merges/0") && Contains("not two tokens"));
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", -3}}}, {"merges", json::array()}}}}),
             Contains("/model/vocab/a"));
  // found by fuzz_tokenizer: one id of 2^31-1 asked for a table of that many tokens
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 2147483647}}}, {"merges", json::array()}}}}),
             Contains("/model/vocab") && Contains("ids must be dense"));
  CHECK_THAT(load_error({{"model", {{"type", "BPE"}, {"vocab", json::object()}, {"merges", json::array()},
                                    {"dropout", 0.1}}}}),
             Contains("/model/dropout"));
}

TEST_CASE("errors: bad fields of known stages", "[tokenizer][errors]") {
  CHECK_THAT(load_error({{"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                                            {"behavior", "Isolated"}, {"invert", false}}}}),
             Contains("/pre_tokenizer/pattern") && Contains("invalid regex"));
  CHECK_THAT(load_error({{"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", "x"}}},
                                            {"behavior", "Sideways"}, {"invert", false}}}}),
             Contains("/pre_tokenizer/behavior") && Contains("Sideways"));
  CHECK_THAT(load_error({{"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "ab"}}}}),
             Contains("/pre_tokenizer/replacement") && Contains("single character"));
  CHECK_THAT(load_error({{"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "_"}, {"prepend_scheme", "twice"}}}}),
             Contains("/pre_tokenizer/prepend_scheme"));
  CHECK_THAT(load_error({{"post_processor", {{"type", "TemplateProcessing"}, {"single", {"<x>", "$A"}},
                                             {"special_tokens", json::object()}}}}),
             Contains("/post_processor/single/0") && Contains("\"<x>\" is not in special_tokens"));
  CHECK_THAT(load_error({{"added_tokens", {{{"content", 3}}}}}), Contains("/added_tokens/0/content"));
}

TEST_CASE("errors: tokenizer_config.json and text", "[tokenizer][errors]") {
  const std::string msg = error_of([] {
    HfTokenizer(tiny_json({}), "t.json", R"({"bos_token": "<nope>", "add_bos_token": true})", "cfg/tokenizer_config.json");
  });
  CHECK_THAT(msg, Contains("cfg/tokenizer_config.json: at /bos_token") && Contains("\"<nope>\" is not a token"));
  CHECK_THAT(error_of([] { HfTokenizer(tiny_json({}), "t.json", "{oops", "cfg.json"); }),
             Contains("cfg.json: malformed JSON"));
  // invalid UTF-8: HF's Python API cannot receive it; we refuse it with its place
  const HfTokenizer tok(tiny_json({}), "t.json");
  CHECK_THAT(error_of([&] { tok.encode("abc\xFF" "def"); }), Contains("not valid UTF-8") && Contains("byte 3"));
  CHECK_THAT(error_of([&] { tok.encode("ab\xE2\x96"); }), Contains("byte 2"));
  CHECK(tok.decode({999, -1, 0}) == "a");  // unknown ids are skipped, as HF does
  CHECK(tok.id_to_token(999).empty());
  CHECK(tok.token_to_id("zz") == -1);
  CHECK(tok.encode("").empty());
}

TEST_CASE("errors: load_tokenizer on missing files", "[tokenizer][errors]") {
  const auto dir = std::filesystem::temp_directory_path() / ("ssalab_tok_err_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  CHECK_THAT(error_of([&] { load_tokenizer(dir.string()); }), Contains("no tokenizer.json or tokenizer.model"));
  CHECK_THAT(error_of([&] { load_tokenizer((dir / "nothing.json").string()); }), Contains("no such file"));
  std::ofstream(dir / "tokenizer.model") << "not a sentencepiece model";
  CHECK_THAT(error_of([&] { load_tokenizer(dir.string()); }), Contains("tokenizer.model"));
  ssalab::remove_tree(dir.string());
}
