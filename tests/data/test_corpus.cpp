// Corpus reading, UTF-8 validation, the sentencepiece tokenizer and the
// cached train/validation token streams.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/data/corpus.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ssalab;

namespace {

using test::contains;
using test::error_of;
using test::TempDir;

// English-ish text from a small lowercase alphabet with numbers: a few hundred
// KB, deterministic. Lowercase only so that vocab 300 (256 byte pieces +
// specials + characters) has room for some merged pieces.
std::string generated_text(int sentences, uint32_t seed) {
  static const char* subjects[] = {"the model", "a small cat", "our system", "the reader", "this function",
                                   "every token", "the old server", "a quiet student"};
  static const char* verbs[] = {"reads", "writes", "counts", "returns", "finds", "stores", "prints", "sorts"};
  static const char* objects[] = {"files", "numbers", "the letters", "many lines", "a long list",
                                  "the values", "some words", "two tables"};
  std::string out;
  uint32_t x = seed;
  auto next = [&x] { return x = x * 1664525u + 1013904223u; };
  for (int i = 0; i < sentences; ++i) {
    out += subjects[(next() >> 8) % 8];
    out += ' ';
    out += verbs[(next() >> 8) % 8];
    out += ' ' + std::to_string((next() >> 8) % 5000) + ' ';
    out += objects[(next() >> 8) % 8];
    out += (next() >> 8) % 4 == 0 ? ".\n\n" : ". ";
  }
  return out;
}

// Trained once, shared by the tokenizer and token data tests.
struct SmallModel {
  TempDir dir;
  std::vector<Document> docs;
  std::string model_path;
  Tokenizer tok;
  SmallModel() {
    for (int i = 0; i < 40; ++i)
      dir.file("docs/doc" + std::to_string(i) + ".txt", generated_text(150, 1234u + i));
    docs = read_corpus((dir.path / "docs").string());
    model_path = (dir.path / "tok.model").string();
    tok = Tokenizer::train(docs, 300, model_path);
  }
};
SmallModel& small_model() {
  static SmallModel m;
  return m;
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

}  // namespace

// ---------------------------------------------------------------- UTF-8

TEST_CASE("find_invalid_utf8 accepts valid text", "[corpus][utf8]") {
  const auto npos = std::string_view::npos;
  CHECK(find_invalid_utf8("") == npos);
  CHECK(find_invalid_utf8("plain ascii\n\t") == npos);
  CHECK(find_invalid_utf8("caf\xC3\xA9") == npos);                   // é
  CHECK(find_invalid_utf8("\xE6\xBC\xA2\xE5\xAD\x97") == npos);      // 漢字
  CHECK(find_invalid_utf8("\xF0\x9F\x98\x80") == npos);              // 😀
  CHECK(find_invalid_utf8("\xC2\x80") == npos);                      // U+0080, smallest 2-byte
  CHECK(find_invalid_utf8("\xED\x9F\xBF") == npos);                  // U+D7FF, below surrogates
  CHECK(find_invalid_utf8("\xEE\x80\x80") == npos);                  // U+E000, above surrogates
  CHECK(find_invalid_utf8("\xEF\xBF\xBF") == npos);                  // U+FFFF
  CHECK(find_invalid_utf8("\xF4\x8F\xBF\xBF") == npos);              // U+10FFFF, the largest
}

TEST_CASE("find_invalid_utf8 rejects malformed sequences at the right offset", "[corpus][utf8]") {
  CHECK(find_invalid_utf8("\x80") == 0);                    // stray continuation byte
  CHECK(find_invalid_utf8("abc\xFF") == 3);                 // never valid in UTF-8
  CHECK(find_invalid_utf8("ab\xC3") == 2);                  // truncated at the end
  CHECK(find_invalid_utf8("a\xE2\x82") == 1);               // truncated 3-byte
  CHECK(find_invalid_utf8("\xC3(") == 0);                   // bad continuation
  CHECK(find_invalid_utf8("\xC0\xAF") == 0);                // overlong '/'
  CHECK(find_invalid_utf8("\xC1\xBF") == 0);                // overlong 2-byte
  CHECK(find_invalid_utf8("xx\xE0\x80\xAF") == 2);          // overlong 3-byte
  CHECK(find_invalid_utf8("\xF0\x80\x80\xAF") == 0);        // overlong 4-byte
  CHECK(find_invalid_utf8("ok \xED\xA0\x80") == 3);         // U+D800 surrogate
  CHECK(find_invalid_utf8("\xED\xBF\xBF") == 0);            // U+DFFF surrogate
  CHECK(find_invalid_utf8("\xF4\x90\x80\x80") == 0);        // U+110000
  CHECK(find_invalid_utf8("\xF8\x88\x80\x80\x80") == 0);    // 5-byte form
  CHECK(find_invalid_utf8("caf\xC3\xA9 \xE9t\xE9") == 6);   // Latin-1 after valid UTF-8
}

// ---------------------------------------------------------------- read_corpus

TEST_CASE("read_corpus reads a folder recursively in sorted order", "[corpus]") {
  TempDir d;
  d.file("b.txt", "bee\n");
  d.file("a/z.txt", "zed\n");
  d.file("a/b.txt", "a-bee \xC3\xA9\n");
  d.file("c.rst", "see\n");
  d.file("empty.txt", "");
  d.file("blank.txt", "  \n\n\t");
  d.file(".hidden", std::string("\0\1\2", 3));  // hidden entries are tool metadata
  d.file(".git/objects/x", std::string("\0\0", 2));

  auto docs = read_corpus(d.str());
  REQUIRE(docs.size() == 4);
  CHECK(docs[0].path == (d.path / "a/b.txt").string());
  CHECK(docs[1].path == (d.path / "a/z.txt").string());
  CHECK(docs[2].path == (d.path / "b.txt").string());
  CHECK(docs[3].path == (d.path / "c.rst").string());
  CHECK(docs[0].text == "a-bee \xC3\xA9\n");
  CHECK(docs[3].text == "see\n");
}

TEST_CASE("read_corpus reads a single file", "[corpus]") {
  TempDir d;
  std::string f = d.file("one.txt", "just one file\n");
  auto docs = read_corpus(f);
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].path == f);
  CHECK(docs[0].text == "just one file\n");
}

