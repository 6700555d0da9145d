// Reference attention backend: plain LibTorch ops with explicit masks.
//
// Exact and differentiable on any device; it materialises scores one chunk of
// query rows at a time, so inference on long inputs stays within memory while
// training (short contexts) sees an ordinary autograd graph. The CUDA backend
// replaces it where supported; tests compare both against the naive loops at
// the bottom of this file.
#include <algorithm>
#include <cstdio>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <vector>

#include "engine/attention/attention.h"
#include "engine/attention/complete_blocks.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;
namespace F = torch::nn::functional;

std::string check_sparse_spec(const SparseSpec& spec, int64_t T) {
  if (spec.block_size < 1) return "block size must be >= 1";
  if (spec.top_k < 1) return "top-k must be >= 1 (the local block always takes one slot)";
  if (T < 1) return "empty sequence";
  if (spec.block_size > T)
    return "block size " + std::to_string(spec.block_size) + " does not fit in seq_len (" + std::to_string(T) +
           " tokens)";
  int64_t nb = (T + spec.block_size - 1) / spec.block_size;
  if (spec.top_k > nb)
    return "top-k " + std::to_string(spec.top_k) + " exceeds the " + std::to_string(nb) + " blocks of " +
           std::to_string(T) + " tokens at block size " + std::to_string(spec.block_size) +
           " (k cannot be larger than the number of blocks)";
  return "";
}

const char* to_string(SelectionRule r) { return r == SelectionRule::TopK ? "topk" : "nsa-chunked"; }

SelectionRule selection_rule_from_string(const std::string& s) {
  if (s == "topk") return SelectionRule::TopK;
  if (s == "nsa-chunked") return SelectionRule::NsaChunked;
  throw Error("unknown selection rule '" + s + "' (expected topk or nsa-chunked)");
}

const char* to_string(PooledKeys p) { return p == PooledKeys::Fp32 ? "fp32" : "bf16"; }

PooledKeys pooled_keys_from_string(const std::string& s) {
  if (s == "fp32") return PooledKeys::Fp32;
  if (s == "bf16") return PooledKeys::Bf16;
  throw Error("unknown key pooling '" + s + "' (expected fp32 or bf16)");
}

torch::ScalarType pooled_keys_dtype(PooledKeys p) { return p == PooledKeys::Fp32 ? torch::kFloat : torch::kBFloat16; }

SparseSpec model_sparse_spec(const ModelConfig& c) {
  return {c.block_size, c.block_counts, selection_rule_from_string(c.selection_rule),
          pooled_keys_from_string(c.pooled_keys)};
}

// The pooled keys selection scores against: the fp32 mean of each complete
// block, rounded to bf16 where the spec says (as a bf16 KV cache stores them).
static Tensor pooled_block_keys(const Tensor& k, const SparseSpec& spec) {
  Tensor means = complete_block_means(k.to(torch::kFloat), spec.block_size);
  if (spec.pooled_keys == PooledKeys::Fp32) return means;
  return means.to(pooled_keys_dtype(spec.pooled_keys)).to(torch::kFloat);
}

std::string offset_problem(int64_t q_offset, int64_t Tq, int64_t Tk) {
  if (q_offset >= 0 && q_offset + Tq <= Tk) return "";
  return "queries at positions [" + std::to_string(q_offset) + ", " + std::to_string(q_offset + Tq) +
         ") need keys up to there, but there are " + std::to_string(Tk) + " keys";
}

static std::string qkv_problem(const Tensor& q, const Tensor& k, int64_t q_offset) {
  if (q.dim() != 4 || k.dim() != 4) return "attention expects 4-d q (B,Hq,Tq,D) and k (B,Hkv,Tk,D)";
  if (q.size(0) != k.size(0) || q.size(3) != k.size(3)) return "attention: q and k disagree in batch or head dim";
  if (q.size(1) % k.size(1) != 0) return "attention: query heads must be a multiple of kv heads";
  std::string offset = offset_problem(q_offset, q.size(2), k.size(2));
  return offset.empty() ? "" : "attention: " + offset;
}

static void check_qkv(const Tensor& q, const Tensor& k, int64_t q_offset) {
  std::string problem = qkv_problem(q, k, q_offset);
  if (!problem.empty()) throw Error(problem);
}

std::string check_attention_call(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) {
  std::string problem = qkv_problem(q, k, q_offset);
  return problem.empty() ? check_sparse_spec(spec, k.size(2)) : problem;
}

