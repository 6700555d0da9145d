// UTF-8 and Unicode helpers for the tokenizer stages. Character properties
// and normalization forms come from utf8proc; the predicates below are named
// after the Rust functions HF `tokenizers` calls, and follow their meaning.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ssalab::tokenizer::unicode {

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
inline char32_t next_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) { ++i; return b0; }
  if (b0 < 0xE0) {
    char32_t c = (char32_t(b0 & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
    i += 2;
    return c;
  }
  if (b0 < 0xF0) {
    char32_t c = (char32_t(b0 & 0x0F) << 12) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 6) |
                 (static_cast<unsigned char>(s[i + 2]) & 0x3F);
    i += 3;
    return c;
  }
  char32_t c = (char32_t(b0 & 0x07) << 18) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 12) |
               (char32_t(static_cast<unsigned char>(s[i + 2]) & 0x3F) << 6) |
               (static_cast<unsigned char>(s[i + 3]) & 0x3F);
  i += 4;
  return c;
}

// Byte length of the UTF-8 sequence that starts with lead byte b (valid text).
inline size_t cp_len(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

void append_utf8(std::string& out, char32_t c);

// Offset of the first invalid UTF-8 sequence, or npos when the text is valid.
size_t find_invalid(std::string_view s);

// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one
// U+FFFD (the WHATWG / Unicode "substitution of maximal subparts" rule).
std::string from_bytes_lossy(std::string_view bytes);

bool is_whitespace(char32_t c);    // Rust char::is_whitespace (White_Space property)
bool is_alphanumeric(char32_t c);  // Rust char::is_alphanumeric (L*, Nl, N*)
bool is_numeric(char32_t c);       // Rust char::is_numeric (Nd, Nl, No)
bool is_word(char32_t c);          // regex \w: letters, marks, Nd, Nl, Pc, join controls
bool is_mark(char32_t c);          // general category M* (StripAccents)

// Normalization forms (utf8proc). The input must be valid UTF-8.
enum class Form { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, Form form);
// Rust char::to_lowercase applied to each character (no final-sigma rule).
std::string lowercase(std::string_view s);

}  // namespace ssalab::tokenizer::unicode
