// Each stage kind against small hand-made cases whose answers follow from
// HF's definitions (the split behaviours are those of tokenizers'
// normalizer.rs tests; the byte tables those of GPT-2).
#include <nlohmann/json.hpp>

#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/stages.h"
#include "engine/tokenizer/unicode.h"
#include "tests/tokenizer/tokenizer_fixtures.h"

using namespace ssalab::tokenizer;
using namespace ssalab::tokenizer::test;
using json = nlohmann::json;
using Strings = std::vector<std::string>;

namespace {

const JsonPlace kHere{"test.json", ""};

std::string normalized(const json& stage, std::string text) {
  make_normalizer(stage, kHere)->normalize(text);
  return text;
}

Strings pre_tokenized(const json& stage, const std::string& text, bool at_start = true) {
  std::vector<Piece> pieces{Piece{text, at_start}};
  make_pre_tokenizer(stage, kHere)->pre_tokenize(pieces);
  Strings out;
  for (const Piece& p : pieces) out.push_back(p.text);
  return out;
}

json split(const char* pattern, const char* behavior, bool invert = false, bool regex = false) {
  return {{"type", "Split"},
          {"pattern", {{regex ? "Regex" : "String", pattern}}},
          {"behavior", behavior},
          {"invert", invert}};
}

Strings decoded(const json& stage, Strings tokens) {
  make_decoder(stage, kHere)->decode_chain(tokens);
  return tokens;
}

}  // namespace

TEST_CASE("normalizers", "[tokenizer][stages]") {
  CHECK(normalized({{"type", "NFC"}}, "e\xCC\x81") == "\xC3\xA9");
  CHECK(normalized({{"type", "NFD"}}, "\xC3\xA9") == "e\xCC\x81");
  CHECK(normalized({{"type", "NFKC"}}, "\xEF\xAC\x81 \xE2\x91\xA0") == "fi 1");  // ligature, circled one
  CHECK(normalized({{"type", "NFKD"}}, "\xC3\xA9") == "e\xCC\x81");
  CHECK(normalized({{"type", "Lowercase"}}, "\xC3\x80" "B \xC4\xB0") == "\xC3\xA0" "b i\xCC\x87");
  CHECK(normalized({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}, " \t a b \xE3\x80\x80") ==
        "a b");
  CHECK(normalized({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, "  a ") == "a ");
  CHECK(normalized({{"type", "Sequence"}, {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}}}},
                   "caf\xC3\xA9") == "cafe");
  CHECK(normalized({{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}}, "ab") == "\xE2\x96\x81" "ab");
  CHECK(normalized({{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}}, "").empty());  // nothing to prepend to
  CHECK(normalized({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}, "a b  c") ==
        "a\xE2\x96\x81" "b\xE2\x96\x81\xE2\x96\x81" "c");
  CHECK(normalized({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}, "a  b   c d") ==
        "a b c d");
  CHECK(normalized({{"type", "Replace"}, {"pattern", {{"String", "a.b"}}}, {"content", "X"}}, "a.b axb") == "X axb");
  CHECK(normalized({{"type", "ByteLevel"}}, "a b") == "a\xC4\xA0" "b");
}

TEST_CASE("pre-tokenizers: Split behaviours and invert", "[tokenizer][stages]") {
  const std::string text = "a-b--c";
  CHECK(pre_tokenized(split("-", "Isolated"), text) == Strings{"a", "-", "b", "-", "-", "c"});
  CHECK(pre_tokenized(split("-", "Removed"), text) == Strings{"a", "b", "c"});
  CHECK(pre_tokenized(split("-", "MergedWithPrevious"), text) == Strings{"a-", "b-", "-", "c"});
  CHECK(pre_tokenized(split("-", "MergedWithNext"), text) == Strings{"a", "-b", "-", "-c"});
  CHECK(pre_tokenized(split("-", "Contiguous"), text) == Strings{"a", "-", "b", "--", "c"});
  CHECK(pre_tokenized(split("-", "Removed", true), text) == Strings{"-", "-", "-"});
  CHECK(pre_tokenized(split("[a-z]+", "Removed", true, true), "ab, cd!") == Strings{"ab", "cd"});
}