std::string attention_problem(int64_t Tq, int64_t Tk, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                              const SparseSpec& spec) {
  if (Tq < 1 || Tk < 1 || num_heads < 1 || num_kv_heads < 1 || head_dim < 1) return "empty attention call";
  // one element stretched to the call's shape: sizes without the memory
  Tensor one = torch::zeros({1, 1, 1, 1});
  Tensor q = one.expand({1, num_heads, Tq, head_dim}), k = one.expand({1, num_kv_heads, Tk, head_dim});
  return reference_backend().supports(q, k, spec, Tk - Tq);
}


Tensor pooled_selection_scores(const Tensor& q_in, const Tensor& block_keys, int block_size, int64_t q_offset) {
  torch::NoGradGuard no_grad;
  const int64_t B = q_in.size(0), Hq = q_in.size(1), Tq = q_in.size(2), D = q_in.size(3);
  const int64_t Hkv = block_keys.size(1), G = Hq / Hkv, nbc = block_keys.size(2);
  auto opts = q_in.options().dtype(torch::kFloat);
  if (nbc == 0) return torch::zeros({B, Hkv, Tq, 0}, opts);
  Tensor q = q_in.to(torch::kFloat), kbar = block_keys.to(torch::kFloat);  // kbar (B, Hkv, nbc, D)
  // (B, Hkv, G, Tq, nbc): every head of a group against its group's pooled keys
  Tensor s = torch::matmul(q.view({B, Hkv, G, Tq, D}), kbar.unsqueeze(2).transpose(-1, -2)) / std::sqrt(double(D));
  Tensor visible = complete_blocks_visible(positions(q_offset, Tq, q.device()).view({Tq, 1}), nbc, block_size);
  s = s.masked_fill(visible.logical_not(), -std::numeric_limits<float>::infinity());
  // rows with no visible block are all -inf -> NaN after softmax; zero them
  Tensor p = torch::where(visible, torch::softmax(s, -1), torch::zeros({}, opts));
  return p.sum(2);  // (B, Hkv, Tq, nbc)
}

Tensor selection_scores(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) {
  check_qkv(q, k, q_offset);
  torch::NoGradGuard no_grad;
  return pooled_selection_scores(q, pooled_block_keys(k, spec), spec.block_size, q_offset);
}

