#include "engine/data/corpus.h"

#include <dlfcn.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "engine/util/error.h"
#include "engine/util/files.h"
#include "engine/util/hash.h"

namespace fs = std::filesystem;

namespace ssalab {

// ---------------------------------------------------------------- reading

std::string default_corpus_path() { return "/usr/share/doc/python3.11/html/_sources"; }

size_t find_invalid_utf8(std::string_view s) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Lead byte decides the length and the smallest code point that may use
    // it (anything below is an overlong encoding).
    int len;
    uint32_t cp, min_cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min_cp = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min_cp = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min_cp = 0x10000;
    } else {
      return i;  // stray continuation byte or 0xF8..0xFF
    }
    if (n - i < static_cast<size_t>(len)) return i;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\n\r\f\v") == std::string_view::npos;
}

// Reads one file and rejects anything that is not UTF-8 text.
std::string read_text_file(const std::string& path) {
  std::string text = read_file(path);
  size_t nul = text.find('\0');
  if (nul != std::string::npos)
    throw Error(path + " looks binary (NUL byte at offset " + std::to_string(nul) +
                "); the corpus must be UTF-8 text");
  size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos)
    throw Error(path + " is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  return text;
}

// Regular files below `dir`, sorted by path. Hidden entries (".git",
// ".DS_Store", ...) are skipped: they are tool metadata, not corpus text.
std::vector<std::string> list_files(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  if (ec) throw Error("cannot read corpus folder " + dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error("cannot read corpus folder " + dir + ": " + ec.message());
    const fs::path& p = it->path();
    std::error_code entry_ec;  // a dangling symlink is simply not a regular file
    if (p.filename().string().rfind('.', 0) == 0) {
      if (it->is_directory(entry_ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(entry_ec)) files.push_back(p.string());
  }
  if (ec) throw Error("cannot read corpus folder " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<Document> read_corpus(const std::string& path) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error("corpus not found: " + path);

  std::vector<Document> docs;
  if (fs::is_directory(st)) {
    // A folder may hold empty files (e.g. placeholders): skip them, but any
    // binary or non-UTF-8 file is an error so nothing is silently dropped.
    for (const std::string& file : list_files(path)) {
      std::string text = read_text_file(file);
      if (!is_blank(text)) docs.push_back({file, std::move(text)});
    }
    if (docs.empty()) throw Error("corpus folder " + path + " holds no text (no non-empty files)");
  } else {
    std::string text = read_text_file(path);
    if (is_blank(text)) throw Error("corpus file " + path + " is empty");
    docs.push_back({path, std::move(text)});
  }
  return docs;
}

// ---------------------------------------------------------------- libsentencepiece
//
// Why dlopen instead of linking: Debian's libsentencepiece embeds and exports
// its own protobuf-lite, while libtorch loads libprotobuf.so.32. In one global
// symbol scope each hijacks the other's protobuf calls: the process segfaults
// at startup (libprotobuf's static init runs sentencepiece's MergeFromImpl) or,
// with the other link order, aborts on the first model load ("CHECK failed" in
// generated_message_util.cc). Loading it RTLD_LOCAL | RTLD_DEEPBIND keeps the
// two protobufs apart. So this file references no sentencepiece symbol at
// link time (check: `nm -u corpus.o | grep sentencepiece` prints nothing): it
// uses the function pointers below and virtual calls on objects the library
// built. Executables must not link libsentencepiece either: even unreferenced,
// ld adds it to satisfy libtorch's protobuf references. Only the headers are
// used. Mangled names are those of libsentencepiece 0.1.97 (Debian 12).

namespace {

namespace spm = sentencepiece;
using SpArgs = std::unordered_map<std::string, std::string>;

struct SpApi {
  void (*construct_processor)(void* self);            // SentencePieceProcessor()
  void (*destroy_status)(void* self);                 // util::Status::~Status()
  const char* (*status_message)(const void* self);    // util::Status::error_message()
  void (*set_min_log_level)(int level);               // logging::SetMinLogLevel
  spm::util::Status (*train)(const SpArgs& kwargs, spm::SentenceIterator* it, std::string* model);
};

void* sp_symbol(void* lib, const char* name) {
  void* f = ::dlsym(lib, name);
  if (!f) throw Error(std::string("libsentencepiece lacks ") + name + " (version 0.1.97 expected)");
  return f;
}

// The object layouts compiled in are 0.1.97's (the Debian 12 headers): the
// processor is constructed in our storage and its members are read inline.
// Another version's library would corrupt memory (it did: the GPU machine's
// system libsentencepiece, without Debian's first on LD_LIBRARY_PATH, crashed
// in Normalize), so the loaded file must carry 0.1.97's version string.
constexpr char kSentencepieceVersion[] = "0.1.97";

void check_sp_version(const void* symbol) {
  Dl_info info{};
  if (!::dladdr(symbol, &info) || !info.dli_fname) return;  // cannot tell: trust it
  const std::string path = info.dli_fname;
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const Error&) {
    return;
  }
  const std::string tag = std::string(1, '\0') + kSentencepieceVersion + std::string(1, '\0');
  if (bytes.find(tag) == std::string::npos)
    throw Error("the libsentencepiece loaded from " + path + " is not version " + kSentencepieceVersion +
                " (Debian 12's), whose object layout ssalab is built against; put Debian's libsentencepiece0 "
                "first on LD_LIBRARY_PATH (scripts/gpu_check.sh shows how)");
}

#if defined(__SANITIZE_ADDRESS__)
#define SSALAB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SSALAB_ASAN 1
#endif
#endif

SpApi load_sp_api() {
#ifdef SSALAB_ASAN
  // ASan aborts the process on RTLD_DEEPBIND, and without it the two
  // protobufs collide (above): in a sanitizer build, say so instead
  throw Error("sentencepiece cannot be loaded in an AddressSanitizer build (it needs RTLD_DEEPBIND)");
#endif
  // the trainer library pulls in libsentencepiece.so.0 into the same local scope
  void* lib = ::dlopen("libsentencepiece_train.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!lib) throw Error(std::string("cannot load libsentencepiece (package libsentencepiece0): ") + ::dlerror());
  SpApi api;
  api.construct_processor = reinterpret_cast<decltype(api.construct_processor)>(
      sp_symbol(lib, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"));
  check_sp_version(reinterpret_cast<const void*>(api.construct_processor));
  api.destroy_status = reinterpret_cast<decltype(api.destroy_status)>(sp_symbol(lib, "_ZN13sentencepiece4util6StatusD1Ev"));
  api.status_message = reinterpret_cast<decltype(api.status_message)>(
      sp_symbol(lib, "_ZNK13sentencepiece4util6Status13error_messageEv"));
  api.set_min_log_level = reinterpret_cast<decltype(api.set_min_log_level)>(
      sp_symbol(lib, "_ZN13sentencepiece7logging14SetMinLogLevelEi"));
  api.train = reinterpret_cast<decltype(api.train)>(sp_symbol(
      lib,
      "_ZN13sentencepiece20SentencePieceTrainer5TrainERKSt13unordered_mapINSt7__cxx1112basic_stringIcSt11char_"
      "traitsIcESaIcEEES7_St4hashIS7_ESt8equal_toIS7_ESaISt4pairIKS7_S7_EEEPNS_16SentenceIteratorEPS7_"));
  // sentencepiece logs every training step to stderr; keep info and warnings
  // out of the user's console (errors still reach us as Status)
  api.set_min_log_level(2);
  return api;
}

const SpApi& sp_api() {
  static const SpApi api = load_sp_api();  // thread-safe, retried if it threw
  return api;
}

// A util::Status returned by a sentencepiece call. Built in place (C++17
// guaranteed elision) and destroyed through the library, so neither the
// constructor nor the destructor is referenced at link time.
class SpStatus {
 public:
  template <class Call>
  explicit SpStatus(Call&& call) {
    new (buf_) spm::util::Status(call());
  }
  ~SpStatus() { sp_api().destroy_status(buf_); }
  SpStatus(const SpStatus&) = delete;
  SpStatus& operator=(const SpStatus&) = delete;

  bool ok() const { return std::launder(reinterpret_cast<const spm::util::Status*>(buf_))->ok(); }
  // The message without sentencepiece's "./src/file.cc(123) [condition] "
  // prefix, which means nothing to a user.
  std::string message() const {
    const char* m = sp_api().status_message(buf_);
    std::string msg = m ? m : "";
    size_t cond = msg.find(") [");
    if (msg.rfind("./", 0) == 0 && cond != std::string::npos) {
      size_t end = msg.find("] ", cond);
      msg = end == std::string::npos ? std::string() : msg.substr(end + 2);
    }
    while (!msg.empty() && (msg.back() == '.' || msg.back() == ' ' || msg.back() == '\n')) msg.pop_back();
    return msg.empty() ? "unreadable data" : msg;
  }

 private:
  alignas(spm::util::Status) unsigned char buf_[sizeof(spm::util::Status)];
};

}  // namespace

// ---------------------------------------------------------------- tokenizer

struct Tokenizer::Impl {
  Impl() {
    sp_api().construct_processor(storage);
    sp = std::launder(reinterpret_cast<spm::SentencePieceProcessor*>(storage));
  }
  ~Impl() { sp->~SentencePieceProcessor(); }  // virtual: runs the library's destructor
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  alignas(spm::SentencePieceProcessor) unsigned char storage[sizeof(spm::SentencePieceProcessor)];
  spm::SentencePieceProcessor* sp = nullptr;
  std::string bytes;  // serialized ModelProto, kept for checkpoints and cache keys
};

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

namespace {

// Training text budget: enough lines for a good vocabulary, small enough that
// training on the 11 MB default corpus stays well under a minute on 2 cores.
constexpr size_t kTrainBudgetBytes = 2'000'000;
constexpr size_t kMaxLineBytes = 4000;  // sentencepiece skips longer sentences anyway

// Non-blank lines of the corpus, sampled deterministically (by a hash of the
// line index) down to about kTrainBudgetBytes, one per line.
std::string training_text(const std::vector<Document>& docs) {
  std::vector<std::string_view> lines;
  size_t total = 0;
  for (const Document& d : docs) {
    std::string_view text = d.text;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      if (nl == std::string_view::npos) nl = text.size();
      std::string_view line = text.substr(pos, nl - pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!is_blank(line) && line.size() <= kMaxLineBytes) {
        lines.push_back(line);
        total += line.size();
      }
      pos = nl + 1;
    }
  }
  // keep a line when its hash falls below budget/total of the hash range
  const bool sample = total > kTrainBudgetBytes;
  const auto cut = sample ? static_cast<uint64_t>(double(kTrainBudgetBytes) / double(total) * 0x1p64) : 0;
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (sample && splitmix64(i) >= cut) continue;
    out.append(lines[i]);
    out += '\n';
  }
  return out;
}

// A temporary file removed when it goes out of scope.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& bytes) {
    static std::atomic<int> counter{0};
    path = (fs::temp_directory_path() /
            ("ssalab_spm_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".txt"))
               .string();
    write_file_atomic(path, bytes);
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

// Trainer settings. Identity normalization and kept whitespace make
// decode(encode(s)) == s exactly; byte_fallback encodes any UTF-8 (unseen
// characters become <0xNN> byte pieces). Layout: unk=0, eos=1, no bos/pad.
SpArgs trainer_args(int vocab_size, const std::string& input) {
  return {
      {"input", input},
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(vocab_size)},
      {"num_threads", "2"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      // Documents are encoded whole, so a word after '\n' has no "▁" prefix;
      // training lines must look the same, hence no dummy prefix.
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},  // indentation runs in reST/code
      {"character_coverage", "0.9995"},
      {"input_sentence_size", "0"},  // we sampled ourselves (deterministically)
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", std::to_string(kMaxLineBytes + 96)},
      {"unk_id", "0"},
      {"eos_id", "1"},
      {"bos_id", "-1"},
      {"pad_id", "-1"},
  };
}

// ---- protobuf wire format, just enough to edit one field of a ModelProto

bool read_varint(std::string_view b, size_t& pos, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && pos < b.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(b[pos++]);
    v |= uint64_t(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return true;
  }
  return false;
}

void write_varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7F) | 0x80);
  out += static_cast<char>(v);
}

// Copies message `msg`, dropping length-delimited field `drop_field` and
// passing the payload of field `edit_field` through `edit`. Empty on a
// malformed message.
template <class Edit>
std::optional<std::string> rewrite_fields(std::string_view msg, uint64_t drop_field, uint64_t edit_field, Edit edit) {
  std::string out;
  size_t pos = 0;
  while (pos < msg.size()) {
    const size_t start = pos;
    uint64_t tag, len = 0;
    if (!read_varint(msg, pos, tag)) return std::nullopt;
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (wire == 0) {
      if (!read_varint(msg, pos, len)) return std::nullopt;
    } else if (wire == 1 || wire == 5) {
      pos += wire == 1 ? 8 : 4;
    } else if (wire == 2) {
      if (!read_varint(msg, pos, len) || len > msg.size() - pos) return std::nullopt;
      if (field == drop_field) {
        pos += len;
        continue;
      }
      if (field == edit_field) {
        std::optional<std::string> payload = edit(msg.substr(pos, len));
        if (!payload) return std::nullopt;
        write_varint(out, tag);
        write_varint(out, payload->size());
        out += *payload;
        pos += len;
        continue;
      }
      pos += len;
    } else {
      return std::nullopt;  // groups: not used by sentencepiece
    }
    if (pos > msg.size()) return std::nullopt;
    out.append(msg.substr(start, pos - start));
  }
  return out;
}

// The trainer records its input file (our temporary, with a pid in its name)
// in ModelProto.trainer_spec (field 2) as TrainerSpec.input (field 1). Drop it
// so the same corpus gives the same bytes, and no /tmp path is shipped.
std::string strip_training_input(const std::string& model) {
  auto unused = [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
  auto no_input = [&](std::string_view spec) { return rewrite_fields(spec, 1, 0, unused); };
  std::optional<std::string> out = rewrite_fields(model, 0, 2, no_input);
  return out ? *out : model;
}

std::string training_error(const std::string& msg, int vocab_size) {
  std::string hint;
  if (msg.find("too high") != std::string::npos)
    hint = " (the corpus is too small for this vocabulary: try a smaller vocab size)";
  else if (msg.find("smaller than required_chars") != std::string::npos)
    hint = " (the corpus has more distinct characters than fit: try a larger vocab size)";
  return "tokenizer training failed (vocab size " + std::to_string(vocab_size) + "): " + msg + hint;
}

}  // namespace

Tokenizer Tokenizer::train(const std::vector<Document>& docs, int vocab_size, const std::string& model_path) {
  // 256 byte pieces + unk + eos + at least a few characters
  if (vocab_size < 260)
    throw Error("vocab size " + std::to_string(vocab_size) + " is too small (minimum 260: 256 byte pieces + specials)");
  std::string text = training_text(docs);
  if (text.empty()) throw Error("cannot train a tokenizer: the corpus has no text");

  TempFile input(text);
  std::string model;
  const SpArgs args = trainer_args(vocab_size, input.path);
  SpStatus status([&] { return sp_api().train(args, nullptr, &model); });
  if (!status.ok()) throw Error(training_error(status.message(), vocab_size));

  model = strip_training_input(model);
  Tokenizer tok = from_bytes(model);
  write_file_atomic(model_path, model);
  return tok;
}

Tokenizer Tokenizer::from_bytes(const std::string& model_proto) {
  Tokenizer tok;
  tok.impl_ = std::make_unique<Impl>();
  spm::SentencePieceProcessor& sp = *tok.impl_->sp;
  SpStatus status([&] { return sp.LoadFromSerializedProto(model_proto); });
  if (!status.ok()) throw Error("not a sentencepiece model: " + status.message());
  // eos separates documents in the token stream; a model without it is unusable
  if (sp.GetPieceSize() <= 0 || sp.eos_id() < 0) throw Error("sentencepiece model has no eos piece");
  tok.impl_->bytes = model_proto;
  return tok;
}

Tokenizer Tokenizer::load(const std::string& model_path) {
  std::string bytes = read_file(model_path);
  try {
    return from_bytes(bytes);
  } catch (const Error& e) {
    throw Error("cannot load tokenizer " + model_path + ": " + e.what());
  }
}

namespace {
[[noreturn]] void no_model() { throw Error("tokenizer has no model loaded (train or load one first)"); }
}  // namespace

std::vector<int> Tokenizer::encode(const std::string& text) const {
  if (!impl_) no_model();
  std::vector<int> ids;
  SpStatus status([&] { return impl_->sp->Encode(text, &ids); });
  if (!status.ok()) throw Error("tokenizer encode failed: " + status.message());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  if (!impl_) no_model();
  // sentencepiece does not range-check ids (out-of-range is undefined)
  const int n = impl_->sp->GetPieceSize();
  for (int id : ids)
    if (id < 0 || id >= n)
      throw Error("token id " + std::to_string(id) + " outside the vocabulary (size " + std::to_string(n) + ")");
  std::string out;
  SpStatus status([&] { return impl_->sp->Decode(ids, &out); });
  if (!status.ok()) throw Error("tokenizer decode failed: " + status.message());
  return out;
}

std::string Tokenizer::piece(int id) const {
  if (!impl_) no_model();
  const int n = impl_->sp->GetPieceSize();
  if (id < 0 || id >= n)
    throw Error("token id " + std::to_string(id) + " outside the vocabulary (size " + std::to_string(n) + ")");
  return impl_->sp->IdToPiece(id);
}

int Tokenizer::vocab_size() const {
  if (!impl_) no_model();
  return impl_->sp->GetPieceSize();
}

int Tokenizer::eos_id() const {
  if (!impl_) no_model();
  return impl_->sp->eos_id();
}

const std::string& Tokenizer::serialized() const {
  if (!impl_) no_model();
  return impl_->bytes;
}

// ---------------------------------------------------------------- token data

namespace {

// Path of a document relative to the corpus root: the split and the cache
// key must not depend on where the corpus happens to be mounted.
std::string relative_path(const std::string& doc_path, const std::string& root) {
  const fs::path p = fs::path(doc_path).lexically_normal();
  const fs::path r = fs::path(root).lexically_normal();
  if (p == r) return p.filename().string();  // single-file corpus
  fs::path rel = root.empty() ? fs::path() : p.lexically_relative(r);
  if (rel.empty() || rel == "." || *rel.begin() == "..") return p.generic_string();
  return rel.generic_string();
}

uint64_t cache_key(const std::vector<Document>& docs, const std::vector<std::string>& rel,
                   const Tokenizer& tok, double val_fraction) {
  uint64_t h = fnv1a("ssalab-token-data");
  h = fnv1a_u64(kTokenCacheVersion, h);
  h = fnv1a(tok.serialized(), h);
  h = fnv1a(&val_fraction, sizeof val_fraction, h);
  h = fnv1a_u64(docs.size(), h);
  // content hash rather than mtimes: robust to copies and touches, and cheap
  // since the texts are in memory anyway
  for (size_t i = 0; i < docs.size(); ++i) {
    h = fnv1a(rel[i], h);
    h = fnv1a_u64(docs[i].text.size(), h);
    h = fnv1a_u64(fnv1a(docs[i].text), h);
  }
  return h;
}

// Encodes every document; two threads over contiguous, byte-balanced halves
// so the result (indexed by document) does not depend on scheduling.
std::vector<std::vector<int>> encode_all(const std::vector<Document>& docs, const Tokenizer& tok) {
  std::vector<std::vector<int>> out(docs.size());
  size_t total = 0;
  for (const Document& d : docs) total += d.text.size();
  size_t mid = 0, acc = 0;
  while (mid < docs.size() && acc < total / 2) acc += docs[mid++].text.size();

  auto work = [&](size_t begin, size_t end, std::exception_ptr& err) {
    try {
      for (size_t i = begin; i < end; ++i) out[i] = tok.encode(docs[i].text);
    } catch (...) {
      err = std::current_exception();
    }
  };
  std::exception_ptr err_a, err_b;
  std::thread second(work, mid, docs.size(), std::ref(err_b));
  work(0, mid, err_a);
  second.join();
  if (err_a) std::rethrow_exception(err_a);
  if (err_b) std::rethrow_exception(err_b);
  return out;
}

// Which documents go to validation: hash bucket of the relative path, with
// fix-ups so that both sides are non-empty when there are >= 2 documents.
std::vector<bool> split_documents(const std::vector<std::string>& rel, double val_fraction) {
  const auto threshold = static_cast<uint64_t>(std::llround(val_fraction * 1000.0));
  std::vector<bool> is_val(rel.size());
  size_t n_val = 0;
  for (size_t i = 0; i < rel.size(); ++i) {
    is_val[i] = fnv1a(rel[i]) % 1000 < threshold;
    n_val += is_val[i];
  }
  if (rel.size() >= 2 && n_val == 0) is_val.back() = true;
  if (rel.size() >= 2 && n_val == rel.size()) is_val.front() = false;
  return is_val;
}

TokenData build_token_data(const std::vector<Document>& docs, const std::vector<std::string>& rel,
                           const Tokenizer& tok, double val_fraction) {
  std::vector<std::vector<int>> ids = encode_all(docs, tok);
  const int eos = tok.eos_id();
  TokenData d;
  if (docs.size() == 1) {
    // one document: its tail is the validation set
    std::vector<int32_t> all(ids[0].begin(), ids[0].end());
    all.push_back(eos);
    if (all.size() < 2) throw Error("corpus is too small to split into train and validation");
    const double frac = val_fraction > 0 ? val_fraction : 0.05;
    size_t n_val = std::max<size_t>(1, static_cast<size_t>(std::llround(all.size() * frac)));
    n_val = std::min(n_val, all.size() - 1);
    d.train.assign(all.begin(), all.end() - n_val);
    d.val.assign(all.end() - n_val, all.end());
    return d;
  }
  std::vector<bool> is_val = split_documents(rel, val_fraction);
  for (size_t i = 0; i < docs.size(); ++i) {
    auto& dst = is_val[i] ? d.val : d.train;
    dst.insert(dst.end(), ids[i].begin(), ids[i].end());
    dst.push_back(eos);
  }
  return d;
}

}  // namespace

TokenData load_token_data(const std::vector<Document>& docs, const std::string& corpus_root,
                          const Tokenizer& tok, const std::string& cache_path, double val_fraction) {
  if (docs.empty()) throw Error("no documents to tokenize");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw Error("validation fraction must be in [0, 1), got " + std::to_string(val_fraction));
  std::vector<std::string> rel;
  rel.reserve(docs.size());
  for (const Document& d : docs) rel.push_back(relative_path(d.path, corpus_root));

  const uint64_t key = cache_key(docs, rel, tok, val_fraction);
  if (!cache_path.empty())
    if (auto cached = read_token_cache(cache_path, key, tok.vocab_size())) return std::move(*cached);
  TokenData d = build_token_data(docs, rel, tok, val_fraction);
  if (!cache_path.empty()) write_token_cache(cache_path, key, d);
  return d;
}

}  // namespace ssalab
