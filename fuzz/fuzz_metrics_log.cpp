// metrics.jsonl as the app reads it while another process writes it
// (engine/train/metrics_log.h). The input arrives in pieces of random sizes,
// as appends do; whatever the pieces, the result must be the same as
// reading it whole, steps in increasing order, and nothing may crash.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/train/metrics_log.h"
#include "fuzz/fuzz_input.h"

namespace {

bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b)); }

bool same_log(const ssalab::MetricsLog& a, const ssalab::MetricsLog& b) {
  if (a.points().size() != b.points().size() || a.bad_lines() != b.bad_lines()) return false;
  for (size_t i = 0; i < a.points().size(); ++i) {
    const auto &p = a.points()[i], &q = b.points()[i];
    if (p.step != q.step || !same(p.loss, q.loss) || !same(p.ce_sparse, q.ce_sparse) ||
        !same(p.val_ppl_full, q.val_ppl_full) || !same(p.lr, q.lr))
      return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ssalab::fuzz::MemoryFile file("metrics.jsonl");
  if (size == 0) return 0;
  // the first byte sets the size of the appended pieces
  const size_t piece = 1 + data[0] % 97;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  ssalab::MetricsLog whole, pieces, polled(file.write(data + 1, size - 1));
  whole.feed(text);
  for (size_t at = 0; at < text.size(); at += piece) pieces.feed(text.substr(at, piece));
  // the file in at most ~16 reads: each opens it, which costs more than parsing
  const size_t read = std::max(piece, text.size() / 16 + 1);
  for (size_t at = 0; at < text.size(); at += read) polled.poll(read);
  if (!same_log(whole, pieces) || !same_log(whole, polled)) std::abort();
  for (size_t i = 1; i < whole.points().size(); ++i)
    if (whole.points()[i - 1].step >= whole.points()[i].step) std::abort();
  return 0;
}