// The `m` best candidates of each row (score >= 0 marks a candidate) as
// (indices, scores), falling score, ties to the lower index; -1 where a row
// has fewer than m candidates.
static std::pair<Tensor, Tensor> best_candidates(const Tensor& score, const Tensor& is_candidate, int64_t m) {
  // probabilities are >= 0, so -1 marks "not a candidate" and sorts last
  Tensor cand = score.masked_fill(is_candidate.logical_not(), -1.0f);
  auto sorted = torch::sort(cand, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  Tensor vals = std::get<0>(sorted).narrow(-1, 0, m), idx = std::get<1>(sorted).narrow(-1, 0, m);
  return {idx.masked_fill(vals < 0, -1), vals};
}

// Blocks per chunk of the released kernel's chunked top-k (docs/method.md).
constexpr int64_t kNsaChunkBlocks = 16;

Selection select_blocks(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) {
  check_qkv(q, k, q_offset);
  std::string problem = check_sparse_spec(spec, k.size(2));
  if (!problem.empty()) throw Error("sparse attention: " + problem);
  torch::NoGradGuard no_grad;
  return select_blocks_pooled(q, pooled_block_keys(k, spec), k.size(2), spec, q_offset);
}

Selection select_blocks_pooled(const Tensor& q, const Tensor& block_keys, int64_t Tk, const SparseSpec& spec,
                               int64_t q_offset) {
  const int64_t Tq = q.size(2);
  std::string problem = check_sparse_spec(spec, Tk);
  if (problem.empty()) problem = offset_problem(q_offset, Tq, Tk);
  if (problem.empty() && block_keys.size(2) != Tk / spec.block_size)
    problem = std::to_string(block_keys.size(2)) + " pooled block keys for " + std::to_string(Tk) +
              " keys at block size " + std::to_string(spec.block_size);
  if (!problem.empty()) throw Error("sparse attention: " + problem);
  torch::NoGradGuard no_grad;
  const int64_t B = q.size(0), Hkv = block_keys.size(1), K = spec.top_k, bs = spec.block_size;
  auto lopts = torch::TensorOptions().dtype(torch::kLong).device(q.device());
  Tensor own = torch::div(positions(q_offset, Tq, q.device()), bs, "floor");  // (Tq,) block of each query
  Tensor blocks = torch::full({B, Hkv, Tq, K}, -1, lopts);
  blocks.select(3, 0).copy_(own.view({1, 1, Tq}).expand({B, Hkv, Tq}));
  Tensor score = pooled_selection_scores(q, block_keys, spec.block_size, q_offset);  // (B, Hkv, Tq, nbc)
  const int64_t nbc = score.size(3), m = std::min<int64_t>(K - 1, nbc);
  if (m == 0) return {blocks, spec.block_size, q_offset};
  Tensor j = torch::arange(nbc, lopts).view({1, nbc});
  Tensor past = j < own.view({Tq, 1});  // (Tq, nbc)
  Tensor chosen = best_candidates(score, past, m).first;
  if (spec.rule == SelectionRule::NsaChunked && K >= kNsaChunkBlocks) {
    // The released kernel ranks in chunks of kNsaChunkBlocks (k = 16 there):
    // once a query's block is past the first chunk, half of the slots go to
    // the best blocks of the completed chunks and half (its own block
    // included) to the chunk holding it; slots a side cannot fill stay empty.
    const int64_t chunk = K == kNsaChunkBlocks ? kNsaChunkBlocks : K;  // k > 16: extrapolated, see docs
    Tensor chunk_start = torch::div(own, chunk, "floor") * chunk;      // (Tq,)
    Tensor before = j < chunk_start.view({Tq, 1});
    Tensor current = past.logical_and(before.logical_not());
    const int64_t m_before = std::min<int64_t>(K / 2, nbc), m_current = std::min<int64_t>(K - K / 2 - 1, nbc);
    auto [idx_b, val_b] = best_candidates(score, before, m_before);
    auto [idx_c, val_c] = best_candidates(score, current, m_current);
    // slot order as for topk: falling score, ties to the lower block index
    Tensor idx = torch::cat({idx_b, idx_c}, -1), val = torch::cat({val_b, val_c}, -1);
    Tensor key = val.masked_fill(idx < 0, -1.0f);
    Tensor tie = idx.masked_fill(idx < 0, nbc);
    // lexicographic (score desc, index asc): sort by index first, then stable by score
    Tensor by_index = std::get<1>(torch::sort(tie, /*stable=*/true, -1, /*descending=*/false));
    Tensor key_sorted = key.gather(-1, by_index), idx_sorted = idx.gather(-1, by_index);
    Tensor by_score = std::get<1>(torch::sort(key_sorted, /*stable=*/true, -1, /*descending=*/true));
    Tensor chunked = idx_sorted.gather(-1, by_score).narrow(-1, 0, std::min<int64_t>(m, idx.size(-1)));
    Tensor first_chunk = (own < chunk).view({1, 1, Tq, 1});  // still inside chunk 0: exact top-k
    Tensor merged = torch::full_like(chosen, -1);
    merged.narrow(-1, 0, chunked.size(-1)).copy_(chunked);
    chosen = torch::where(first_chunk, chosen, merged);
  }
  blocks.narrow(3, 1, m).copy_(chosen);
  return {blocks, spec.block_size, q_offset};
}

Tensor selection_block_mask(const Selection& sel, int64_t T) {
  const int64_t nb = (T + sel.block_size - 1) / sel.block_size;
  auto sizes = sel.blocks.sizes().vec();
  sizes.back() = nb + 1;  // one spare column absorbs the -1 slots
  Tensor idx = sel.blocks.masked_fill(sel.blocks < 0, nb);
  Tensor m = torch::zeros(sizes, sel.blocks.options().dtype(torch::kBool)).scatter_(-1, idx, true);
  return m.narrow(-1, 0, nb);
}

// (n, Tk) bool: key s is visible to the query at position p0 + i.
static Tensor causal_rows(int64_t p0, int64_t n, int64_t Tk, torch::Device dev) {
  auto o = torch::TensorOptions().dtype(torch::kLong).device(dev);
  return torch::arange(Tk, o).view({1, Tk}) <= positions(p0, n, dev).view({n, 1});
}

// Token mask of query rows [r0, r0+n): (B, Hkv, n, Tk).
static Tensor token_mask_rows(const Tensor& block_mask, int block_size, int64_t q_offset, int64_t r0, int64_t n,
                              int64_t Tk) {
  Tensor rows = block_mask.narrow(2, r0, n).repeat_interleave(block_size, -1).narrow(-1, 0, Tk);
  return rows.logical_and(causal_rows(q_offset + r0, n, Tk, block_mask.device()));
}

Tensor selection_token_mask(const Selection& sel, int64_t Tk) {
  return token_mask_rows(selection_block_mask(sel, Tk), sel.block_size, sel.q_offset, 0, sel.blocks.size(2), Tk);
}

// Rows per chunk so one chunk of scores holds about kScoreChunkElements.
static int64_t chunk_rows(int64_t heads, int64_t Tq, int64_t Tk) {
  return std::max<int64_t>(16, std::min<int64_t>(Tq, kScoreChunkElements / std::max<int64_t>(1, heads * Tk)));
}

// Masked softmax attention, grouped so K and V are never repeated per head.
// block_masks: zero, one or two (B, Hkv, Tq, nb) masks; each produces one output
// from the same scores (the dual stream of SSA training shares Q K^T).
static std::vector<Tensor> masked_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const std::vector<const Tensor*>& block_masks, int block_size,
                                            int64_t q_offset) {
  check_qkv(q, k, q_offset);
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv;
  const int64_t Tk = k.size(2);
  Tensor qg = q.reshape({B, Hkv, G, Tq, D});
  Tensor kt = k.unsqueeze(2).transpose(-1, -2);  // (B, Hkv, 1, D, Tk)
  Tensor vg = v.unsqueeze(2);                    // (B, Hkv, 1, Tk, D)
  const double scale = 1.0 / std::sqrt(double(D));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t step = chunk_rows(Hq, Tq, Tk);
  std::vector<std::vector<Tensor>> parts(block_masks.size());
  for (int64_t r0 = 0; r0 < Tq; r0 += step) {
    const int64_t n = std::min(step, Tq - r0);
    Tensor s = torch::matmul(qg.narrow(3, r0, n), kt) * scale;  // (B, Hkv, G, n, Tk)
    for (size_t i = 0; i < block_masks.size(); ++i) {
      Tensor keep = block_masks[i] ? token_mask_rows(*block_masks[i], block_size, q_offset, r0, n, Tk).unsqueeze(2)
                                   : causal_rows(q_offset + r0, n, Tk, q.device());
      Tensor p = torch::softmax(s.masked_fill(keep.logical_not(), neg_inf), -1);
      parts[i].push_back(torch::matmul(p, vg));  // (B, Hkv, G, n, D)
    }
  }
  std::vector<Tensor> out;
  for (auto& p : parts) out.push_back((p.size() == 1 ? p[0] : torch::cat(p, 3)).reshape({B, Hq, Tq, D}));
  return out;
}

