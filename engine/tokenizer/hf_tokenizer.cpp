#include "engine/tokenizer/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- added tokens

// Finds added tokens in text, leftmost-longest (as HF's Aho-Corasick
// automaton in MatchKind::LeftmostLongest; here a byte trie walked from each
// position that starts a pattern), then applies each token's
// single_word / lstrip / rstrip rules exactly where HF does.
class AddedTokenMatcher {
 public:
  struct Segment {
    size_t b, e;
    int32_t token;  // index into the added tokens, -1 for plain text
  };

  AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized) : tokens_(tokens), trie_(1) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const AddedToken& t = tokens[i];
      if (t.normalized != normalized || t.pattern.empty()) continue;
      int32_t node = 0;
      for (unsigned char c : t.pattern) {
        int32_t child = find_child(node, c);
        if (child < 0) {
          child = int32_t(trie_.size());
          trie_[size_t(node)].next.emplace_back(c, child);
          trie_.emplace_back();
        }
        node = child;
      }
      if (trie_[size_t(node)].token < 0) trie_[size_t(node)].token = int32_t(i);
      first_[static_cast<unsigned char>(t.pattern[0])] = true;
      ++count_;
    }
  }
  bool empty() const { return count_ == 0; }

  // Splits `s` into text and token segments (covering all of `s`).
  void split(std::string_view s, bool parse_special, const std::unordered_set<std::string>& specials,
             std::vector<Segment>& out) const {
    out.clear();
    size_t start_offset = 0, pos = 0;
    size_t start;
    int32_t tok;
    while (next(s, pos, start, tok)) {
      const AddedToken& t = tokens_[size_t(tok)];
      size_t stop = start + t.pattern.size();
      pos = stop;  // the automaton goes on after the match, whatever becomes of it
      if (!parse_special && specials.count(t.content)) continue;
      if (t.single_word) {
        const bool space_before = start == 0 || !ends_with_word(s.substr(0, start));
        const bool space_after = stop == s.size() || !starts_with_word(s.substr(stop));
        if (!space_before || !space_after) continue;
      }
      if (t.lstrip) start = std::max(leftmost_space_at_end(s.substr(0, start)), start_offset);
      if (t.rstrip) stop += spaces_at_start(s.substr(stop));
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, tok});
      start_offset = stop;
    }
    if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
  }

 private:
  // Leftmost position holding a token; the longest token there.
  bool next(std::string_view s, size_t from, size_t& start, int32_t& tok) const {
    for (size_t p = from; p < s.size(); ++p) {
      if (!first_[static_cast<unsigned char>(s[p])]) continue;
      int32_t node = 0, best = -1;
      for (size_t q = p; q < s.size(); ++q) {
        node = find_child(node, static_cast<unsigned char>(s[q]));
        if (node < 0) break;
        if (trie_[size_t(node)].token >= 0) best = trie_[size_t(node)].token;
      }
      if (best >= 0) {
        start = p;
        tok = best;
        return true;
      }
    }
    return false;
  }
  int32_t find_child(int32_t node, unsigned char c) const {
    for (const auto& [byte, child] : trie_[size_t(node)].next)
      if (byte == c) return child;
    return -1;
  }
  static char32_t last_cp(std::string_view s) {
    size_t b = s.size() - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    return unicode::next_cp(s, b);
  }
  static bool ends_with_word(std::string_view s) { return !s.empty() && unicode::is_word(last_cp(s)); }
  static bool starts_with_word(std::string_view s) {
    size_t i = 0;
    return !s.empty() && unicode::is_word(unicode::next_cp(s, i));
  }
  static size_t leftmost_space_at_end(std::string_view s) {
    size_t e = s.size();
    while (e > 0) {
      size_t b = e - 1;
      while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
      size_t i = b;
      if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
      e = b;
    }
    return e;
  }
  static size_t spaces_at_start(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
      size_t k = i;
      if (!unicode::is_whitespace(unicode::next_cp(s, k))) break;
      i = k;
    }
    return i;
  }

  // a byte trie of the patterns; node 0 is the root
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;
    int32_t token = -1;  // index of the token whose pattern ends here
  };
  const std::vector<AddedToken>& tokens_;
  std::vector<Node> trie_;
  std::array<bool, 256> first_{};  // bytes that start a pattern
  size_t count_ = 0;
};

