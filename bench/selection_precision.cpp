// How exactly must block selection score q . kbar for its top-k to come out
// as the exact one? (issue 12, parts 1 and 4: the selection kernels' cost.)
//
// The selection kernels (kernels/select.cu, kernels/decode.cu) score a bf16
// query against the fp32 pooled block keys kbar on 16-bit tensor cores. They
// split kbar into 16-bit terms whose products with q are exact in the MMA's
// fp32 accumulator: three bf16 terms today, so three MMAs per product, which
// makes scoring most of the selection's cost at 32K tokens. This program
// measures, on the shipped models' own queries and keys and on random ones,
// how often each way of splitting changes the selection against one scored
// in fp64:
//   fp32 loop   q_d * kbar_d rounded and added in fp32, d in order (a plain
//               CPU reference)
//   bf16 x3     today's kernels: kbar = hi + mid + lo, three bf16 terms
//   fp16 x2     q scaled per head by a power of two into fp16's range and
//               converted (exact for bf16 values there), kbar scaled per
//               block likewise and split as hi + lo, two fp16 terms: 22 bits
//   bf16 x2     kbar = hi + mid (16 bits)
//   bf16 x1     kbar rounded to bf16 (8 bits)
//   fp16 x1/x2  the kernels' first pass (each head's softmax max and sum)
//               from fp16 x1 scores, the second (the probabilities summed
//               over the group) from fp16 x2: three MMAs per product-pair of
//               passes instead of six
// The tensor core is modelled as: the 16 products of a k-step summed exactly
// and rounded once to fp32, then added to the fp32 accumulator (round to
// nearest), smallest term first, as decode.cu issues them. (Hopper's
// accumulator does not round to nearest in every case; the model stands for
// "exact products, fp32 sums".) Every scheme's scores then go through the
// same fp64 softmax, group sum and top-k (ties to the lower block), so the
// only difference between the columns is the scoring.
//
//   ssalab_selection_precision [--models assets/models/ssa,assets/models/full,assets/models/moba]
//                              [--text-file F] [--tokens 2048] [--random-tokens 8192] [--rows 1024]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/bench_args.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/metrics/analysis.h"
#include "engine/model/transformer.h"
#include "engine/util/files.h"

using namespace ssalab;
using torch::Tensor;
namespace idx = torch::indexing;