Tensor AttentionBackend::decode(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& block_keys,
                                const SparseSpec& spec, Tensor* blocks_out) {
  const int64_t Tk = k.size(2), pos = Tk - 1;
  check_qkv(q, k, pos);
  if (q.size(2) != 1) throw Error("decode: one query per sequence, got " + std::to_string(q.size(2)));
  Selection sel = select_blocks_pooled(q, block_keys, Tk, spec, pos);
  if (blocks_out) *blocks_out = sel.blocks;
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv, K = spec.top_k;
  const int64_t bs = spec.block_size, n = K * bs;
  // the selected blocks' key positions (B, Hkv, K * bs); empty slots and
  // positions past the query are read as position 0 and masked out
  Tensor blocks = sel.blocks.view({B, Hkv, K, 1});
  Tensor t = blocks * bs + torch::arange(bs, blocks.options()).view({1, 1, 1, bs});
  Tensor keep = (blocks >= 0).logical_and(t <= pos).view({B, Hkv, 1, 1, n});
  Tensor idx = t.clamp(0, pos).view({B, Hkv, n, 1}).expand({B, Hkv, n, D});
  Tensor ks = k.gather(2, idx), vs = v.gather(2, idx);  // (B, Hkv, n, D)
  Tensor s = torch::matmul(q.reshape({B, Hkv, G, 1, D}), ks.unsqueeze(2).transpose(-1, -2)) / std::sqrt(double(D));
  s = s.masked_fill(keep.logical_not(), -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(s, -1), vs.unsqueeze(2)).reshape({B, Hq, 1, D});
}

