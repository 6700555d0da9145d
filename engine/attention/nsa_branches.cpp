// NSA's compression and sliding-window branches in LibTorch ops (see nsa_branches.h).
//
// Why this shape: both branches see few keys per query (Tk / block_size
// pooled blocks, or `window` tokens), so neither materialises a Tq x Tk score
// matrix. Compression scores all pooled blocks at once (row-chunked only when
// that is large); the window branch takes, per chunk of query rows, the key
// span those rows can reach. Keys and values are grouped (B, Hkv, G, ...),
// never repeated per query head, as in reference.cpp.
#include "engine/attention/nsa_branches.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/attention/attention.h"
#include "engine/attention/complete_blocks.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

namespace {

// The shape checks of the attention contract, for v as well.
void check_call(const char* what, const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_offset) {
  auto fail = [&](const std::string& why) { throw Error(std::string(what) + ": " + why); };
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) fail("expects 4-d q (B,Hq,Tq,D) and k, v (B,Hkv,Tk,D)");
  if (q.size(0) != k.size(0) || q.size(3) != k.size(3)) fail("q and k disagree in batch or head dim");
  if (k.sizes() != v.sizes()) fail("k and v must have the same shape");
  if (q.size(1) % k.size(1) != 0) fail("query heads must be a multiple of kv heads");
  if (q_offset < 0 || q_offset + q.size(2) > k.size(2))
    fail("queries at positions [" + std::to_string(q_offset) + ", " + std::to_string(q_offset + q.size(2)) +
         ") need keys up to there, but there are " + std::to_string(k.size(2)) + " keys");
}

// Rows per chunk so that heads * rows * keys_per_row(rows) stays near
// kScoreChunkElements (at least 16 rows).
int64_t rows_per_chunk(int64_t heads, int64_t Tq, const std::function<int64_t(int64_t)>& keys_per_row) {
  int64_t n = std::max<int64_t>(1, Tq);
  while (n > 16 && heads * n * keys_per_row(n) > kScoreChunkElements) n = (n + 1) / 2;
  return n;
}

}  // namespace

Tensor compressed_attention(const Tensor& q, const Tensor& k, const Tensor& v, int block_size, int64_t q_offset) {
  check_call("compressed attention", q, k, v, q_offset);
  if (block_size < 1) throw Error("compressed attention: block size must be >= 1");
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv;
  // Only complete blocks can ever be seen: a partial last block of the keys
  // is not pooled (fla pools it over its present tokens but masks it out).
  const int64_t nbc = k.size(2) / block_size;
  if (nbc == 0) return torch::zeros_like(q);
  Tensor kbar = complete_block_means(k, block_size), vbar = complete_block_means(v, block_size);  // (B, Hkv, nbc, D)
  Tensor qg = q.reshape({B, Hkv, G, Tq, D});
  Tensor kt = kbar.unsqueeze(2).transpose(-1, -2);  // (B, Hkv, 1, D, nbc)
  Tensor vg = vbar.unsqueeze(2);                    // (B, Hkv, 1, nbc, D)
  const double scale = 1.0 / std::sqrt(double(D));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  auto dev = q.device();
  const int64_t step = rows_per_chunk(Hq, Tq, [&](int64_t) { return nbc; });
  std::vector<Tensor> parts;
  for (int64_t r0 = 0; r0 < Tq; r0 += step) {
    const int64_t n = std::min(step, Tq - r0);
    Tensor visible = complete_blocks_visible(positions(q_offset + r0, n, dev).view({n, 1}), nbc, block_size);
    // A row with no visible block would softmax to NaN, and a NaN row
    // poisons the backward pass even behind a where(). Such rows are
    // softmaxed unmasked and then zeroed by the multiplication below.
    Tensor none = visible.any(-1, /*keepdim=*/true).logical_not();  // (n, 1)
    Tensor s = torch::matmul(qg.narrow(3, r0, n), kt) * scale;      // (B, Hkv, G, n, nbc)
    Tensor a = torch::softmax(s.masked_fill(visible.logical_or(none).logical_not(), neg_inf), -1);
    a = a * visible.to(a.scalar_type());
    parts.push_back(torch::matmul(a, vg));  // (B, Hkv, G, n, D)
  }
  return (parts.size() == 1 ? parts[0] : torch::cat(parts, 3)).reshape({B, Hq, Tq, D});
}

