// The BPE model, byte-level (GPT-2, Llama 3, Qwen) and SentencePiece-style
// (Llama 2, Gemma: byte_fallback, fuse_unk, unk_token) alike.
//
// A word starts as one symbol per character (or per byte token when a
// character is not in the vocabulary and byte_fallback is on, or <unk>), then
// the adjacent pair with the lowest merge rank is merged until none is left;
// among equal ranks the leftmost goes first. That is HF's order exactly (its
// heap pops (rank, position) minima and skips stale entries; a stale entry
// can never pass its check with a different pair, because a merge result is
// the concatenation of the two strings).
//
// Words are cached: most words of a text repeat, and the cache turns them
// into one hash lookup. Long words (SentencePiece-style tokenizers have no
// pre-tokenizer: a whole line is one word) go through the heap in
// O(n log n).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "engine/tokenizer/stages.h"
#include "engine/tokenizer/str_table.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;

namespace {

struct MergeRule {
  int32_t rank = 0;
  int32_t new_id = 0;
};

class Bpe final : public Model {
 public:
  Bpe(const json& j, const JsonPlace& at);

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  int32_t token_to_id(std::string_view token) const override {
    const int32_t* id = vocab_.find(token);
    return id ? *id : -1;
  }
  const std::string* id_to_token(int32_t id) const override {
    if (id < 0 || size_t(id) >= tokens_.size() || !present_[size_t(id)]) return nullptr;
    return &tokens_[size_t(id)];
  }
  size_t vocab_size() const override { return vocab_.size(); }
  int32_t id_bound() const override { return int32_t(tokens_.size()); }
  std::string name() const override { return "BPE"; }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_cached(std::string_view word, std::vector<int32_t>& out) const;
  int32_t unk_id() const;

  StrTable<int32_t> vocab_;
  std::vector<std::string> tokens_;  // by id
  std::vector<bool> present_;
  PairTable<MergeRule> merges_;
  std::string unk_token_;
  bool has_unk_ = false;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  int32_t byte_ids_[256];        // "<0xAB>" tokens for byte_fallback, -1 when absent
  // SentencePiece-style vocabularies never hold U+2581 after another
  // character, so no merge can join "x" and a following U+2581: a long word
  // (a whole line, when there is no pre-tokenizer) is then merged piece by
  // piece, "▁word" at a time, through the cache.
  bool cut_at_metaspace_ = false;

  // word -> (offset, count) into cache_ids_
  static constexpr size_t kCacheWords = 1 << 17, kCacheWordBytes = 256;
  mutable std::mutex cache_mutex_;
  mutable StrTable<std::pair<uint32_t, uint32_t>> cache_;
  mutable std::vector<int32_t> cache_ids_;
};

constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581, SentencePiece's space

std::string optional_string(const json& j, const char* key, const JsonPlace& at) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (!it->is_string()) at.at(key).fail("expected a string or null");
  return it->get<std::string>();
}