TEST_CASE("pre-tokenizers: the families' regex features", "[tokenizer][stages]") {
  const char* llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const json s = split(llama3, "Isolated", false, true);
  CHECK(pre_tokenized(s, "I'M HE'LL") == Strings{"I", "'M", " HE", "'LL"});                       // (?i:...)
  CHECK(pre_tokenized(s, "x \xC5\xBF'\xC5\xBF") == Strings{"x", " \xC5\xBF", "'\xC5\xBF"});     // long s folds to s
  CHECK(pre_tokenized(s, "1234567") == Strings{"123", "456", "7"});                              // \p{N}{1,3}
  CHECK(pre_tokenized(s, "a   b") == Strings{"a", "  ", " b"});                                  // \s+(?!\S)
  CHECK(pre_tokenized(s, "a\r\n\r\nb") == Strings{"a", "\r\n\r\n", "b"});
  CHECK(pre_tokenized(s, "\xE4\xB8\xAD\xE6\x96\x87!") == Strings{"\xE4\xB8\xAD\xE6\x96\x87", "!"});  // \p{L}
  // U+0085 is White_Space for Oniguruma (and HF); PCRE2 needs the rewrite
  CHECK(pre_tokenized(split("\\s+", "Removed", false, true), "a\xC2\x85" "b") == Strings{"a", "b"});
  // \w holds marks: a Devanagari word stays whole across its virama
  CHECK(pre_tokenized(split("\\w+", "Removed", true, true), "\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4 x") ==
        Strings{"\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4", "x"});
  CHECK(oniguruma_compatible(R"([^\s\p{L}]\S)") == R"([^\s\x{85}\p{L}][^\s\x{85}])");
}

TEST_CASE("pre-tokenizers: ByteLevel, Metaspace, Digits, Whitespace, Sequence", "[tokenizer][stages]") {
  const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  CHECK(pre_tokenized(bl, "Hello world!") == Strings{"Hello", "\xC4\xA0world", "!"});
  json bl_prefix = bl;
  bl_prefix["add_prefix_space"] = true;
  CHECK(pre_tokenized(bl_prefix, "Hello") == Strings{"\xC4\xA0Hello"});
  CHECK(pre_tokenized({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}, "a b\n") ==
        Strings{"a\xC4\xA0" "b\xC4\x8A"});

  const std::string m = "\xE2\x96\x81";  // U+2581
  const auto meta = [&](const char* scheme, bool split_on) {
    return json{{"type", "Metaspace"}, {"replacement", m}, {"prepend_scheme", scheme}, {"split", split_on}};
  };
  CHECK(pre_tokenized(meta("always", true), "Hey friend") == Strings{m + "Hey", m + "friend"});
  CHECK(pre_tokenized(meta("never", true), "Hey friend") == Strings{"Hey", m + "friend"});
  CHECK(pre_tokenized(meta("first", true), "Hey friend", true) == Strings{m + "Hey", m + "friend"});
  CHECK(pre_tokenized(meta("first", true), "Hey friend", false) == Strings{"Hey", m + "friend"});
  CHECK(pre_tokenized(meta("always", false), "Hey  you") == Strings{m + "Hey" + m + m + "you"});
  CHECK(pre_tokenized(meta("always", false), " lead") == Strings{m + "lead"});  // already starts with it

  CHECK(pre_tokenized({{"type", "Digits"}, {"individual_digits", true}}, "abc123d4") ==
        Strings{"abc", "1", "2", "3", "d", "4"});
  CHECK(pre_tokenized({{"type", "Digits"}, {"individual_digits", false}}, "abc123d4") ==
        Strings{"abc", "123", "d", "4"});
  CHECK(pre_tokenized({{"type", "Whitespace"}}, "Hey, you!  ok") == Strings{"Hey", ",", "you", "!", "ok"});
  CHECK(pre_tokenized({{"type", "WhitespaceSplit"}}, "a  b\tc\xE3\x80\x80" "d") == Strings{"a", "b", "c", "d"});
  CHECK(pre_tokenized({{"type", "Sequence"},
                       {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}}}},
                      "a1 22") == Strings{"a", "1", "2", "2"});
}

