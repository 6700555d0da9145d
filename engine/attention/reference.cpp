// Reference attention backend: plain LibTorch ops with explicit masks.
//
// Exact and differentiable on any device; it materialises scores one chunk of
// query rows at a time, so inference on long inputs stays within memory while
// training (short contexts) sees an ordinary autograd graph. The CUDA backend
// replaces it where supported; tests compare both against the naive loops at
// the bottom of this file.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "engine/attention/attention.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;
namespace F = torch::nn::functional;

std::string check_sparse_spec(const SparseSpec& spec, int64_t T) {
  if (spec.block_size < 1) return "block size must be >= 1";
  if (spec.top_k < 1) return "top-k must be >= 1 (the local block always takes one slot)";
  if (T < 1) return "empty sequence";
  if (spec.block_size > T)
    return "block size " + std::to_string(spec.block_size) + " does not fit in " + std::to_string(T) + " tokens";
  int64_t nb = (T + spec.block_size - 1) / spec.block_size;
  if (spec.top_k > nb)
    return "top-k " + std::to_string(spec.top_k) + " exceeds the " + std::to_string(nb) + " blocks of " +
           std::to_string(T) + " tokens at block size " + std::to_string(spec.block_size);
  return "";
}

static void check_qkv(const Tensor& q, const Tensor& k) {
  if (q.dim() != 4 || k.dim() != 4) throw Error("attention expects 4-d q (B,Hq,T,D) and k (B,Hkv,T,D)");
  if (q.size(0) != k.size(0) || q.size(2) != k.size(2) || q.size(3) != k.size(3))
    throw Error("attention: q and k disagree in batch, length or head dim");
  if (q.size(1) % k.size(1) != 0) throw Error("attention: query heads must be a multiple of kv heads");
}

Tensor selection_scores(const Tensor& q_in, const Tensor& k_in, int block_size) {
  check_qkv(q_in, k_in);
  torch::NoGradGuard no_grad;
  const int64_t B = q_in.size(0), Hq = q_in.size(1), T = q_in.size(2), D = q_in.size(3);
  const int64_t Hkv = k_in.size(1), G = Hq / Hkv, nbc = T / block_size;
  auto opts = q_in.options().dtype(torch::kFloat);
  if (nbc == 0) return torch::zeros({B, Hkv, T, 0}, opts);
  Tensor q = q_in.to(torch::kFloat), k = k_in.to(torch::kFloat);
  // (B, Hkv, nbc, D): mean of each complete block's keys
  Tensor kbar = k.narrow(2, 0, nbc * block_size).reshape({B, Hkv, nbc, block_size, D}).mean(3);
  // (B, Hkv, G, T, nbc): every head of a group against its group's pooled keys
  Tensor s = torch::matmul(q.view({B, Hkv, G, T, D}), kbar.unsqueeze(2).transpose(-1, -2)) / std::sqrt(double(D));
  auto dev = q.device();
  Tensor t = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(dev)).view({T, 1});
  Tensor j = torch::arange(nbc, torch::TensorOptions().dtype(torch::kLong).device(dev)).view({1, nbc});
  Tensor visible = (j + 1) * block_size - 1 <= t;  // (T, nbc): block complete at t
  s = s.masked_fill(visible.logical_not(), -std::numeric_limits<float>::infinity());
  // rows with no visible block are all -inf -> NaN after softmax; zero them
  Tensor p = torch::where(visible, torch::softmax(s, -1), torch::zeros({}, opts));
  return p.sum(2);  // (B, Hkv, T, nbc)
}