Bpe::Bpe(const json& j, const JsonPlace& at) {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  if (!j.contains("vocab") || !j.contains("merges")) at.fail("BPE model: missing vocab/merges");
  const json& vocab = j["vocab"];
  if (!vocab.is_object()) at.at("vocab").fail("expected an object {token: id}");
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      at.at("vocab").at(it.key()).fail("expected a non-negative integer id");
    const auto id = int32_t(it.value().get<int64_t>());
    vocab_.put(it.key(), id);
    max_id = std::max(max_id, id);
  }
  // Ids index the tables below, so ids far beyond the number of entries would
  // make them out of proportion to the file (fuzzing found a few bytes of
  // vocabulary asking for 6.8 GB). Real vocabularies are dense.
  if (max_id >= 0 && size_t(max_id) >= 2 * vocab.size() + 1024)
    at.at("vocab").fail("id " + std::to_string(max_id) + " for " + std::to_string(vocab.size()) +
                        " entries: ids must be dense (below twice the entry count + 1024)");
  tokens_.resize(size_t(max_id + 1));
  present_.assign(size_t(max_id + 1), false);
  vocab_.for_each([&](std::string_view tok, int32_t id) {
    tokens_[size_t(id)] = std::string(tok);
    present_[size_t(id)] = true;
  });

  if (j.contains("dropout") && !j["dropout"].is_null() && j["dropout"].get<double>() != 0.0)
    at.at("dropout").fail("BPE dropout is random; only null or 0 is supported");
  unk_token_ = optional_string(j, "unk_token", at);
  has_unk_ = j.contains("unk_token") && !j["unk_token"].is_null();
  fuse_unk_ = bool_field(j, "fuse_unk", at, false);
  byte_fallback_ = bool_field(j, "byte_fallback", at, false);
  ignore_merges_ = bool_field(j, "ignore_merges", at, false);
  prefix_ = optional_string(j, "continuing_subword_prefix", at);
  suffix_ = optional_string(j, "end_of_word_suffix", at);
  cut_at_metaspace_ = prefix_.empty() && suffix_.empty() && token_to_id(kMeta) >= 0;
  vocab_.for_each([&](std::string_view tok, int32_t) {
    for (size_t p = tok.find(kMeta, 1); p != std::string_view::npos && cut_at_metaspace_; p = tok.find(kMeta, p + 1))
      if (p < kMeta.size() || tok.compare(p - kMeta.size(), kMeta.size(), kMeta) != 0) cut_at_metaspace_ = false;
  });
  if (byte_fallback_) {
    char name[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      byte_ids_[b] = token_to_id(name);
    }
  }

  // merges: ["a b", ...] (legacy) or [["a", "b"], ...]
  const json& merges = j["merges"];
  const JsonPlace mat = at.at("merges");
  if (!merges.is_array()) mat.fail("expected a list of merges");
  merges_.reserve(merges.size());
  int32_t rank = 0;
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string& line = m.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
        mat.at(i).fail("merge \"" + line + "\" is not two tokens separated by one space");
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      mat.at(i).fail("expected \"a b\" or [\"a\", \"b\"]");
    }
    const int32_t ia = token_to_id(a), ib = token_to_id(b);
    if (ia < 0) mat.at(i).fail("merge token \"" + a + "\" is not in the vocabulary");
    if (ib < 0) mat.at(i).fail("merge token \"" + b + "\" is not in the vocabulary");
    if (b.size() < prefix_.size()) mat.at(i).fail("merge token \"" + b + "\" is shorter than the subword prefix");
    joined = a;
    joined.append(b, prefix_.size(), std::string::npos);
    const int32_t inew = token_to_id(joined);
    if (inew < 0) mat.at(i).fail("merge result \"" + joined + "\" is not in the vocabulary");
    merges_.put(ia, ib, MergeRule{rank++, inew});
  }
}

int32_t Bpe::unk_id() const {
  const int32_t id = token_to_id(unk_token_);
  if (id < 0) throw TokenizerError("BPE model: unk_token \"" + unk_token_ + "\" is not in the vocabulary");
  return id;
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = token_to_id(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  if (cut_at_metaspace_ && word.size() > kCacheWordBytes / 4) {
    // cut before each U+2581 that follows another character
    size_t start = 0;
    for (size_t p = word.find(kMeta, 1); p != std::string_view::npos; p = word.find(kMeta, p + kMeta.size())) {
      if (word.compare(p - kMeta.size(), kMeta.size(), kMeta) == 0) continue;  // inside a run of U+2581
      merge_cached(word.substr(start, p - start), out);
      start = p;
    }
    merge_cached(word.substr(start), out);
    return;
  }
  merge_cached(word, out);
}

void Bpe::merge_cached(std::string_view word, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() < kCacheWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (const auto* hit = cache_.find(word)) {
      out.insert(out.end(), cache_ids_.begin() + hit->first, cache_ids_.begin() + hit->first + hit->second);
      return;
    }
  }
  const size_t start = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheWords && !cache_.find(word)) {
      cache_.put(word, {uint32_t(cache_ids_.size()), uint32_t(out.size() - start)});
      cache_ids_.insert(cache_ids_.end(), out.begin() + std::ptrdiff_t(start), out.end());
    }
  }
}