TEST_CASE("read_corpus errors name the offending path", "[corpus]") {
  TempDir d;
  SECTION("missing path") {
    std::string p = (d.path / "nope").string();
    std::string msg = error_of([&] { read_corpus(p); });
    CHECK(contains(msg, p));
  }
  SECTION("empty file") {
    std::string f = d.file("e.txt", "");
    CHECK(contains(error_of([&] { read_corpus(f); }), f));
  }
  SECTION("whitespace-only file") {
    std::string f = d.file("w.txt", " \n\n ");
    CHECK(contains(error_of([&] { read_corpus(f); }), "empty"));
  }
  SECTION("empty folder") {
    std::string msg = error_of([&] { read_corpus(d.str()); });
    CHECK(contains(msg, d.str()));
    CHECK(contains(msg, "no text"));
  }
  SECTION("folder of empty files") {
    d.file("a.txt", "");
    d.file("b/c.txt", "\n");
    CHECK(contains(error_of([&] { read_corpus(d.str()); }), "no text"));
  }
  SECTION("binary file inside a folder") {
    d.file("good.txt", "fine\n");
    std::string bin = d.file("sub/image.png", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16));
    std::string msg = error_of([&] { read_corpus(d.str()); });
    CHECK(contains(msg, bin));
    CHECK(contains(msg, "binary"));
  }
  SECTION("invalid UTF-8") {
    std::string f = d.file("latin1.txt", "hello \xE9t\xE9\n");
    std::string msg = error_of([&] { read_corpus(d.str()); });
    CHECK(contains(msg, f));
    CHECK(contains(msg, "UTF-8"));
    CHECK(contains(msg, "offset 6"));
  }
}

