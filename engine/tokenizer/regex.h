// Regular expressions for the Split pre-tokenizer and the Replace stages,
// through PCRE2 (UTF + UCP mode, JIT-compiled).
//
// HF `tokenizers` runs these patterns with Oniguruma. The two engines agree
// on the syntax the tokenizer families use (\p{L}, \p{N}, (?i:...),
// lookahead, possessive-free alternations); the one difference we know of is
// \s, which Oniguruma takes as the Unicode White_Space property (it includes
// U+0085 NEL) and PCRE2 as "Z category or \t\n\v\f\r", and \w, which
// Oniguruma takes as letters, marks, numbers and connector punctuation and
// PCRE2 10.42 as letters, numbers and "_". The constructor rewrites \s, \S,
// \w and \W so that they mean what Oniguruma means.
//
// Iteration follows Oniguruma's find_iter (as the onig crate drives it): an
// empty match right where the previous match ended is not reported.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ssalab::tokenizer {

class Regex {
 public:
  // Throws std::invalid_argument with PCRE2's message and offset.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Pattern that matches `literal` exactly.
  static std::string escape(std::string_view literal);

  // Non-overlapping matches as (begin, end) byte offsets. `text` must be
  // valid UTF-8 (not checked again here).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// The rewrite described above, exposed for tests.
std::string oniguruma_compatible(const std::string& pattern);

}  // namespace ssalab::tokenizer