// ---------------------------------------------------------------- loading

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) throw TokenizerError("error while reading " + path);
  return ss.str();
}

json parse_json(std::string_view text, const std::string& file) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {  // parse errors, and numbers out of range (406: "1E9999")
    throw TokenizerError(file + ": malformed JSON: " + e.what());
  }
}

// bos_token etc.: "<s>", {"content": "<s>", ...} or null
std::string token_string(const json& config, const char* key, const JsonPlace& at) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  at.at(key).fail("expected a token string, {\"content\": ...} or null");
}

}  // namespace

HfTokenizer::HfTokenizer(std::string_view tokenizer_json, const std::string& file, std::string_view config_json,
                         const std::string& config_file)
    : file_(file) {
  const json root = parse_json(tokenizer_json, file);
  const JsonPlace at{file, ""};
  if (!root.is_object()) at.fail("expected a JSON object at the top");
  if (root.contains("version") && root["version"] != "1.0")
    at.at("version").fail("unknown tokenizer.json version " + root["version"].dump() + " (supported: \"1.0\")");
  const auto stage = [&](const char* key) -> const json* {
    auto it = root.find(key);
    return it == root.end() || it->is_null() ? nullptr : &*it;
  };
  if (!stage("model")) at.fail("missing key \"model\"");
  model_ = make_model(*stage("model"), at.at("model"));
  if (const json* j = stage("normalizer")) normalizer_ = make_normalizer(*j, at.at("normalizer"));
  if (const json* j = stage("pre_tokenizer")) pre_tokenizer_ = make_pre_tokenizer(*j, at.at("pre_tokenizer"));
  if (const json* j = stage("post_processor")) post_processor_ = make_post_processor(*j, at.at("post_processor"));
  if (const json* j = stage("decoder")) decoder_ = make_decoder(*j, at.at("decoder"));
  if (const json* j = stage("added_tokens")) load_added_tokens(*j, at.at("added_tokens"));

  // one more than the largest id of the model vocabulary and the added tokens
  int32_t max_id = model_->id_bound() - 1;
  for (const AddedToken& t : added_) max_id = std::max(max_id, t.id);
  vocab_size_ = max_id + 1;

  if (post_processor_) {
    std::vector<int32_t> before, after;
    post_processor_->template_ids(before, after);
    if (!before.empty()) bos_id_ = before.front();
    if (!after.empty()) eos_id_ = after.back();
  }
  if (!config_json.empty()) apply_config(config_json, config_file);

  // what the matchers look for: normalized tokens as the normalizer writes them
  for (AddedToken& t : added_) {
    t.pattern = t.content;
    if (t.normalized && normalizer_) normalizer_->normalize(t.pattern);
  }
  raw_matcher_ = std::make_unique<AddedTokenMatcher>(added_, false);
  normalized_matcher_ = std::make_unique<AddedTokenMatcher>(added_, true);
}

HfTokenizer::~HfTokenizer() = default;

void HfTokenizer::load_added_tokens(const json& list, const JsonPlace& at) {
  if (!list.is_array()) at.fail("expected a list of added tokens");
  // HF's AddedVocabulary::add_tokens: a token keeps the model's id when the
  // model knows its content; otherwise ids continue after the model's
  // vocabulary, in file order (the "id" written in the file is not used).
  auto next_id = int32_t(model_->vocab_size());
  std::unordered_map<std::string, int32_t> by_content;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& j = list[i];
    const JsonPlace tat = at.at(i);
    AddedToken t;
    t.content = string_field(j, "content", tat);
    if (t.content.empty()) continue;
    if (unicode::find_invalid(t.content) != std::string::npos) tat.at("content").fail("not valid UTF-8");
    t.special = bool_field(j, "special", tat, false);
    t.single_word = bool_field(j, "single_word", tat, false);
    t.lstrip = bool_field(j, "lstrip", tat, false);
    t.rstrip = bool_field(j, "rstrip", tat, false);
    t.normalized = bool_field(j, "normalized", tat, !t.special);
    auto known = by_content.find(t.content);
    if (known != by_content.end()) t.id = known->second;
    else if ((t.id = model_->token_to_id(t.content)) < 0) t.id = next_id++;
    by_content[t.content] = t.id;
    added_by_content_[t.content] = t.id;
    if (t.special) special_contents_.insert(t.content);
    if (size_t(t.id) >= added_index_.size()) added_index_.resize(size_t(t.id) + 1, -1);
    if (added_index_[size_t(t.id)] >= 0) {
      added_[size_t(added_index_[size_t(t.id)])] = t;  // same id again: the later entry wins
    } else {
      added_index_[size_t(t.id)] = int32_t(added_.size());
      added_.push_back(t);
    }
  }
}