// ---------------------------------------------------------------- tokenizer

TEST_CASE("tokenizer round-trips text exactly", "[tokenizer]") {
  const Tokenizer& tok = small_model().tok;
  CHECK(tok.vocab_size() == 300);
  REQUIRE(tok.eos_id() >= 0);
  CHECK(tok.piece(tok.eos_id()) == "</s>");

  const std::vector<std::string> texts = {
      "the model reads 42 files.",
      "",
      "  leading,  double  spaces and a\ttab  ",
      "line one\nline two\n\n",
      "caf\xC3\xA9 cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e",          // é è û
      "\xE6\xBC\xA2\xE5\xAD\x97 and kana \xE3\x81\x8B",          // 漢字 か
      "emoji \xF0\x9F\x98\x80\xF0\x9F\x9A\x80!",                // 😀🚀
      "digits 0123456789 and 3.14159, -7e10",
      "UPPER Case Words Not In Training",
  };
  for (const std::string& s : texts) {
    INFO(s);
    std::vector<int> ids = tok.encode(s);
    for (int id : ids) CHECK((id >= 0 && id < tok.vocab_size()));
    CHECK(tok.decode(ids) == s);
  }
}

TEST_CASE("tokenizer splits digits and knows its vocabulary", "[tokenizer]") {
  const Tokenizer& tok = small_model().tok;
  for (int id : tok.encode("1234567")) {
    std::string p = tok.piece(id);
    if (p.find_first_of("0123456789") != std::string::npos) CHECK(p.size() == 1);
  }
  // vocab 300 = unk + eos + 256 bytes + ~38 characters: a few merged pieces
  int merged = 0;
  for (int id = 0; id < tok.vocab_size(); ++id) {
    std::string p = tok.piece(id);
    merged += p.size() > 1 && p[0] != '<' && p != "\xE2\x96\x81";  // not a byte, special or lone "▁"
  }
  CHECK(merged >= 3);
  CHECK(tok.encode(" the other").size() < std::string(" the other").size());
  CHECK_THROWS_AS(tok.piece(-1), Error);
  CHECK_THROWS_AS(tok.piece(300), Error);
  CHECK_THROWS_AS(tok.decode({0, 300}), Error);
  CHECK_THROWS_AS(Tokenizer().encode("x"), Error);
}

TEST_CASE("tokenizer training is deterministic and the saved model loads", "[tokenizer]") {
  SmallModel& m = small_model();
  TempDir d;
  std::string again = (d.path / "again.model").string();
  Tokenizer tok2 = Tokenizer::train(m.docs, 300, again);
  CHECK(tok2.serialized() == m.tok.serialized());
  CHECK_FALSE(contains(m.tok.serialized(), "ssalab_spm_"));  // no temp training path inside
  CHECK(read_file(again) == m.tok.serialized());

  Tokenizer loaded = Tokenizer::load(m.model_path);
  CHECK(loaded.serialized() == m.tok.serialized());
  Tokenizer copy = Tokenizer::from_bytes(m.tok.serialized());
  const std::string s = "a small cat sorts 1999 files \xE6\xBC\xA2";
  CHECK(loaded.encode(s) == m.tok.encode(s));
  CHECK(copy.encode(s) == m.tok.encode(s));
  CHECK(loaded.vocab_size() == m.tok.vocab_size());
  CHECK(loaded.eos_id() == m.tok.eos_id());
}

