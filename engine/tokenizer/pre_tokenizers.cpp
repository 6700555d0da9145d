// Pre-tokenizers: cut each piece into finer pieces (words), which the model
// then tokenizes one at a time. All the cutting goes through split(): a list
// of (span, is_match) covering the piece, and one of HF's five behaviours
// deciding what happens to the matched spans.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>

#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/stages.h"
#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;

namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t b, e;
  bool match;
};

// Appends the pieces `spans` (covering `p.text`) make under `behavior`.
void split(const Piece& p, const std::vector<Span>& spans, Behavior behavior, std::vector<Piece>& out) {
  thread_local std::vector<Span> kept;
  kept.clear();
  switch (behavior) {
    case Behavior::Isolated:
      kept = spans;
      break;
    case Behavior::Removed:
      for (const Span& s : spans)
        if (!s.match) kept.push_back(s);
      break;
    case Behavior::Contiguous: {
      bool prev = false;
      for (const Span& s : spans) {
        if (s.match == prev && !kept.empty()) kept.back().e = s.e;
        else kept.push_back(s);
        prev = s.match;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prev = false;
      for (const Span& s : spans) {
        if (s.match && !prev && !kept.empty()) kept.back().e = s.e;
        else kept.push_back(s);
        prev = s.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev = false;  // walking backwards: "prev" is the span after this one
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.match && !prev && !kept.empty()) kept.back().b = s.b;
        else kept.push_back(s);
        prev = s.match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Span& s : kept) {
    if (s.e <= s.b) continue;
    out.push_back(Piece{p.text.substr(s.b, s.e - s.b), p.at_start && s.b == 0});
  }
}

// Spans of the regex's matches and the gaps between them.
void regex_spans(const Regex& re, const std::string& text, bool invert, std::vector<Span>& spans) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  spans.clear();
  if (text.empty()) return;
  re.find_all(text, matches);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), invert});
}

// Spans where each character for which pred() holds is a match of its own.
template <class Pred>
void char_spans(const std::string& text, Pred pred, std::vector<Span>& spans) {
  spans.clear();
  size_t last = 0, i = 0;
  while (i < text.size()) {
    const size_t b = i;
    const char32_t c = unicode::next_cp(text, i);
    if (pred(c)) {
      if (last < b) spans.push_back({last, b, false});
      spans.push_back({b, i, true});
      last = i;
    }
  }
  if (last < text.size()) spans.push_back({last, text.size(), false});
}

// Applies `make_spans(text, spans)` + split() to every piece.
template <class MakeSpans>
void split_all(std::vector<Piece>& pieces, Behavior behavior, MakeSpans&& make_spans) {
  thread_local std::vector<Span> spans;
  std::vector<Piece> out;
  out.reserve(pieces.size() * 4);
  for (const Piece& p : pieces) {
    make_spans(p.text, spans);
    split(p, spans, behavior, out);
  }
  pieces.swap(out);
}

class Split final : public PreTokenizer {
 public:
  Split(std::unique_ptr<Regex> re, Behavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(pieces, behavior_, [&](const std::string& t, std::vector<Span>& s) { regex_spans(*re_, t, invert_, s); });
  }

 private:
  std::unique_ptr<Regex> re_;
  Behavior behavior_;
  bool invert_;
};

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's byte-level step: optional prefix space, optional GPT-2 regex split,
// then every byte becomes its printable stand-in character.
class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) re_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_)
      for (Piece& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, 1, ' ');
    if (re_)
      split_all(pieces, Behavior::Isolated,
                [&](const std::string& t, std::vector<Span>& s) { regex_spans(*re_, t, false, s); });
    // every byte becomes one or two bytes of UTF-8
    static const auto table = [] {
      std::array<std::array<char, 3>, 256> t{};  // bytes, then the length in t[b][2]
      for (int b = 0; b < 256; ++b) {
        const std::string& c = byte_to_char(static_cast<unsigned char>(b));
        t[b] = {c[0], c.size() > 1 ? c[1] : '\0', char(c.size())};
      }
      return t;
    }();
    std::string mapped;
    for (Piece& p : pieces) {
      mapped.resize(p.text.size() * 2);
      char* o = &mapped[0];
      for (unsigned char b : p.text) {
        const auto& e = table[b];
        o[0] = e[0];
        o[1] = e[1];
        o += e[2];
      }
      mapped.resize(size_t(o - mapped.data()));
      p.text.swap(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
};

enum class PrependScheme { First, Never, Always };

// SentencePiece's view of spaces: ' ' becomes the replacement character
// (U+2581 by default), prepended per `prepend_scheme`, and each piece starts
// at a replacement character when `split` is on.
class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : rep_(std::move(replacement)), scheme_(scheme), split_(split) {
    size_t i = 0;
    rep_cp_ = unicode::next_cp(rep_, i);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (Piece& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') t += rep_;
        else t += c;
      }
      const bool starts = t.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_start)))
        t.insert(0, rep_);
      p.text.swap(t);
    }
    if (split_)
      split_all(pieces, Behavior::MergedWithNext, [&](const std::string& t, std::vector<Span>& s) {
        char_spans(t, [&](char32_t c) { return c == rep_cp_; }, s);
      });
  }

 private:
  std::string rep_;
  char32_t rep_cp_;
  PrependScheme scheme_;
  bool split_;
};