void HfTokenizer::apply_config(std::string_view config_json, const std::string& config_file) {
  const json config = parse_json(config_json, config_file);
  const JsonPlace at{config_file, ""};
  if (!config.is_object()) at.fail("expected a JSON object at the top");
  const std::string bos = token_string(config, "bos_token", at);
  const std::string eos = token_string(config, "eos_token", at);
  const int32_t bos_id = bos.empty() ? -1 : token_to_id(bos);
  const int32_t eos_id = eos.empty() ? -1 : token_to_id(eos);
  if (!bos.empty() && bos_id < 0) at.at("bos_token").fail("\"" + bos + "\" is not a token of " + file_);
  if (!eos.empty() && eos_id < 0) at.at("eos_token").fail("\"" + eos + "\" is not a token of " + file_);
  bos_id_ = bos_id;
  eos_id_ = eos_id;
  // transformers' Llama / Gemma tokenizers rebuild the post-processor from
  // add_bos_token (default true) and add_eos_token (default false).
  const std::string cls = config.value("tokenizer_class", std::string());
  if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast") use_llama_class_pipeline(config, at);
  const bool has_add_bos = config.contains("add_bos_token") && !config["add_bos_token"].is_null();
  const bool has_add_eos = config.contains("add_eos_token") && !config["add_eos_token"].is_null();
  if (!has_add_bos && !has_add_eos) return;
  const bool bos_by_default = cls.rfind("LlamaTokenizer", 0) == 0 || cls.rfind("GemmaTokenizer", 0) == 0 ||
                              cls.rfind("CodeLlamaTokenizer", 0) == 0;
  const bool add_bos = has_add_bos ? bool_field(config, "add_bos_token", at, false) : bos_by_default;
  const bool add_eos = has_add_eos ? bool_field(config, "add_eos_token", at, false) : false;
  if (add_bos && bos_id < 0) at.at("add_bos_token").fail("add_bos_token is true but there is no bos_token");
  if (add_eos && eos_id < 0) at.at("add_eos_token").fail("add_eos_token is true but there is no eos_token");
  std::vector<int32_t> before, after;
  if (add_bos) before.push_back(bos_id);
  if (add_eos) after.push_back(eos_id);
  post_processor_ = make_bos_eos_processor(std::move(before), std::move(after));
}