TEST_CASE("tokenizer load errors", "[tokenizer]") {
  TempDir d;
  SECTION("missing file") {
    std::string p = (d.path / "missing.model").string();
    CHECK(contains(error_of([&] { Tokenizer::load(p); }), p));
  }
  SECTION("garbage file") {
    std::string p = d.file("garbage.model", "this is not a protobuf \xFF\xFF\xFF\xFF\xFF");
    CHECK(contains(error_of([&] { Tokenizer::load(p); }), p));
  }
  SECTION("truncated model") {
    const std::string& bytes = small_model().tok.serialized();
    std::string p = d.file("half.model", bytes.substr(0, bytes.size() / 2));
    CHECK(contains(error_of([&] { Tokenizer::load(p); }), p));
  }
  SECTION("empty file") {
    std::string p = d.file("empty.model", "");
    CHECK(contains(error_of([&] { Tokenizer::load(p); }), p));
  }
}

TEST_CASE("tokenizer training reports a vocabulary too large for the corpus", "[tokenizer]") {
  TempDir d;
  std::vector<Document> tiny = {{"tiny.txt", "hello world, hello there.\n"}};
  std::string msg = error_of([&] { Tokenizer::train(tiny, 5000, (d.path / "t.model").string()); });
  INFO(msg);
  CHECK(contains(msg, "smaller vocab"));
  CHECK_FALSE(fs::exists(d.path / "t.model"));
  CHECK_THROWS_AS(Tokenizer::train(tiny, 100, (d.path / "t.model").string()), Error);
}

// ---------------------------------------------------------------- token data

TEST_CASE("token data split is deterministic and covers every document", "[tokens]") {
  SmallModel& m = small_model();
  std::string root = (m.dir.path / "docs").string();
  TokenData a = load_token_data(m.docs, root, m.tok, "");
  TokenData b = load_token_data(m.docs, root, m.tok, "");
  CHECK(a.train == b.train);
  CHECK(a.val == b.val);
  CHECK_FALSE(a.train.empty());
  CHECK_FALSE(a.val.empty());

  // every document appears once, followed by eos
  size_t expected = 0;
  for (const Document& d : m.docs) expected += m.tok.encode(d.text).size() + 1;
  CHECK(a.train.size() + a.val.size() == expected);
  auto eos_count = [&](const std::vector<int32_t>& v) { return std::count(v.begin(), v.end(), m.tok.eos_id()); };
  CHECK(size_t(eos_count(a.train) + eos_count(a.val)) == m.docs.size());
  CHECK(a.val.back() == m.tok.eos_id());

  // the split depends on paths relative to the root, not on where it lives
  TempDir other;
  fs::copy(root, other.path / "moved", fs::copy_options::recursive);
  auto moved_docs = read_corpus((other.path / "moved").string());
  TokenData c = load_token_data(moved_docs, (other.path / "moved").string(), m.tok, "");
  CHECK(c.train == a.train);
  CHECK(c.val == a.val);
}

TEST_CASE("token data validation is never empty", "[tokens]") {
  SmallModel& m = small_model();
  std::string root = (m.dir.path / "docs").string();
  SECTION("no document hashes into validation: the last one is used") {
    TokenData d = load_token_data(m.docs, root, m.tok, "", 0.0);
    std::vector<int32_t> last;
    for (int id : m.tok.encode(m.docs.back().text)) last.push_back(id);
    last.push_back(m.tok.eos_id());
    CHECK(d.val == last);
  }
  SECTION("a single document is split by tokens") {
    std::vector<Document> one = {m.docs[0]};
    TokenData d = load_token_data(one, m.docs[0].path, m.tok, "");
    size_t n = m.tok.encode(one[0].text).size() + 1;
    CHECK(d.train.size() + d.val.size() == n);
    CHECK_FALSE(d.val.empty());
    CHECK(d.val.size() == size_t(std::llround(n * 0.05)));
    CHECK(d.val.back() == m.tok.eos_id());
  }
  SECTION("bad arguments") {
    CHECK_THROWS_AS(load_token_data({}, root, m.tok, ""), Error);
    CHECK_THROWS_AS(load_token_data(m.docs, root, m.tok, "", 1.0), Error);
    CHECK_THROWS_AS(load_token_data(m.docs, root, m.tok, "", -0.1), Error);
  }
}