Selection select_blocks(const Tensor& q, const Tensor& k, const SparseSpec& spec) {
  const int64_t T = q.size(2);
  std::string problem = check_sparse_spec(spec, T);
  if (!problem.empty()) throw Error("sparse attention: " + problem);
  torch::NoGradGuard no_grad;
  const int64_t B = q.size(0), Hkv = k.size(1), K = spec.top_k, bs = spec.block_size;
  auto lopts = torch::TensorOptions().dtype(torch::kLong).device(q.device());
  Tensor own = torch::div(torch::arange(T, lopts), bs, "floor");  // (T,) block of each token
  Tensor blocks = torch::full({B, Hkv, T, K}, -1, lopts);
  blocks.select(3, 0).copy_(own.view({1, 1, T}).expand({B, Hkv, T}));
  Tensor score = selection_scores(q, k, spec.block_size);  // (B, Hkv, T, nbc)
  const int64_t nbc = score.size(3), m = std::min<int64_t>(K - 1, nbc);
  if (m > 0) {
    Tensor j = torch::arange(nbc, lopts).view({1, nbc});
    Tensor past = j < own.view({T, 1});  // (T, nbc)
    // probabilities are >= 0, so -1 marks "not a candidate" and sorts last
    Tensor cand = score.masked_fill(past.logical_not(), -1.0f);
    auto sorted = torch::sort(cand, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
    Tensor vals = std::get<0>(sorted).narrow(-1, 0, m), idx = std::get<1>(sorted).narrow(-1, 0, m);
    blocks.narrow(3, 1, m).copy_(idx.masked_fill(vals < 0, -1));
  }
  return {blocks, spec.block_size};
}

Tensor selection_block_mask(const Selection& sel, int64_t T) {
  const int64_t nb = (T + sel.block_size - 1) / sel.block_size;
  auto sizes = sel.blocks.sizes().vec();
  sizes.back() = nb + 1;  // one spare column absorbs the -1 slots
  Tensor idx = sel.blocks.masked_fill(sel.blocks < 0, nb);
  Tensor m = torch::zeros(sizes, sel.blocks.options().dtype(torch::kBool)).scatter_(-1, idx, true);
  return m.narrow(-1, 0, nb);
}

static Tensor causal_rows(int64_t r0, int64_t n, int64_t T, torch::Device dev) {
  auto o = torch::TensorOptions().dtype(torch::kLong).device(dev);
  return torch::arange(T, o).view({1, T}) <= torch::arange(r0, r0 + n, o).view({n, 1});  // (n, T)
}

// Token mask of query rows [r0, r0+n): (B, Hkv, n, T).
static Tensor token_mask_rows(const Tensor& block_mask, int block_size, int64_t r0, int64_t n, int64_t T) {
  Tensor rows = block_mask.narrow(2, r0, n).repeat_interleave(block_size, -1).narrow(-1, 0, T);
  return rows.logical_and(causal_rows(r0, n, T, block_mask.device()));
}

Tensor selection_token_mask(const Selection& sel, int64_t T) {
  return token_mask_rows(selection_block_mask(sel, T), sel.block_size, 0, T, T);
}

// Rows per chunk so one chunk of scores holds about kScoreChunkElements.
static int64_t chunk_rows(int64_t heads, int64_t T) {
  return std::max<int64_t>(16, std::min<int64_t>(T, kScoreChunkElements / std::max<int64_t>(1, heads * T)));
}

// Masked softmax attention, grouped so K and V are never repeated per head.
// block_masks: zero, one or two (B, Hkv, T, nb) masks; each produces one output
// from the same scores (the dual stream of SSA training shares Q K^T).
static std::vector<Tensor> masked_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const std::vector<const Tensor*>& block_masks, int block_size) {
  check_qkv(q, k);
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv;
  Tensor qg = q.reshape({B, Hkv, G, T, D});
  Tensor kt = k.unsqueeze(2).transpose(-1, -2);  // (B, Hkv, 1, D, T)
  Tensor vg = v.unsqueeze(2);                    // (B, Hkv, 1, T, D)
  const double scale = 1.0 / std::sqrt(double(D));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t step = chunk_rows(Hq, T);
  std::vector<std::vector<Tensor>> parts(block_masks.size());
  for (int64_t r0 = 0; r0 < T; r0 += step) {
    const int64_t n = std::min(step, T - r0);
    Tensor s = torch::matmul(qg.narrow(3, r0, n), kt) * scale;  // (B, Hkv, G, n, T)
    for (size_t i = 0; i < block_masks.size(); ++i) {
      Tensor keep = block_masks[i] ? token_mask_rows(*block_masks[i], block_size, r0, n, T).unsqueeze(2)
                                   : causal_rows(r0, n, T, q.device());
      Tensor p = torch::softmax(s.masked_fill(keep.logical_not(), neg_inf), -1);
      parts[i].push_back(torch::matmul(p, vg));  // (B, Hkv, G, n, D)
    }
  }
  std::vector<Tensor> out;
  for (auto& p : parts) out.push_back((p.size() == 1 ? p[0] : torch::cat(p, 3)).reshape({B, Hq, T, D}));
  return out;
}

namespace {

class ReferenceBackend final : public AttentionBackend {
 public:
  const char* name() const override { return "reference"; }
  std::string supports(const Tensor& q, const Tensor&, const SparseSpec& spec) const override {
    return check_sparse_spec(spec, q.size(2));
  }
  Selection select(const Tensor& q, const Tensor& k, const SparseSpec& spec) override {
    return select_blocks(q, k, spec);
  }
  Tensor full(const Tensor& q, const Tensor& k, const Tensor& v) override {
    return masked_attention(q, k, v, {nullptr}, 1)[0];
  }
  Tensor sparse(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    Tensor bm = selection_block_mask(sel, q.size(2));
    return masked_attention(q, k, v, {&bm}, sel.block_size)[0];
  }
  std::pair<Tensor, Tensor> dual(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    Tensor bm = selection_block_mask(sel, q.size(2));
    auto out = masked_attention(q, k, v, {nullptr, &bm}, sel.block_size);
    return {out[0], out[1]};
  }
};

}  // namespace

