#include "engine/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>

#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

// Oniguruma's \w: letters, marks, numbers, connector punctuation (PCRE2
// 10.42 leaves the marks out, which cuts Devanagari words at every virama).
constexpr const char* kWord = "\\p{L}\\p{M}\\p{N}\\p{Pc}";

std::string oniguruma_compatible(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 16);
  int class_depth = 0;  // inside [...] (POSIX [:alpha:] nests one more level)
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's') {
        out += class_depth ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !class_depth) {
        out += "[^\\s\\x{85}]";
      } else if (e == 'w') {
        out += class_depth ? kWord : "[" + std::string(kWord) + "]";
      } else if (e == 'W' && !class_depth) {
        out += "[^" + std::string(kWord) + "]";
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (c == '[') {
      // "[" opens a class outside one; inside, only "[:" opens a POSIX name
      if (!class_depth || (i + 1 < p.size() && p[i + 1] == ':')) {
        ++class_depth;
        out += c;
        // a "]" right after "[" or "[^" is a literal
        if (class_depth == 1) {
          if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
          if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
        }
        continue;
      }
    } else if (c == ']' && class_depth) {
      --class_depth;
    }
    out += c;
  }
  return out;
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-#&~ \t\n\r\v\f").find(c) != std::string_view::npos) {
      if (c == ' ') { out += "\\x20"; continue; }
      if (c == '\t') { out += "\\t"; continue; }
      if (c == '\n') { out += "\\n"; continue; }
      if (c == '\r') { out += "\\r"; continue; }
      if (c == '\v') { out += "\\x0B"; continue; }
      if (c == '\f') { out += "\\f"; continue; }
      out += '\\';
    }
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  const std::string translated = oniguruma_compatible(pattern);
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &err_offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw std::invalid_argument("invalid regex '" + pattern + "': " + reinterpret_cast<const char*>(msg) +
                                " (at offset " + std::to_string(err_offset) + " of '" + translated + "')");
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

namespace {

// Per-thread match state: match data for one pair of offsets and a JIT stack
// large enough for long whitespace runs.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchState() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  auto* code = static_cast<pcre2_code*>(code_);
  MatchState& st = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  size_t last_end = std::string_view::npos;
  while (pos <= text.size()) {
    const int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, 0, st.data, st.context)
                        : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw std::runtime_error("regex '" + pattern_ + "' failed: " + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const size_t b = ov[0], e = ov[1];
    if (b == e && e == last_end) {  // empty match glued to the previous one
      if (pos >= text.size()) break;
      pos += unicode::cp_len(static_cast<unsigned char>(text[pos]));
      continue;
    }
    out.emplace_back(b, e);
    last_end = e;
    pos = e;  // after an empty match the rule above moves the next search on
  }
}

}  // namespace ssalab::tokenizer