struct Symbol {
  int32_t id;
  int32_t prev, next;
  uint32_t len;  // bytes of the word it covers; 0 once merged into its left neighbour
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std heap functions build a max-heap: "less" = later in merge order
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

void Bpe::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Candidate> heap;
  thread_local std::string buf;
  syms.clear();
  heap.clear();

  // 1. one symbol per character
  int32_t unk = -1;  // pending <unk> (fused with the next unknown character when fuse_unk)
  uint32_t unk_len = 0;
  const auto add = [&](int32_t id, uint32_t len) { syms.push_back(Symbol{id, 0, 0, len}); };
  size_t i = 0;
  while (i < w.size()) {
    const size_t b = i;
    i += unicode::cp_len(static_cast<unsigned char>(w[i]));
    std::string_view s = w.substr(b, i - b);
    if ((b != 0 && !prefix_.empty()) || (i == w.size() && !suffix_.empty())) {
      buf.clear();
      if (b != 0) buf += prefix_;
      buf.append(s.data(), s.size());
      if (i == w.size()) buf += suffix_;
      s = buf;
    }
    const auto len = uint32_t(i - b);
    const int32_t id = token_to_id(s);
    if (id >= 0) {
      if (unk >= 0) {
        add(unk, unk_len);
        unk = -1;
      }
      add(id, len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        for (unsigned char c : s) add(byte_ids_[c], 1);
        continue;
      }
    }
    if (has_unk_) {
      if (unk >= 0 && fuse_unk_) {
        unk_len += len;
      } else {
        if (unk >= 0) add(unk, unk_len);
        unk = unk_id();
        unk_len = len;
      }
    }
    // no unk_token: HF drops the character
  }
  if (unk >= 0) add(unk, unk_len);
  const auto n = int32_t(syms.size());
  for (int32_t k = 0; k < n; ++k) {
    syms[size_t(k)].prev = k - 1;
    syms[size_t(k)].next = k + 1 < n ? k + 1 : -1;
  }

  // 2. merges, lowest rank first
  for (int32_t k = 0; k + 1 < n; ++k)
    if (const MergeRule* m = merges_.find(syms[size_t(k)].id, syms[size_t(k + 1)].id))
      heap.push_back(Candidate{m->rank, k, m->new_id});
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = syms[size_t(top.pos)];
    if (cur.len == 0 || cur.next < 0) continue;
    Symbol& right = syms[size_t(cur.next)];
    const MergeRule* m = merges_.find(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    right.len = 0;
    cur.next = right.next;
    if (cur.next >= 0) syms[size_t(cur.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeRule* pm = merges_.find(syms[size_t(cur.prev)].id, cur.id)) {
        heap.push_back(Candidate{pm->rank, cur.prev, pm->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
    if (cur.next >= 0) {
      if (const MergeRule* nm = merges_.find(cur.id, syms[size_t(cur.next)].id)) {
        heap.push_back(Candidate{nm->rank, top.pos, nm->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
  for (const Symbol& s : syms)
    if (s.len) out.push_back(s.id);
}

}  // namespace

std::unique_ptr<Model> make_model(const json& j, const JsonPlace& at) {
  if (!j.is_object()) at.fail("expected the model object");
  // files written by old versions may lack "type": a BPE model is the one with merges
  const std::string type = j.contains("type") ? type_of(j, at) : (j.contains("merges") ? "BPE" : "");
  if (type == "BPE") return std::make_unique<Bpe>(j, at);
  if (type.empty()) at.fail("model has no \"type\" and no merges (supported: BPE)");
  unknown_type("model", type, {"BPE"}, at);
}

}  // namespace ssalab::tokenizer