void pool_completed_blocks(const Tensor& keys, Tensor& block_keys, int64_t from_token, int64_t to_token,
                           int block_size) {
  torch::NoGradGuard no_grad;
  const int64_t first = from_token / block_size, last = to_token / block_size;
  if (last <= first) return;
  Tensor done = keys.narrow(2, first * block_size, (last - first) * block_size).to(torch::kFloat);
  block_keys.narrow(2, first, last - first).copy_(complete_block_means(done, block_size));
}

void AttentionBackend::append_to_cache(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                       Tensor& block_keys, int64_t length, int block_size) {
  torch::NoGradGuard no_grad;
  const int64_t T = k.size(2);
  k_cache.narrow(2, length, T).copy_(k);
  v_cache.narrow(2, length, T).copy_(v);
  pool_completed_blocks(k_cache, block_keys, length, length + T, block_size);
}

namespace {

class ReferenceBackend final : public AttentionBackend {
 public:
  const char* name() const override { return "reference"; }
  std::string supports(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) const override {
    return check_attention_call(q, k, spec, q_offset);
  }
  Selection select(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) override {
    return select_blocks(q, k, spec, q_offset);
  }
  Tensor full(const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_offset) override {
    return masked_attention(q, k, v, {nullptr}, 1, q_offset)[0];
  }
  Tensor sparse(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    Tensor bm = selection_block_mask(sel, k.size(2));
    return masked_attention(q, k, v, {&bm}, sel.block_size, sel.q_offset)[0];
  }
  std::pair<Tensor, Tensor> dual(const Tensor& q, const Tensor& k, const Tensor& v, const Selection& sel) override {
    Tensor bm = selection_block_mask(sel, k.size(2));
    auto out = masked_attention(q, k, v, {nullptr, &bm}, sel.block_size, sel.q_offset);
    return {out[0], out[1]};
  }
};

// The latest fallback reason, and the reasons already logged.
struct FallbackLog {
  std::mutex mutex;
  std::string last;
  std::set<std::string> logged;
};

FallbackLog& fallback_log() {
  static FallbackLog log;
  return log;
}

void note_fallback(const std::string& reason) {
  FallbackLog& log = fallback_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  log.last = reason;
  if (log.logged.insert(reason).second)
    std::fprintf(stderr, "[ssalab] attention on the reference path, not the CUDA kernels: %s\n", reason.c_str());
}

}  // namespace

AttentionBackend& reference_backend() {
  static ReferenceBackend backend;
  return backend;
}

AttentionBackend& pick_backend(const Tensor& q, const Tensor& k, const SparseSpec& spec, int64_t q_offset) {
  if (!q.is_cuda()) return reference_backend();  // the CPU has no other backend: nothing to report
  AttentionBackend* cuda = cuda_backend();
  if (!cuda) {
    note_fallback("this build has no CUDA kernels (configure with -DSSALAB_CUDA=ON)");
    return reference_backend();
  }
  std::string why = cuda->supports(q, k, spec, q_offset);
  if (why.empty()) return *cuda;
  note_fallback(why);
  return reference_backend();
}

std::string last_fallback() {
  FallbackLog& log = fallback_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  return log.last;
}

Tensor alignment_loss(const Tensor& h_full, const Tensor& h_sparse) {
  return torch::smooth_l1_loss(h_full, h_sparse, at::Reduction::Mean, /*beta=*/1.0);
}

// ---------------------------------------------------------------- naive loops (tests only)

static Tensor naive_attention_with(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, int64_t q_offset,
                                   const std::function<bool(int64_t b, int64_t g, int64_t t, int64_t s)>& keep) {
  check_qkv(q_in, k_in, q_offset);
  Tensor q = q_in.to(torch::kDouble).contiguous(), k = k_in.to(torch::kDouble).contiguous(),
         v = v_in.to(torch::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3), G = Hq / k.size(1);
  const int64_t Tk = k.size(2);
  Tensor out = torch::zeros_like(q);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  std::vector<double> w(Tk);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t g = h / G, t = q_offset + i;  // t: the query's position
        double mx = -INFINITY;
        for (int64_t s = 0; s < Tk; ++s) {
          w[s] = -INFINITY;
          if (s > t || !keep(b, g, t, s)) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[b][h][i][d] * ka[b][g][s][d];
          w[s] = dot / std::sqrt(double(D));
          mx = std::max(mx, w[s]);
        }
        double z = 0;
        for (int64_t s = 0; s < Tk; ++s) z += (w[s] = std::isinf(w[s]) ? 0.0 : std::exp(w[s] - mx));
        for (int64_t s = 0; s < Tk; ++s)
          for (int64_t d = 0; d < D; ++d) oa[b][h][i][d] += w[s] / z * va[b][g][s][d];
      }
  return out;
}