AttentionBackend& reference_backend() {
  static ReferenceBackend backend;
  return backend;
}

AttentionBackend& pick_backend(const Tensor& q, const Tensor& k, const SparseSpec& spec) {
  AttentionBackend* cuda = cuda_backend();
  if (cuda && q.is_cuda() && cuda->supports(q, k, spec).empty()) return *cuda;
  return reference_backend();
}

AlignmentLoss alignment_losses(const Tensor& h_full, const Tensor& h_sparse) {
  const auto mean = at::Reduction::Mean;
  return {torch::smooth_l1_loss(h_full, h_sparse.detach(), mean, /*beta=*/1.0),
          torch::smooth_l1_loss(h_full.detach(), h_sparse, mean, /*beta=*/1.0)};
}

// ---------------------------------------------------------------- naive loops (tests only)

static Tensor naive_attention_with(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                   const std::function<bool(int64_t b, int64_t g, int64_t t, int64_t s)>& keep) {
  Tensor q = q_in.to(torch::kDouble).contiguous(), k = k_in.to(torch::kDouble).contiguous(),
         v = v_in.to(torch::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3), G = Hq / k.size(1);
  Tensor out = torch::zeros_like(q);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  std::vector<double> w(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t g = h / G;
        double mx = -INFINITY;
        for (int64_t s = 0; s < T; ++s) {
          w[s] = -INFINITY;
          if (s > t || !keep(b, g, t, s)) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[b][h][t][d] * ka[b][g][s][d];
          w[s] = dot / std::sqrt(double(D));
          mx = std::max(mx, w[s]);
        }
        double z = 0;
        for (int64_t s = 0; s < T; ++s) z += (w[s] = std::isinf(w[s]) ? 0.0 : std::exp(w[s] - mx));
        for (int64_t s = 0; s < T; ++s)
          for (int64_t d = 0; d < D; ++d) oa[b][h][t][d] += w[s] / z * va[b][g][s][d];
      }
  return out;
}

Tensor naive_full_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  return naive_attention_with(q, k, v, [](int64_t, int64_t, int64_t, int64_t) { return true; });
}

Tensor naive_sparse_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v, const SparseSpec& spec,
                              Tensor* blocks_out) {
  Tensor q = q_in.to(torch::kDouble).contiguous(), k = k_in.to(torch::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv;
  const int64_t bs = spec.block_size, K = spec.top_k, nbc = T / bs;
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>();
  // chosen[b][g][t] = set of selected blocks
  std::vector<std::vector<std::vector<std::vector<int64_t>>>> chosen(
      B, std::vector<std::vector<std::vector<int64_t>>>(Hkv, std::vector<std::vector<int64_t>>(T)));
  Tensor blocks = torch::full({B, Hkv, T, K}, -1, torch::kLong);
  auto ba = blocks.accessor<int64_t, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < Hkv; ++g) {
      // pooled keys of complete blocks
      std::vector<std::vector<double>> kbar(nbc, std::vector<double>(D, 0.0));
      for (int64_t j = 0; j < nbc; ++j)
        for (int64_t s = j * bs; s < (j + 1) * bs; ++s)
          for (int64_t d = 0; d < D; ++d) kbar[j][d] += ka[b][g][s][d] / double(bs);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t own = t / bs;
        std::vector<double> score(nbc, 0.0);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          std::vector<double> logit;
          for (int64_t j = 0; j < nbc && (j + 1) * bs - 1 <= t; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qa[b][h][t][d] * kbar[j][d];
            logit.push_back(dot / std::sqrt(double(D)));
          }
          if (logit.empty()) continue;
          double mx = *std::max_element(logit.begin(), logit.end()), z = 0;
          for (double x : logit) z += std::exp(x - mx);
          for (size_t j = 0; j < logit.size(); ++j) score[j] += std::exp(logit[j] - mx) / z;
        }
        std::vector<int64_t> past;
        for (int64_t j = 0; j < own; ++j) past.push_back(j);
        std::stable_sort(past.begin(), past.end(), [&](int64_t a, int64_t c) { return score[a] > score[c]; });
        auto& sel = chosen[b][g][t];
        sel.push_back(own);
        for (size_t i = 0; i < past.size() && int64_t(sel.size()) < K; ++i) sel.push_back(past[i]);
        for (size_t i = 0; i < sel.size(); ++i) ba[b][g][t][i] = sel[i];
      }
    }
  if (blocks_out) *blocks_out = blocks;
  return naive_attention_with(q_in, k_in, v, [&](int64_t b, int64_t g, int64_t t, int64_t s) {
    const auto& sel = chosen[b][g][t];
    return std::find(sel.begin(), sel.end(), s / bs) != sel.end();
  });
}

}  // namespace ssalab