class Digits final : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(pieces, individual_ ? Behavior::Isolated : Behavior::Contiguous,
              [](const std::string& t, std::vector<Span>& s) { char_spans(t, unicode::is_numeric, s); });
  }

 private:
  bool individual_;
};

// Words (\w+) and runs of other non-space characters; spaces are dropped.
// HF runs this one with the Rust regex crate, whose \w is Alphabetic, marks,
// decimal digits, connector punctuation and the join controls (not "①").
class Whitespace final : public PreTokenizer {
 public:
  Whitespace()
      : re_(R"([\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}]+|[^\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\s]+)") {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(pieces, Behavior::Removed,
              [&](const std::string& t, std::vector<Span>& s) { regex_spans(re_, t, true, s); });
  }

 private:
  Regex re_;
};

class WhitespaceSplit final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_all(pieces, Behavior::Removed,
              [](const std::string& t, std::vector<Span>& s) { char_spans(t, unicode::is_whitespace, s); });
  }
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> stages) : stages_(std::move(stages)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& s : stages_) s->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> stages_;
};

Behavior behavior_of(const json& j, const JsonPlace& at) {
  const std::string b = string_field(j, "behavior", at);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  at.at("behavior").fail("unknown split behavior \"" + b +
                         "\" (supported: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const JsonPlace& at) {
  const std::string type = type_of(j, at);
  if (type == "Split")
    return std::make_unique<Split>(compile_pattern(j, at), behavior_of(j, at), bool_field(j, "invert", at, false));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(bool_field(j, "add_prefix_space", at, true),
                                       bool_field(j, "use_regex", at, true));
  if (type == "Metaspace") {
    const std::string rep = string_field(j, "replacement", at);
    size_t i = 0;
    if (rep.empty() || unicode::find_invalid(rep) != std::string::npos || (unicode::next_cp(rep, i), i != rep.size()))
      at.at("replacement").fail("expected a single character");
    PrependScheme scheme = PrependScheme::Always;
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      const std::string s = string_field(j, "prepend_scheme", at);
      if (s == "first") scheme = PrependScheme::First;
      else if (s == "never") scheme = PrependScheme::Never;
      else if (s == "always") scheme = PrependScheme::Always;
      else at.at("prepend_scheme").fail("expected \"first\", \"always\" or \"never\", found \"" + s + "\"");
    }
    // legacy files: add_prefix_space=false means "never"
    if (j.contains("add_prefix_space") && !bool_field(j, "add_prefix_space", at, true)) {
      if (scheme != PrependScheme::Never)  // HF's default scheme is "always": an error too
        at.at("add_prefix_space").fail("add_prefix_space does not match declared prepend_scheme");
      scheme = PrependScheme::Never;
    }
    return std::make_unique<Metaspace>(rep, scheme, bool_field(j, "split", at, true));
  }
  if (type == "Digits") return std::make_unique<Digits>(bool_field(j, "individual_digits", at, false));
  if (type == "Whitespace") return std::make_unique<Whitespace>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (type == "Sequence") {
    const json& list = field(j, "pretokenizers", at);
    if (!list.is_array()) at.at("pretokenizers").fail("expected a list");
    std::vector<std::unique_ptr<PreTokenizer>> stages;
    for (size_t i = 0; i < list.size(); ++i)
      stages.push_back(make_pre_tokenizer(list[i], at.at("pretokenizers").at(i)));
    return std::make_unique<Sequence>(std::move(stages));
  }
  unknown_type("pre-tokenizer", type,
               {"Split", "ByteLevel", "Metaspace", "Digits", "Whitespace", "WhitespaceSplit", "Sequence"}, at);
}

}  // namespace ssalab::tokenizer
