// Normalizers: string -> string, run on each stretch of text between added
// tokens (so "Prepend" prepends after every special token, as HF does).
#include <nlohmann/json.hpp>

#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/stages.h"
#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;

namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(unicode::Form form) : form_(form) {}
  void normalize(std::string& s) const override { s = unicode::normalize(s, form_); }

 private:
  unicode::Form form_;
};

class Lowercase final : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = unicode::lowercase(s); }
};

// Strips leading and/or trailing White_Space characters.
class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
        e = start;
      }
    }
    s = s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

// Removes combining marks (run after NFD / NFKD in practice).
class StripAccents final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
      const size_t start = i;
      const char32_t c = unicode::next_cp(s, i);
      if (!unicode::is_mark(c)) out.append(s, start, i - start);
    }
    s = std::move(out);
  }
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

// Replace every match of a string or regex pattern (the pattern is searched
// once over the input, matches do not see earlier replacements).
class Replace final : public Normalizer {
 public:
  Replace(std::unique_ptr<Regex> regex, std::string content) : regex_(std::move(regex)), content_(std::move(content)) {}
  void normalize(std::string& s) const override {
    thread_local std::vector<std::pair<size_t, size_t>> matches;
    regex_->find_all(s, matches);
    if (matches.empty()) return;
    std::string out;
    out.reserve(s.size() + matches.size() * content_.size());
    size_t last = 0;
    for (auto [b, e] : matches) {
      out.append(s, last, b - last);
      out += content_;
      last = e;
    }
    out.append(s, last, std::string::npos);
    s = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

// Maps each byte to GPT-2's printable character (the ByteLevel normalizer).
class ByteLevelNormalizer final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char b : s) out += byte_to_char(b);
    s = std::move(out);
  }
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> stages) : stages_(std::move(stages)) {}
  void normalize(std::string& s) const override {
    for (const auto& n : stages_) n->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> stages_;
};

}  // namespace

std::string pattern_of(const json& obj, const JsonPlace& at) {
  const json& p = field(obj, "pattern", at);
  const JsonPlace pat = at.at("pattern");
  if (p.is_object() && p.contains("String") && p["String"].is_string())
    return Regex::escape(p["String"].get<std::string>());
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) return p["Regex"].get<std::string>();
  if (p.is_string()) return Regex::escape(p.get<std::string>());  // legacy: a bare string
  pat.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

std::unique_ptr<Regex> compile_pattern(const json& obj, const JsonPlace& at) {
  const std::string pattern = pattern_of(obj, at);
  try {
    return std::make_unique<Regex>(pattern);
  } catch (const std::invalid_argument& e) {
    at.at("pattern").fail(e.what());
  }
}

std::unique_ptr<Normalizer> make_normalizer(const json& j, const JsonPlace& at) {
  const std::string type = type_of(j, at);
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::Form::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::Form::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::Form::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::Form::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip") return std::make_unique<Strip>(bool_field(j, "strip_left", at, true),
                                                      bool_field(j, "strip_right", at, true));
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Prepend") return std::make_unique<Prepend>(string_field(j, "prepend", at));
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Replace") {
    const std::string content = string_field(j, "content", at);
    return std::make_unique<Replace>(compile_pattern(j, at), content);
  }
  if (type == "Sequence") {
    const json& list = field(j, "normalizers", at);
    if (!list.is_array()) at.at("normalizers").fail("expected a list");
    std::vector<std::unique_ptr<Normalizer>> stages;
    for (size_t i = 0; i < list.size(); ++i) stages.push_back(make_normalizer(list[i], at.at("normalizers").at(i)));
    return std::make_unique<Sequence>(std::move(stages));
  }
  unknown_type("normalizer", type,
               {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "StripAccents", "Prepend", "Replace",
                "ByteLevel", "Sequence"},
               at);
}

}  // namespace ssalab::tokenizer