Tensor naive_full_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_offset) {
  return naive_attention_with(q, k, v, q_offset, [](int64_t, int64_t, int64_t, int64_t) { return true; });
}

// The `m` best of `cands` by falling score, ties to the lower block index.
static std::vector<int64_t> naive_best(std::vector<int64_t> cands, const std::vector<double>& score, size_t m) {
  std::stable_sort(cands.begin(), cands.end(), [&](int64_t a, int64_t c) { return score[a] > score[c]; });
  if (cands.size() > m) cands.resize(m);
  return cands;
}

Tensor naive_sparse_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v, const SparseSpec& spec,
                              Tensor* blocks_out, int64_t q_offset) {
  check_qkv(q_in, k_in, q_offset);
  Tensor q = q_in.to(torch::kDouble).contiguous(), k = k_in.to(torch::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), Tq = q.size(2), D = q.size(3), Hkv = k.size(1), G = Hq / Hkv;
  const int64_t bs = spec.block_size, K = spec.top_k, nbc = k.size(2) / bs;
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>();
  // chosen[b][g][i] = set of selected blocks of query row i
  std::vector<std::vector<std::vector<std::vector<int64_t>>>> chosen(
      B, std::vector<std::vector<std::vector<int64_t>>>(Hkv, std::vector<std::vector<int64_t>>(Tq)));
  Tensor blocks = torch::full({B, Hkv, Tq, K}, -1, torch::kLong);
  auto ba = blocks.accessor<int64_t, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < Hkv; ++g) {
      // pooled keys of complete blocks
      std::vector<std::vector<double>> kbar(nbc, std::vector<double>(D, 0.0));
      for (int64_t j = 0; j < nbc; ++j)
        for (int64_t s = j * bs; s < (j + 1) * bs; ++s)
          for (int64_t d = 0; d < D; ++d) kbar[j][d] += ka[b][g][s][d] / double(bs);
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t t = q_offset + i, own = t / bs;
        std::vector<double> score(nbc, 0.0);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          std::vector<double> logit;
          for (int64_t j = 0; j < nbc && (j + 1) * bs - 1 <= t; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qa[b][h][i][d] * kbar[j][d];
            logit.push_back(dot / std::sqrt(double(D)));
          }
          if (logit.empty()) continue;
          double mx = *std::max_element(logit.begin(), logit.end()), z = 0;
          for (double x : logit) z += std::exp(x - mx);
          for (size_t j = 0; j < logit.size(); ++j) score[j] += std::exp(logit[j] - mx) / z;
        }
        std::vector<int64_t> past, before, current;
        const int64_t chunk = std::max<int64_t>(K, 16), chunk_start = own / chunk * chunk;
        for (int64_t j = 0; j < own; ++j) {
          past.push_back(j);
          (j < chunk_start ? before : current).push_back(j);
        }
        std::vector<int64_t> rest;
        if (spec.rule == SelectionRule::NsaChunked && K >= 16 && own >= chunk) {
          rest = naive_best(before, score, size_t(K / 2));
          for (int64_t j : naive_best(current, score, size_t(K - K / 2 - 1))) rest.push_back(j);
          std::stable_sort(rest.begin(), rest.end(), [&](int64_t a, int64_t c) {
            return score[a] > score[c] || (score[a] == score[c] && a < c);
          });
        } else {
          rest = naive_best(past, score, size_t(K - 1));
        }
        auto& sel = chosen[b][g][i];
        sel.push_back(own);
        for (int64_t j : rest) sel.push_back(j);
        for (size_t s = 0; s < sel.size(); ++s) ba[b][g][i][s] = sel[s];
      }
    }
  if (blocks_out) *blocks_out = blocks;
  return naive_attention_with(q_in, k_in, v, q_offset, [&](int64_t b, int64_t g, int64_t t, int64_t s) {
    const auto& sel = chosen[b][g][t - q_offset];
    return std::find(sel.begin(), sel.end(), s / bs) != sel.end();
  });
}

}  // namespace ssalab