Tensor window_attention(const Tensor& q, const Tensor& k, const Tensor& v, int window, int64_t q_offset) {
  check_call("sliding-window attention", q, k, v, q_offset);
  if (window < 1) throw Error("sliding-window attention: window must be >= 1");
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv;
  Tensor qg = q.reshape({B, Hkv, G, Tq, D});
  const double scale = 1.0 / std::sqrt(double(D));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  auto dev = q.device();
  const int64_t step = rows_per_chunk(Hq, Tq, [&](int64_t n) { return n + window - 1; });
  std::vector<Tensor> parts;
  for (int64_t r0 = 0; r0 < Tq; r0 += step) {
    const int64_t n = std::min(step, Tq - r0), p0 = q_offset + r0;
    // keys these rows can reach: (p0 - window, p0 + n - 1]
    const int64_t s0 = std::max<int64_t>(0, p0 - window + 1), span = p0 + n - s0;
    Tensor kt = k.narrow(2, s0, span).unsqueeze(2).transpose(-1, -2);  // (B, Hkv, 1, D, span)
    Tensor vg = v.narrow(2, s0, span).unsqueeze(2);                    // (B, Hkv, 1, span, D)
    Tensor p = positions(p0, n, dev).view({n, 1});
    Tensor s_pos = positions(s0, span, dev).view({1, span});
    Tensor keep = (s_pos <= p).logical_and(s_pos > p - window);  // (n, span); never an empty row
    Tensor s = torch::matmul(qg.narrow(3, r0, n), kt) * scale;     // (B, Hkv, G, n, span)
    Tensor a = torch::softmax(s.masked_fill(keep.logical_not(), neg_inf), -1);
    parts.push_back(torch::matmul(a, vg));  // (B, Hkv, G, n, D)
  }
  return (parts.size() == 1 ? parts[0] : torch::cat(parts, 3)).reshape({B, Hq, Tq, D});
}

// ---------------------------------------------------------------- naive loops (tests only)

namespace {

// One softmax-weighted sum per query over the keys `keys(t)` returns as
// (key vector, value vector) pairs, in double.
Tensor naive_rows(const Tensor& q_in, int64_t Hkv, int64_t q_offset,
                  const std::function<std::vector<std::pair<std::vector<double>, std::vector<double>>>(
                      int64_t b, int64_t g, int64_t t)>& keys) {
  Tensor q = q_in.to(torch::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3), G = Hq / Hkv;
  Tensor out = torch::zeros_like(q);
  auto qa = q.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        auto kv = keys(b, h / G, q_offset + i);
        if (kv.empty()) continue;  // nothing visible: the output stays 0
        std::vector<double> w(kv.size());
        double mx = -INFINITY;
        for (size_t s = 0; s < kv.size(); ++s) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[b][h][i][d] * kv[s].first[d];
          w[s] = dot / std::sqrt(double(D));
          mx = std::max(mx, w[s]);
        }
        double z = 0;
        for (double& x : w) z += (x = std::exp(x - mx));
        for (size_t s = 0; s < kv.size(); ++s)
          for (int64_t d = 0; d < D; ++d) oa[b][h][i][d] += w[s] / z * kv[s].second[d];
      }
  return out;
}

}  // namespace

Tensor naive_compressed_attention(const Tensor& q, const Tensor& k_in, const Tensor& v_in, int block_size,
                                  int64_t q_offset) {
  check_call("naive compressed attention", q, k_in, v_in, q_offset);
  Tensor k = k_in.to(torch::kDouble).contiguous(), v = v_in.to(torch::kDouble).contiguous();
  auto ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  const int64_t D = k.size(3), bs = block_size;
  return naive_rows(q, k.size(1), q_offset, [&](int64_t b, int64_t g, int64_t t) {
    std::vector<std::pair<std::vector<double>, std::vector<double>>> kv;
    for (int64_t j = 0; (j + 1) * bs - 1 <= t; ++j) {  // complete blocks at t
      std::vector<double> kb(D, 0.0), vb(D, 0.0);
      for (int64_t s = j * bs; s < (j + 1) * bs; ++s)
        for (int64_t d = 0; d < D; ++d) {
          kb[d] += ka[b][g][s][d] / double(bs);
          vb[d] += va[b][g][s][d] / double(bs);
        }
      kv.emplace_back(kb, vb);
    }
    return kv;
  });
}

Tensor naive_window_attention(const Tensor& q, const Tensor& k_in, const Tensor& v_in, int window,
                              int64_t q_offset) {
  check_call("naive sliding-window attention", q, k_in, v_in, q_offset);
  Tensor k = k_in.to(torch::kDouble).contiguous(), v = v_in.to(torch::kDouble).contiguous();
  auto ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  const int64_t D = k.size(3);
  return naive_rows(q, k.size(1), q_offset, [&](int64_t b, int64_t g, int64_t t) {
    std::vector<std::pair<std::vector<double>, std::vector<double>>> kv;
    for (int64_t s = 0; s <= t; ++s) {
      if (s <= t - window) continue;  // outside (t - window, t]
      std::vector<double> ks(D), vs(D);
      for (int64_t d = 0; d < D; ++d) {
        ks[d] = ka[b][g][s][d];
        vs[d] = va[b][g][s][d];
      }
      kv.emplace_back(ks, vs);
    }
    return kv;
  });
}

}  // namespace ssalab