namespace {

// ---------------------------------------------------------------- scoring schemes

// kbar (nb, D) fp32 as the 16-bit terms a scheme multiplies q by, each held in
// fp64 (exactly: they are 16-bit values).
std::vector<Tensor> bf16_terms(const Tensor& kbar, int count) {
  std::vector<Tensor> terms;
  Tensor rest = kbar.to(torch::kDouble);
  for (int i = 0; i < count; ++i) {
    Tensor term = rest.to(torch::kFloat).to(torch::kBFloat16).to(torch::kDouble);
    terms.push_back(term);
    rest = rest - term;  // exact: the difference of two nearby floats fits in fp64
  }
  return terms;
}

// The power-of-two exponent e that brings a row's largest |x| into
// [2^14, 2^15): scaled by 2^e, every value of the row lies in fp16's range and
// its small ones keep their bits down to 2^-24 of the largest (as the kernels
// scale each pooled block and each query head). x (..., D) -> (..., 1).
Tensor fp16_exponent(const Tensor& x) {
  Tensor amax = x.abs().amax(-1, /*keepdim=*/true).to(torch::kDouble);
  Tensor e = (14 - torch::floor(torch::log2(amax))).clamp_max(126);
  return torch::where(amax > 0, e, torch::zeros_like(e));
}

// kbar (nb, D) fp32, each block scaled by 2^e_j, as hi + lo fp16 terms.
std::vector<Tensor> fp16_terms(const Tensor& kbar, const Tensor& e) {
  Tensor x = kbar.to(torch::kDouble) * torch::exp2(e);
  Tensor hi = x.to(torch::kFloat).to(torch::kHalf).to(torch::kDouble);
  Tensor lo = (x - hi).to(torch::kFloat).to(torch::kHalf).to(torch::kDouble);
  return {hi, lo};
}

// The tensor-core model above: q (H, R, D) and terms (nb, D) in fp64 holding
// 16-bit values; returns fp32 scores (H, R, nb) before the 1/sqrt(D) scale.
Tensor mma_scores(const Tensor& q, const std::vector<Tensor>& terms) {
  const int64_t D = q.size(2);
  Tensor acc = torch::zeros({q.size(0), q.size(1), terms[0].size(0)}, torch::kFloat);
  for (int64_t ks = 0; ks < D; ks += 16) {
    Tensor qs = q.index({idx::Slice(), idx::Slice(), idx::Slice(ks, ks + 16)});
    for (auto it = terms.rbegin(); it != terms.rend(); ++it) {
      Tensor partial = torch::matmul(qs, it->index({idx::Slice(), idx::Slice(ks, ks + 16)}).t()).to(torch::kFloat);
      acc = acc + partial;
    }
  }
  return acc;
}

// Each product rounded to fp32 and added in fp32, d in order.
Tensor fp32_loop_scores(const Tensor& q, const Tensor& kbar) {
  Tensor qf = q.to(torch::kFloat), kf = kbar.to(torch::kFloat);
  Tensor acc = torch::zeros({q.size(0), q.size(1), kbar.size(0)}, torch::kFloat);
  for (int64_t d = 0; d < q.size(2); ++d)
    acc = acc + qf.index({idx::Slice(), idx::Slice(), idx::Slice(d, d + 1)}) * kf.index({idx::Slice(), d});
  return acc;
}

struct Scheme {
  std::string name;
  Tensor scores;       // (H, R, nb) fp64, scaled
  Tensor norm_scores;  // where defined: the scores each head's softmax max and sum come from
};

// q (H, R, D) bf16 values scaled per (head, row) and kbar per block into fp16,
// scored with `terms` of kbar's two, and scaled back as the kernel does:
// (acc * (scale * 2^-e_q)) * 2^-e_k, each product rounded to fp32.
Tensor fp16_scores(const Tensor& q, const Tensor& kb, int terms, double scale) {
  Tensor eq = fp16_exponent(q), ek = fp16_exponent(kb);
  Tensor q16 = (q.to(torch::kDouble) * torch::exp2(eq)).to(torch::kFloat).to(torch::kHalf).to(torch::kDouble);
  std::vector<Tensor> split = fp16_terms(kb, ek);
  split.resize(terms);
  Tensor row_scale = (scale * torch::exp2(-eq)).to(torch::kFloat);  // (H, R, 1)
  Tensor block_scale = torch::exp2(-ek).to(torch::kFloat).view({1, 1, -1});
  return (mma_scores(q16, split) * row_scale * block_scale).to(torch::kDouble);
}

// ---------------------------------------------------------------- selection

// Rows `rows` (token positions) of the query heads q (Hq, T, D) against the
// pooled keys kbar (Hkv, nb, D) fp32: each scheme's scaled scores (Hq, R, nb).
std::vector<Scheme> score_all(const Tensor& q_rows, const Tensor& kbar, int64_t group) {
  const int64_t Hq = q_rows.size(0), Hkv = kbar.size(0);
  const double scale = 1.0 / std::sqrt(double(q_rows.size(2)));
  std::vector<std::string> names = {"fp64", "fp32 loop", "bf16 x3", "fp16 x2", "bf16 x2", "bf16 x1", "fp16 x1/x2"};
  std::vector<Scheme> out;
  for (const std::string& name : names) {
    std::vector<Tensor> per_kv, norm_per_kv;
    for (int64_t g = 0; g < Hkv; ++g) {
      Tensor q = q_rows.index({idx::Slice(g * group, (g + 1) * group)});  // bf16 values
      Tensor kb = kbar[g];
      Tensor s;
      if (name == "fp64") s = torch::matmul(q.to(torch::kDouble), kb.to(torch::kDouble).t()) * scale;
      else if (name == "fp32 loop") s = (fp32_loop_scores(q, kb) * float(scale)).to(torch::kDouble);
      else if (name == "bf16 x3") s = (mma_scores(q.to(torch::kDouble), bf16_terms(kb, 3)) * float(scale)).to(torch::kDouble);
      else if (name == "bf16 x2") s = (mma_scores(q.to(torch::kDouble), bf16_terms(kb, 2)) * float(scale)).to(torch::kDouble);
      else if (name == "bf16 x1") s = (mma_scores(q.to(torch::kDouble), bf16_terms(kb, 1)) * float(scale)).to(torch::kDouble);
      else if (name == "fp16 x2") s = fp16_scores(q, kb, 2, scale);
      else {
        s = fp16_scores(q, kb, 2, scale);
        norm_per_kv.push_back(fp16_scores(q, kb, 1, scale));
      }
      per_kv.push_back(s);
    }
    out.push_back({name, torch::cat(per_kv, 0), norm_per_kv.empty() ? Tensor() : torch::cat(norm_per_kv, 0)});
  }
  return out;
}

struct Selected {
  Tensor slots;  // (Hkv, R, K - 1) int64 block indices, -1 where empty
  Tensor probs;  // (Hkv, R, nb) fp64 group-summed probabilities, -1 off the candidates
};

// The exact top-k rule (kernels/select.cuh) on scaled scores (Hq, R, nb):
// softmax over the complete blocks of each row, summed over the group's heads,
// the best K - 1 blocks before the own block, ties to the lower index.
// norm_scores, where defined, give each head's softmax max and sum (the
// kernels' first pass) and scores its numerators (the second).
Selected select_rows(const Tensor& scores, const Tensor& norm_scores, const Tensor& rows, int64_t Hkv, int bs,
                     int K) {
  const int64_t Hq = scores.size(0), R = scores.size(1), nb = scores.size(2);
  Tensor j = torch::arange(nb, torch::kLong).view({1, nb});
  Tensor complete = (j < ((rows + 1) / bs).view({R, 1}));  // (R, nb)
  Tensor candidate = (j < (rows / bs).view({R, 1}));
  Tensor s = scores.masked_fill(complete.logical_not().unsqueeze(0), -std::numeric_limits<double>::infinity());
  Tensor p;
  if (norm_scores.defined()) {
    Tensor n = norm_scores.masked_fill(complete.logical_not().unsqueeze(0), -std::numeric_limits<double>::infinity());
    Tensor m = std::get<0>(n.max(-1, /*keepdim=*/true));
    Tensor l = (n - m).exp().sum(-1, /*keepdim=*/true);
    p = ((s - m).exp() / l).view({Hkv, Hq / Hkv, R, nb}).sum(1);
  } else {
    p = torch::softmax(s, -1).view({Hkv, Hq / Hkv, R, nb}).sum(1);
  }
  p = p.masked_fill(candidate.logical_not().unsqueeze(0), -1.0);
  // stable sort, descending: equal values keep the lower index first
  auto sorted = torch::sort(p, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  Tensor values = std::get<0>(sorted).index({idx::Ellipsis, idx::Slice(0, K - 1)});
  Tensor slots = std::get<1>(sorted).index({idx::Ellipsis, idx::Slice(0, K - 1)});
  slots = slots.masked_fill(values < 0, -1);
  return {slots, p};
}

struct Tally {
  int64_t rows = 0, order_differs = 0, set_differs = 0;
  double max_abs_score_error = 0, max_abs_score = 0;
};

void add(Tally& t, const Selected& ref, const Selected& got, const Tensor& ref_scores, const Tensor& scores) {
  Tensor same_order = (ref.slots == got.slots).all(-1);
  Tensor same_set = (std::get<0>(ref.slots.sort(-1)) == std::get<0>(got.slots.sort(-1))).all(-1);
  t.rows += same_order.numel();
  t.order_differs += same_order.logical_not().sum().item<int64_t>();
  t.set_differs += same_set.logical_not().sum().item<int64_t>();
  t.max_abs_score_error = std::max(t.max_abs_score_error, (scores - ref_scores).abs().max().item<double>());
  t.max_abs_score = std::max(t.max_abs_score, ref_scores.abs().max().item<double>());
}

// How close each row's last selected block is to the first one left out
// (relative to the former), under fp64: rows closer than a scheme's error
// are the ones it can flip.
struct Margins {
  int64_t rows = 0, below_1e5 = 0, below_1e6 = 0, below_1e7 = 0;
};

void add_margins(Margins& m, const Selected& ref, int K) {
  auto sorted = torch::sort(ref.probs, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  Tensor v = std::get<0>(sorted);
  if (v.size(-1) < K) return;
  Tensor last = v.index({idx::Ellipsis, K - 2}), next = v.index({idx::Ellipsis, K - 1});
  Tensor real = next >= 0;  // a row with more candidates than slots
  Tensor gap = ((last - next) / last).masked_select(real);
  m.rows += gap.numel();
  m.below_1e5 += (gap < 1e-5).sum().item<int64_t>();
  m.below_1e6 += (gap < 1e-6).sum().item<int64_t>();
  m.below_1e7 += (gap < 1e-7).sum().item<int64_t>();
}

// ---------------------------------------------------------------- inputs

// Pooled keys as the cache and the kernels make them: each complete block's
// keys summed in token order in fp32, then divided by the block size.
Tensor pool_keys(const Tensor& k, int bs) {  // k (Hkv, T, D) -> (Hkv, T / bs, D) fp32
  const int64_t nb = k.size(1) / bs;
  Tensor kf = k.index({idx::Slice(), idx::Slice(0, nb * bs)}).to(torch::kFloat).view({k.size(0), nb, bs, k.size(2)});
  Tensor sum = torch::zeros({k.size(0), nb, k.size(2)}, torch::kFloat);
  for (int u = 0; u < bs; ++u) sum = sum + kf.index({idx::Slice(), idx::Slice(), u});
  return sum / float(bs);
}

struct Case {
  std::string name;
  Tensor q, k;  // (Hq, T, D), (Hkv, T, D) bf16
  int bs = 16, K = 16;
  int64_t first_row = 0, rows = 0;
};

struct Result {
  std::string name;
  std::vector<std::string> schemes;
  std::vector<Tally> tallies;
  Margins margins;
  int64_t q_outside_fp16 = 0, q_elements = 0;
};

Result run_case(const Case& c) {
  Result r;
  r.name = c.name;
  const int64_t Hq = c.q.size(0), Hkv = c.k.size(0), T = c.q.size(1);
  const int64_t first = std::max<int64_t>(c.first_row, int64_t(c.K) * c.bs);  // rows with a real choice
  const int64_t last = std::min<int64_t>(T, first + c.rows);
  Tensor rows = torch::arange(first, last, torch::kLong);
  Tensor kbar = pool_keys(c.k, c.bs);
  Tensor q_rows = c.q.index({idx::Slice(), idx::Slice(first, last)});
  Tensor qa = q_rows.to(torch::kFloat).abs();
  r.q_outside_fp16 = ((qa > 65504) | ((qa < 6.103515625e-05) & (qa > 0))).sum().item<int64_t>();
  r.q_elements = qa.numel();
  std::vector<Scheme> schemes = score_all(q_rows, kbar, Hq / Hkv);
  Selected ref = select_rows(schemes[0].scores, Tensor(), rows, Hkv, c.bs, c.K);
  add_margins(r.margins, ref, c.K);
  for (size_t i = 1; i < schemes.size(); ++i) {
    Tally t;
    add(t, ref, select_rows(schemes[i].scores, schemes[i].norm_scores, rows, Hkv, c.bs, c.K), schemes[0].scores,
        schemes[i].scores);
    r.schemes.push_back(schemes[i].name);
    r.tallies.push_back(t);
  }
  return r;
}

std::vector<Case> model_cases(const std::string& dir, const std::string& text, int64_t max_tokens) {
  LoadedCheckpoint ck = load_checkpoint(dir);
  std::vector<int> tokens = ck.tokenizer.encode(text);
  if (int64_t(tokens.size()) > max_tokens) tokens.resize(max_tokens);
  AnalysisRequest req;
  req.tokens = tokens;
  req.spec = model_sparse_spec(ck.config);
  req.token_map_limit = 0;
  torch::NoGradGuard no_grad;
  Analysis a = analyze(*ck.model, req);
  std::vector<Case> cases;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    Case c;
    c.name = dir + " layer " + std::to_string(l) + " (" + std::to_string(tokens.size()) + " tokens)";
    // the kernels take bf16 q and k: the model's fp32 ones rounded, as autocast does
    c.q = a.layers[l].q[0].to(torch::kBFloat16);
    c.k = a.layers[l].k[0].to(torch::kBFloat16);
    c.bs = req.spec.block_size;
    c.K = req.spec.top_k;
    c.rows = int64_t(tokens.size());
    cases.push_back(c);
  }
  return cases;
}

std::string fmt_scale(double q_scale, double k_scale) {
  char buf[64];
  std::snprintf(buf, sizeof buf, ", q x %.0e, k x %.0e", q_scale, k_scale);
  return buf;
}

// q and k drawn from N(0, 1) times q_scale and k_scale (far from 1: values
// outside fp16's range, which the kernels' power-of-two scaling must absorb).
Case random_case(int64_t Hq, int64_t Hkv, int64_t D, int64_t T, int64_t rows, uint64_t seed, double q_scale = 1,
                 double k_scale = 1) {
  torch::manual_seed(seed);
  Case c;
  c.name = "random " + std::to_string(Hq) + "q/" + std::to_string(Hkv) + "kv d" + std::to_string(D) + " " +
           std::to_string(T) + " tokens";
  if (q_scale != 1 || k_scale != 1) c.name += fmt_scale(q_scale, k_scale);
  c.q = (torch::randn({Hq, T, D}) * q_scale).to(torch::kBFloat16);
  c.k = (torch::randn({Hkv, T, D}) * k_scale).to(torch::kBFloat16);
  c.first_row = T - rows;
  c.rows = rows;
  return c;
}

void print(const std::vector<Result>& results) {
  if (results.empty()) return;
  std::printf("\n| input | rows | fp64 margin < 1e-5 / 1e-6 / 1e-7 |");
  for (const auto& s : results[0].schemes) std::printf(" %s: order / set differ |", s.c_str());
  std::printf("\n|---|---|---|");
  for (size_t i = 0; i < results[0].schemes.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (const Result& r : results) {
    std::printf("| %s | %lld | %lld / %lld / %lld |", r.name.c_str(), (long long)r.margins.rows,
                (long long)r.margins.below_1e5, (long long)r.margins.below_1e6, (long long)r.margins.below_1e7);
    for (const Tally& t : r.tallies)
      std::printf(" %lld / %lld |", (long long)t.order_differs, (long long)t.set_differs);
    std::printf("\n");
  }
  std::printf("\n| input | max abs score | q elements outside fp16's normal range |");
  for (const auto& s : results[0].schemes) std::printf(" %s max abs error |", s.c_str());
  std::printf("\n|---|---|---|");
  for (size_t i = 0; i < results[0].schemes.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (const Result& r : results) {
    std::printf("| %s | %.3g | %lld of %lld |", r.name.c_str(), r.tallies[0].max_abs_score,
                (long long)r.q_outside_fp16, (long long)r.q_elements);
    for (const Tally& t : r.tallies) std::printf(" %.2e |", t.max_abs_score_error);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> models = {"assets/models/ssa", "assets/models/full", "assets/models/moba"};
  std::string text_file;
  int64_t tokens = 2048, random_tokens = 8192, random_rows = 1024;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--models") models = bench::split_list(next());
    else if (a == "--text-file") text_file = next();
    else if (a == "--tokens") tokens = std::stoll(next());
    else if (a == "--random-tokens") random_tokens = std::stoll(next());
    else if (a == "--rows") random_rows = std::stoll(next());
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of bench/selection_precision.cpp)\n",
                   a.c_str());
      return 2;
    }
  }
  try {
    torch::NoGradGuard no_grad;
    std::vector<Result> results;
    if (!models.empty()) {
      if (text_file.empty()) throw Error("--text-file: the text the models read (e.g. the Python tutorial sources)");
      const std::string text = read_file(text_file);
      for (const std::string& dir : models)
        for (const Case& c : model_cases(dir, text, tokens)) {
          results.push_back(run_case(c));
          std::fprintf(stderr, "%s done\n", c.name.c_str());
        }
    }
    for (int64_t D : {64, 128}) {
      results.push_back(run_case(random_case(16, 1, D, random_tokens, random_rows, 7 + D)));
      std::fprintf(stderr, "random d%lld done\n", (long long)D);
    }
    // beyond fp16's range both ways: q far above it and keys far below, and the reverse
    results.push_back(run_case(random_case(16, 1, 64, random_tokens / 4, random_rows / 4, 11, 1e6, 1e-7)));
    results.push_back(run_case(random_case(16, 1, 64, random_tokens / 4, random_rows / 4, 12, 1e-7, 1e6)));
    std::printf("# selection under each scoring of q . kbar, against fp64 scoring (rows whose K - 1 picked blocks "
                "differ: in order / as a set)\n");
    print(results);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ssalab_selection_precision: %s\n", e.what());
    return 1;
  }
  return 0;
}