TEST_CASE("token data cache is reused, invalidated and repaired", "[tokens]") {
  SmallModel& m = small_model();
  std::string root = (m.dir.path / "docs").string();
  TempDir d;
  std::string cache = (d.path / "cache/tokens.bin").string();
  TokenData fresh = load_token_data(m.docs, root, m.tok, "");

  TokenData first = load_token_data(m.docs, root, m.tok, cache);
  REQUIRE(fs::exists(cache));
  CHECK(first.train == fresh.train);
  CHECK(first.val == fresh.val);
  const std::string bytes = read_file(cache);
  const ino_t ino = inode_of(cache);

  SECTION("unchanged corpus: the file is read, not rewritten") {
    TokenData again = load_token_data(m.docs, root, m.tok, cache);
    CHECK(again.train == fresh.train);
    CHECK(again.val == fresh.val);
    CHECK(inode_of(cache) == ino);  // write_file_atomic would have renamed a new file in
  }
  SECTION("a changed document rebuilds the cache") {
    auto docs = m.docs;
    docs[3].text += "one more sentence here.\n";
    TokenData changed = load_token_data(docs, root, m.tok, cache);
    CHECK(inode_of(cache) != ino);
    CHECK(read_file(cache) != bytes);
    TokenData expect = load_token_data(docs, root, m.tok, "");
    CHECK(changed.train == expect.train);
    CHECK(changed.val == expect.val);
  }
  SECTION("a different validation fraction rebuilds the cache") {
    load_token_data(m.docs, root, m.tok, cache, 0.2);
    CHECK(inode_of(cache) != ino);
  }
  SECTION("a truncated cache is rebuilt") {
    fs::resize_file(cache, bytes.size() / 2);
    TokenData repaired = load_token_data(m.docs, root, m.tok, cache);
    CHECK(repaired.train == fresh.train);
    CHECK(repaired.val == fresh.val);
    CHECK(read_file(cache) == bytes);
  }
  SECTION("a corrupted cache (flipped token byte) is rebuilt") {
    std::string bad = bytes;
    bad[bad.size() - 3] ^= 0x5A;
    write_file_atomic(cache, bad);
    TokenData repaired = load_token_data(m.docs, root, m.tok, cache);
    CHECK(repaired.val == fresh.val);
    CHECK(read_file(cache) == bytes);
  }
  SECTION("a garbage cache is rebuilt") {
    write_file_atomic(cache, "garbage");
    TokenData repaired = load_token_data(m.docs, root, m.tok, cache);
    CHECK(repaired.train == fresh.train);
    CHECK(read_file(cache) == bytes);
  }
}

// ---------------------------------------------------------------- real corpus

TEST_CASE("tokenizer and token data on the default corpus", "[slow][tokenizer][tokens]") {
  if (!fs::exists(default_corpus_path())) {
    WARN("python3.11-doc not installed; skipped");
    return;
  }
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  auto docs = read_corpus(default_corpus_path());
  CHECK(docs.size() > 400);
  TempDir d;
  Tokenizer tok = Tokenizer::train(docs, 4096, (d.path / "tok.model").string());
  auto t1 = clock::now();
  TokenData data = load_token_data(docs, default_corpus_path(), tok, (d.path / "tokens.bin").string());
  auto t2 = clock::now();
  CHECK(tok.vocab_size() == 4096);
  CHECK(data.val.size() > 0.01 * data.train.size());
  CHECK(data.val.size() < 0.2 * data.train.size());
  CHECK(tok.decode(tok.encode(docs[10].text)) == docs[10].text);
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  WARN("read+train " << secs(t0, t1) << " s, tokenize+cache " << secs(t1, t2) << " s");
  CHECK(secs(t0, t1) < 60.0);
}
