// Encode throughput of the tokenizer.json module, comparable with HF
// `tokenizers` as tests/fixtures/tokenizers/make_reference.py --bench times it:
// the same corpora (documents separated by the byte 0x1E), one warm-up pass,
// then RUNS timed passes of encode(doc, add_special_tokens=false) on one
// thread; the median pass gives MB/s. The checksum of the ids is the one the
// Python script prints, so a matching checksum means identical ids on the
// whole corpus.
//
//   bench_tokenizer [--runs N] TOKENIZER.json[.gz] CORPUS.txt...
//
// Prints one JSON line per corpus.
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/tokenizer/hf_tokenizer.h"

using ssalab::tokenizer::HfTokenizer;

namespace {

std::string read_maybe_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files as they are
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  gzclose(f);
  if (n < 0) throw std::runtime_error("cannot read " + path);
  return out;
}

uint64_t checksum(const std::vector<std::vector<int32_t>>& docs) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& ids : docs)
    for (int32_t id : ids) h = (h ^ uint64_t(int64_t(id) + 1)) * 1099511628211ull;
  return h;
}

std::string base_name(const std::string& p) {
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 3;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else args.emplace_back(argv[i]);
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: bench_tokenizer [--runs N] TOKENIZER.json[.gz] CORPUS.txt...\n");
    return 2;
  }
  try {
    // the tokenizer's name: its folder (tests/fixtures/tokenizers/llama3/tokenizer.json.gz -> llama3)
    std::string name = args[0];
    const size_t slash = name.find_last_of('/');
    name = slash == std::string::npos ? name : base_name(name.substr(0, slash));

    // tokenizer.json alone, as tokenizers.Tokenizer.from_str reads it (no tokenizer_config.json)
    const auto t0 = std::chrono::steady_clock::now();
    const HfTokenizer tok(read_maybe_gz(args[0]), args[0]);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    for (size_t c = 1; c < args.size(); ++c) {
      const std::string text = read_maybe_gz(args[c]);
      std::vector<std::string_view> docs;
      size_t b = 0;
      while (b <= text.size()) {
        size_t e = text.find('\x1e', b);
        if (e == std::string::npos) e = text.size();
        if (e > b) docs.emplace_back(text.data() + b, e - b);
        b = e + 1;
      }
      size_t bytes = 0;
      for (auto d : docs) bytes += d.size();

      std::vector<std::vector<int32_t>> ids;  // warm-up pass, kept for the checksum
      for (auto d : docs) ids.push_back(tok.encode(d, false));
      std::vector<double> times;
      for (int r = 0; r < runs; ++r) {
        const auto s = std::chrono::steady_clock::now();
        size_t n = 0;
        for (auto d : docs) n += tok.encode(d, false).size();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
        if (n == size_t(-1)) std::puts("");  // keep the loop's result alive
      }
      std::sort(times.begin(), times.end());
      const double med = times[times.size() / 2];
      size_t n_ids = 0;
      for (const auto& v : ids) n_ids += v.size();
      std::printf(
          "{\"impl\": \"ssalab\", \"tokenizer\": \"%s\", \"corpus\": \"%s\", \"bytes\": %zu, \"docs\": %zu, "
          "\"ids\": %zu, \"checksum\": \"%016llx\", \"median_s\": %.6f, \"mb_per_s\": %.3f, \"load_s\": %.3f}\n",
          name.c_str(), base_name(args[c]).c_str(), bytes, docs.size(), n_ids,
          static_cast<unsigned long long>(checksum(ids)), med, double(bytes) / med / 1e6, load_s);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
