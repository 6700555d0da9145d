// Decoders: token strings back to text. Each one rewrites the list of token
// strings (decode_chain); the tokenizer joins what is left.
#include <nlohmann/json.hpp>

#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/stages.h"
#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;

namespace {

// Characters back to bytes (a token with a character outside the table is
// kept as its UTF-8 bytes); all tokens fuse into one, invalid UTF-8 -> U+FFFD.
class ByteLevel final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string one;
    for (const std::string& t : tokens) {
      one.clear();
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        const int b = char_to_byte(unicode::next_cp(t, i));
        if (b < 0) { ok = false; break; }
        one += char(b);
      }
      bytes += ok ? one : t;
    }
    tokens.assign(1, unicode::from_bytes_lossy(bytes));
  }
};

// "<0x41>" tokens back to bytes; a run of them that is not valid UTF-8
// becomes one U+FFFD per byte.
class ByteFallback final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    const auto flush = [&] {
      if (run.empty()) return;
      if (unicode::find_invalid(run) == std::string::npos) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
    };
    for (std::string& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') byte = hex_byte(t[3], t[4]);
      if (byte >= 0) {
        run += char(byte);
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex_byte(char hi, char lo) {
    const auto digit = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int h = digit(hi), l = digit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class Fuse final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters of
// every token.
class Strip final : public Decoder {
 public:
  Strip(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, character)
    for (std::string& t : tokens) {
      chars.clear();
      size_t i = 0;
      while (i < t.size()) {
        const size_t b = i;
        chars.emplace_back(b, unicode::next_cp(t, i));
      }
      size_t start_cut = 0, stop_cut = chars.size();
      for (size_t k = 0; k < start_ && k < chars.size() && chars[k].second == content_; ++k) start_cut = k + 1;
      for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        const size_t idx = chars.size() - k - 1;
        if (chars[idx].second != content_) break;
        stop_cut = idx;
      }
      if (start_cut >= stop_cut) {
        t.clear();
        continue;
      }
      const size_t b = chars[start_cut].first;
      const size_t e = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class Replace final : public Decoder {
 public:
  Replace(std::unique_ptr<Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (std::string& t : tokens) {
      re_->find_all(t, matches);
      if (matches.empty()) continue;
      std::string out;
      size_t last = 0;
      for (auto [b, e] : matches) {
        out.append(t, last, b - last);
        out += content_;
        last = e;
      }
      out.append(t, last, std::string::npos);
      t.swap(out);
    }
  }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

// The replacement character becomes a space, except in the first token,
// where it is dropped (it was prepended) unless prepend_scheme is "never".
class Metaspace final : public Decoder {
 public:
  Metaspace(char32_t rep, bool prepends) : rep_(rep), prepends_(prepends) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string& t = tokens[k];
      std::string out;
      out.reserve(t.size());
      size_t i = 0;
      while (i < t.size()) {
        const size_t b = i;
        const char32_t c = unicode::next_cp(t, i);
        if (c != rep_) out.append(t, b, i - b);
        else if (!(k == 0 && prepends_)) out += ' ';
      }
      t.swap(out);
    }
  }

 private:
  char32_t rep_;
  bool prepends_;
};

// BPEDecoder: the end-of-word suffix becomes a space (the last one vanishes).
class BpeSuffix final : public Decoder {
 public:
  explicit BpeSuffix(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string& t = tokens[k];
      std::string out;
      size_t pos = 0, hit;
      while (!suffix_.empty() && (hit = t.find(suffix_, pos)) != std::string::npos) {
        out.append(t, pos, hit - pos);
        if (k + 1 != tokens.size()) out += ' ';
        pos = hit + suffix_.size();
      }
      out.append(t, pos, std::string::npos);
      t.swap(out);
    }
  }

 private:
  std::string suffix_;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> stages) : stages_(std::move(stages)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : stages_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> stages_;
};

char32_t one_char(const json& j, const char* key, const JsonPlace& at) {
  const std::string s = string_field(j, key, at);
  size_t i = 0;
  if (s.empty() || unicode::find_invalid(s) != std::string::npos || (unicode::next_cp(s, i), i != s.size()))
    at.at(key).fail("expected a single character");
  i = 0;
  return unicode::next_cp(s, i);
}

size_t count_field(const json& j, const char* key, const JsonPlace& at) {
  const json& v = field(j, key, at);
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    at.at(key).fail("expected a non-negative integer");
  return v.get<size_t>();
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const JsonPlace& at) {
  const std::string type = type_of(j, at);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip")
    return std::make_unique<Strip>(one_char(j, "content", at), count_field(j, "start", at), count_field(j, "stop", at));
  if (type == "Replace") return std::make_unique<Replace>(compile_pattern(j, at), string_field(j, "content", at));
  if (type == "Metaspace") {
    bool prepends = true;  // HF's default scheme is "always"
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null())
      prepends = string_field(j, "prepend_scheme", at) != "never";
    if (j.contains("add_prefix_space") && !bool_field(j, "add_prefix_space", at, true)) prepends = false;
    return std::make_unique<Metaspace>(one_char(j, "replacement", at), prepends);
  }
  if (type == "BPEDecoder") {
    const std::string suffix = j.contains("suffix") ? string_field(j, "suffix", at) : "</w>";
    return std::make_unique<BpeSuffix>(suffix);
  }
  if (type == "Sequence") {
    const json& list = field(j, "decoders", at);
    if (!list.is_array()) at.at("decoders").fail("expected a list");
    std::vector<std::unique_ptr<Decoder>> stages;
    for (size_t i = 0; i < list.size(); ++i) stages.push_back(make_decoder(list[i], at.at("decoders").at(i)));
    return std::make_unique<Sequence>(std::move(stages));
  }
  unknown_type("decoder", type,
               {"ByteLevel", "ByteFallback", "Fuse", "Strip", "Replace", "Metaspace", "BPEDecoder", "Sequence"}, at);
}

}  // namespace ssalab::tokenizer