// transformers 5's LlamaTokenizer keeps only the vocabulary and merges of
// tokenizer.json and sets its own stages (models/llama/tokenization_llama.py):
// no normalizer, Metaspace(prepend_scheme, split=false), and a decoder that
// strips the prepended space. prepend_scheme is "never" without
// add_prefix_space, else "first", or "always" when `legacy`. AutoTokenizer
// gives those ids, whatever the file's normalizer says (the Llama 2 file's
// Prepend + Replace differs after special tokens and before leading spaces).
void HfTokenizer::use_llama_class_pipeline(const json& config, const JsonPlace& at) {
  const bool add_prefix_space = bool_field(config, "add_prefix_space", at, true);
  const bool legacy = bool_field(config, "legacy", at, false);
  const char* scheme = !add_prefix_space ? "never" : legacy ? "always" : "first";
  const JsonPlace here{at.file, "/tokenizer_class (LlamaTokenizer's own stages)"};
  normalizer_.reset();
  pre_tokenizer_ = make_pre_tokenizer(
      {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme}, {"split", false}}, here);
  json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                               {{"type", "ByteFallback"}},
                               {{"type", "Fuse"}}});
  if (add_prefix_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  decoder_ = make_decoder({{"type", "Sequence"}, {"decoders", decoders}}, here);
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_file(const std::string& path) {
  const std::string text = read_file(path);
  const fs::path config = fs::path(path).parent_path() / "tokenizer_config.json";
  std::string config_text;
  if (fs::exists(config)) config_text = read_file(config.string());
  return std::make_unique<HfTokenizer>(text, path, config_text, config.string());
}

// ---------------------------------------------------------------- encode / decode

std::vector<int32_t> HfTokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  const size_t bad = unicode::find_invalid(text);
  if (bad != std::string_view::npos)
    throw TokenizerError("text to encode is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (raw_matcher_->empty()) {
    encode_stretch(text, true, options.parse_special, ids);
  } else {
    std::vector<AddedTokenMatcher::Segment> segments;
    raw_matcher_->split(text, options.parse_special, special_contents_, segments);
    for (const auto& s : segments) {
      if (s.token >= 0) ids.push_back(added_[size_t(s.token)].id);
      else encode_stretch(text.substr(s.b, s.e - s.b), s.b == 0, options.parse_special, ids);
    }
  }
  if (post_processor_) post_processor_->process(ids, options.add_special_tokens);
  return ids;
}

void HfTokenizer::encode_stretch(std::string_view raw, bool at_start, bool parse_special,
                                 std::vector<int32_t>& ids) const {
  if (raw.empty()) return;
  std::string text(raw);
  if (normalizer_) normalizer_->normalize(text);
  std::vector<Piece> pieces;
  if (normalized_matcher_->empty()) {
    if (!text.empty()) pieces.push_back(Piece{std::move(text), at_start});
  } else {
    std::vector<AddedTokenMatcher::Segment> segments;
    normalized_matcher_->split(text, parse_special, special_contents_, segments);
    for (const auto& s : segments) {
      if (s.token >= 0) {
        // tokenize what came before, then the token, keeping the order
        if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
        for (const Piece& p : pieces) model_->tokenize(p.text, ids);
        pieces.clear();
        ids.push_back(added_[size_t(s.token)].id);
      } else if (s.e > s.b) {
        pieces.push_back(Piece{text.substr(s.b, s.e - s.b), at_start && s.b == 0});
      }
    }
  }
  if (pieces.empty()) return;
  if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
  for (const Piece& p : pieces) model_->tokenize(p.text, ids);
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* tok = nullptr;
    if (id >= 0 && size_t(id) < added_index_.size() && added_index_[size_t(id)] >= 0) {
      const AddedToken& t = added_[size_t(added_index_[size_t(id)])];
      tok = t.normalized ? &t.pattern : &t.content;
    } else {
      tok = model_->id_to_token(id);
    }
    if (!tok) continue;
    if (skip_special_tokens && special_contents_.count(*tok)) continue;
    tokens.push_back(*tok);
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

int32_t HfTokenizer::token_to_id(std::string_view token) const {
  if (!added_by_content_.empty()) {
    auto it = added_by_content_.find(std::string(token));
    if (it != added_by_content_.end()) return it->second;
  }
  return model_->token_to_id(token);
}

std::string HfTokenizer::id_to_token(int32_t id) const {
  if (id >= 0 && size_t(id) < added_index_.size() && added_index_[size_t(id)] >= 0) {
    const AddedToken& t = added_[size_t(added_index_[size_t(id)])];
    return t.normalized ? t.pattern : t.content;
  }
  const std::string* tok = model_->id_to_token(id);
  return tok ? *tok : std::string();
}

bool HfTokenizer::is_special(int32_t id) const {
  const std::string tok = id_to_token(id);
  return !tok.empty() && special_contents_.count(tok) > 0;
}

std::string HfTokenizer::describe() const {
  return "tokenizer.json: " + model_->name() + ", " + std::to_string(vocab_size_) + " ids (" +
         std::to_string(added_.size()) + " added tokens)";
}

}  // namespace ssalab::tokenizer