TEST_CASE("BPE model: merges, unknown characters, byte fallback", "[tokenizer][stages]") {
  const auto ids = [](const json& model, const std::string& text) {
    return HfTokenizer(tiny_json({{"model", model}}), "tiny.json").encode(text, false);
  };
  json model = {{"type", "BPE"},
                {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}, {"<unk>", 5}, {"bc", 6}}},
                {"merges", {"a b", "ab c", "b c"}}};
  CHECK(ids(model, "abc") == std::vector<int32_t>{4});
  CHECK(ids(model, "abca") == std::vector<int32_t>{4, 0});
  CHECK(ids(model, "bcab") == std::vector<int32_t>{6, 3});
  CHECK(ids(model, "axxb") == std::vector<int32_t>{3});  // no unk_token: "x" vanishes, "a" "b" merge
  model["unk_token"] = "<unk>";
  CHECK(ids(model, "axxb") == std::vector<int32_t>{0, 5, 5, 1});
  model["fuse_unk"] = true;
  CHECK(ids(model, "axxb") == std::vector<int32_t>{0, 5, 1});
  // merges as pairs, same result
  json pairs = model;
  pairs["merges"] = json::array({json::array({"a", "b"}), json::array({"ab", "c"}), json::array({"b", "c"})});
  CHECK(ids(pairs, "abcab") == std::vector<int32_t>{4, 3});
  // rank decides, not position: "b c" (rank 0) before "a b" (rank 1)
  json ranked = model;
  ranked["merges"] = {"b c", "a b", "ab c"};
  CHECK(ids(ranked, "abc") == std::vector<int32_t>{0, 6});
  // byte_fallback: unknown characters become their bytes when all are in the vocab
  json fallback = model;
  fallback["byte_fallback"] = true;
  fallback["vocab"]["<0x78>"] = 7;
  fallback["vocab"]["<0xC3>"] = 8;
  CHECK(ids(fallback, "axb") == std::vector<int32_t>{0, 7, 1});
  CHECK(ids(fallback, "a\xC3\xA9") == std::vector<int32_t>{0, 5});  // 0xA9 missing: <unk>
  // ignore_merges: a word in the vocabulary is taken whole
  json whole = model;
  whole["vocab"]["ca"] = 8;
  whole["ignore_merges"] = true;
  CHECK(ids(whole, "ca") == std::vector<int32_t>{8});
  whole["ignore_merges"] = false;
  CHECK(ids(whole, "ca") == std::vector<int32_t>{2, 0});
  // continuing_subword_prefix / end_of_word_suffix
  json affixes = {{"type", "BPE"},
                  {"vocab", {{"a", 0}, {"##b", 1}, {"##c</w>", 2}, {"ab", 3}, {"ab##c</w>", 4}, {"abc</w>", 5}}},
                  {"merges", {"a ##b", "ab ##c</w>"}},
                  {"continuing_subword_prefix", "##"},
                  {"end_of_word_suffix", "</w>"}};
  CHECK(ids(affixes, "abc") == std::vector<int32_t>{5});
}

TEST_CASE("added tokens: special, single_word, lstrip, rstrip, normalized", "[tokenizer][stages]") {
  json model = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {" ", 2}, {"X", 3}}}, {"merges", json::array()}};
  // a vector, not a json: `{one_token}` as a json is the token itself under
  // clang but a one-element array under gcc
  const auto tok = [&](std::vector<json> added, json normalizer = nullptr) {
    return HfTokenizer(tiny_json({{"model", model}, {"added_tokens", json(added)}, {"normalizer", normalizer}}),
                       "t.json");
  };
  const auto token = [](const char* content, bool special, json flags = json::object()) {
    json t = {{"id", 0},          {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false},  {"normalized", false}, {"special", special}};
    for (auto it = flags.begin(); it != flags.end(); ++it) t[it.key()] = it.value();
    return t;
  };
  using Ids = std::vector<int32_t>;
  // ids continue after the model's vocabulary, in file order
  const HfTokenizer plain = tok({token("<s>", true), token("<t>", false)});
  CHECK(plain.token_to_id("<s>") == 4);
  CHECK(plain.token_to_id("<t>") == 5);
  CHECK(plain.encode("a<s>b<t>", false) == Ids{0, 4, 1, 5});
  EncodeOptions no_special;
  no_special.parse_special = false;
  no_special.add_special_tokens = false;
  // special strings as plain text: '<' 's' '>' are not in the vocab, and vanish; <t> stays an added token
  CHECK(plain.encode("a<s>b<t>", no_special) == Ids{0, 1, 5});
  CHECK(plain.decode({0, 4, 1, 5}, true) == "a b <t>");  // no decoder: tokens joined by spaces
  CHECK(plain.is_special(4));
  CHECK_FALSE(plain.is_special(5));

  const HfTokenizer single = tok({token("ab", false, {{"single_word", true}})});
  CHECK(single.encode("ab a ab", false) == Ids{4, 2, 0, 2, 4});
  CHECK(single.encode("aab", false) == Ids{0, 0, 1});  // inside a word: not the added token

  const HfTokenizer strip = tok({token("X", true, {{"lstrip", true}, {"rstrip", true}})});
  CHECK(strip.token_to_id("X") == 3);  // already in the model: keeps the model's id
  CHECK(strip.encode("a  X  b", false) == Ids{0, 3, 1});

  // normalized=true tokens are matched in the normalized text
  const HfTokenizer norm = tok({token("B", false, {{"normalized", true}})}, {{"type", "Lowercase"}});
  CHECK(norm.encode("aBb", false) == Ids{0, 4, 4});
}

TEST_CASE("post-processors", "[tokenizer][stages]") {
  json model = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"<s>", 1}, {"</s>", 2}}}, {"merges", json::array()}};
  const json tmpl = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                  {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
        {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}};
  const HfTokenizer t(tiny_json({{"model", model}, {"post_processor", tmpl}}), "t.json");
  CHECK(t.encode("aa", true) == std::vector<int32_t>{1, 0, 0, 2});
  CHECK(t.encode("aa", false) == std::vector<int32_t>{0, 0});
  CHECK(t.bos_id() == 1);
  CHECK(t.eos_id() == 2);
  const json roberta = {{"type", "RobertaProcessing"}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 1}}};
  const json seq = {{"type", "Sequence"},
                    {"processors", {{{"type", "ByteLevel"}, {"trim_offsets", false}}, roberta}}};
  CHECK(HfTokenizer(tiny_json({{"model", model}, {"post_processor", seq}}), "t.json").encode("a") ==
        std::vector<int32_t>{1, 0, 2});
  // tokenizer_config.json: add_eos_token rebuilds the template
  const HfTokenizer c(tiny_json({{"model", model}, {"post_processor", tmpl}}), "t.json",
                      R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": false,
                          "add_eos_token": true, "tokenizer_class": "PreTrainedTokenizerFast"})");
  CHECK(c.encode("a") == std::vector<int32_t>{0, 2});
}

TEST_CASE("decoders", "[tokenizer][stages]") {
  CHECK(decoded({{"type", "ByteLevel"}}, {"\xC4\xA0Hello", "\xC4\xA0w", "orld"}) == Strings{" Hello world"});
  // a lone continuation byte decodes to U+FFFD; a character outside the table stays as it is
  CHECK(decoded({{"type", "ByteLevel"}}, {"a", byte_to_char(0x80)}) == Strings{"a\xEF\xBF\xBD"});
  CHECK(decoded({{"type", "ByteLevel"}}, {"\xE4\xB8\xAD"}) == Strings{"\xE4\xB8\xAD"});
  CHECK(decoded({{"type", "ByteFallback"}}, {"<0xE2>", "<0x96>", "<0x81>", "x"}) == Strings{"\xE2\x96\x81", "x"});
  CHECK(decoded({{"type", "ByteFallback"}}, {"<0xE2>", "<0x96>", "y"}) ==
        Strings{"\xEF\xBF\xBD", "\xEF\xBF\xBD", "y"});
  CHECK(decoded({{"type", "Fuse"}}, {"a", "b", "c"}) == Strings{"abc"});
  CHECK(decoded({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}, {"  a  ", "b"}) ==
        Strings{" a ", "b"});
  CHECK(decoded({{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                {"\xE2\x96\x81" "a\xE2\x96\x81" "b"}) == Strings{" a b"});
  const json meta = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "always"}};
  CHECK(decoded(meta, {"\xE2\x96\x81Hey", "\xE2\x96\x81you"}) == Strings{"Hey", " you"});
  CHECK(decoded({{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"hel", "lo</w>", "you</w>"}) ==
        Strings{"hel", "lo ", "you"});
  CHECK(decoded({{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}},
                {"<0x61>", "b"}) == Strings{"ab"});
}

TEST_CASE("unicode helpers", "[tokenizer][stages]") {
  CHECK(unicode::find_invalid("abc") == std::string::npos);
  CHECK(unicode::find_invalid("ab\xC3") == 2);              // truncated
  CHECK(unicode::find_invalid("\xED\xA0\x80") == 0);        // surrogate
  CHECK(unicode::find_invalid("\xC0\xAF") == 0);            // overlong
  CHECK(unicode::find_invalid("12345678\xF5xx") == 8);     // above U+10FFFF, after the ASCII fast path
  CHECK(unicode::from_bytes_lossy("a\xE2\x96z") == "a\xEF\xBF\xBDz");  // one U+FFFD for the maximal subpart
  CHECK(unicode::from_bytes_lossy("\xFF\xFE") == "\xEF\xBF\xBD\xEF\xBF\xBD");
}
