// CUDA backend vs reference backend through the engine interface (attention.h),
// including the cache contract: chunks of queries at an offset against the
// growing key prefix must give the rows of the whole-sequence call.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <vector>

#include <torch/cuda.h>

#include "engine/attention/attention.h"
#include "engine/attention/complete_blocks.h"
#include "engine/generate/generate.h"
#include "engine/model/transformer.h"

using namespace ssalab;
using torch::Tensor;

static int fails = 0;
static void check(bool ok, const char* what, double v) {
  std::printf("  %-40s %s %.3g\n", what, ok ? "ok  " : "FAIL", v);
  fails += !ok;
}
static double rel(const Tensor& a, const Tensor& b) {
  return ((a.to(torch::kFloat) - b.to(torch::kFloat)).norm() / (b.to(torch::kFloat).norm() + 1e-12)).item<double>();
}
static double max_abs_diff(const Tensor& a, const Tensor& b) {
  return (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
}

// A prefill in three chunks, each a call with q_offset against the keys
// written so far: [0, c1), the single token c1 (a decoding step), (c1, T);
// c1 leaves the first chunk enough blocks for top-k.
// Selection and sparse output must equal the whole call's rows; the full
// output (SDPA with an explicit mask vs its causal path) within rounding.  The
// last chunk's sparse gradients are checked against the reference backend.
static void check_chunked(AttentionBackend& cuda, AttentionBackend& ref, const Tensor& q, const Tensor& k,
                          const Tensor& v, const SparseSpec& spec) {
  const int64_t T = q.size(2), c1 = 3 * T / 4 - 7;
  const Tensor whole_full = cuda.full(q, k, v);
  const Selection whole_sel = cuda.select(q, k, spec);
  const Tensor whole_sparse = cuda.sparse(q, k, v, whole_sel);
  std::vector<Tensor> full_parts, sparse_parts, block_parts;
  for (int64_t start : {int64_t(0), c1, c1 + 1}) {
    const int64_t end = start == 0 ? c1 : start == c1 ? c1 + 1 : T;
    Tensor qc = q.narrow(2, start, end - start), kc = k.narrow(2, 0, end), vc = v.narrow(2, 0, end);
    full_parts.push_back(cuda.full(qc, kc, vc, start));
    Selection sel = cuda.select(qc, kc, spec, start);
    block_parts.push_back(sel.blocks);
    sparse_parts.push_back(cuda.sparse(qc, kc, vc, sel));
  }
  const Tensor blocks = torch::cat(block_parts, 2), sparse = torch::cat(sparse_parts, 2),
               full = torch::cat(full_parts, 2);
  const double same_blocks = blocks.eq(whole_sel.blocks).to(torch::kFloat).mean().item<double>();
  check(same_blocks == 1.0, "chunked: selection == whole", same_blocks);
  std::printf("  chunked: max |sparse - whole| %.3g, max |full - whole| %.3g\n", max_abs_diff(sparse, whole_sparse),
              max_abs_diff(full, whole_full));
  check(rel(sparse, whole_sparse) < 1e-3, "chunked: sparse output == whole", rel(sparse, whole_sparse));
  check(rel(full, whole_full) < 2e-2, "chunked: full output == whole", rel(full, whole_full));

  // gradients of the last chunk (queries at c1 + 1.. against all T keys)
  const int64_t start = c1 + 1;
  Tensor qc = q.narrow(2, start, T - start);
  Selection sel = cuda.select(qc, k, spec, start);
  Tensor dO = torch::randn_like(qc);
  auto grads = [&](AttentionBackend& be, bool f32) {
    auto cast = [&](const Tensor& x) { return (f32 ? x.to(torch::kFloat) : x).detach().requires_grad_(); };
    Tensor qq = cast(qc), kk = cast(k), vv = cast(v);
    Tensor out = be.sparse(qq, kk, vv, sel);
    out.backward(dO.to(out.scalar_type()));
    return std::vector<Tensor>{out.detach(), qq.grad(), kk.grad(), vv.grad()};
  };
  const auto gc = grads(cuda, false), gr = grads(ref, true);
  const char* names[4] = {"chunk: sparse output vs reference", "chunk: sparse dq", "chunk: sparse dk",
                          "chunk: sparse dv"};
  for (int i = 0; i < 4; ++i) check(rel(gc[i], gr[i]) < 2e-2, names[i], rel(gc[i], gr[i]));
}

// The decode kernel (AttentionBackend::decode on CUDA) against the reference:
// the selection slot for slot and the output, over shapes that reach its
// edges: a context shorter than k blocks, a partial own block, G from 1 to 32,
// a group's heads split over CTAs (small batches) or kept in one (large ones);
// and the nsa-chunked rule: inside the first chunk (exact top-k), an empty
// current chunk, a current chunk spanning two of decode_pick's CTAs (k 48),
// more lists than the merge keeps in registers.
struct DecodeCase {
  torch::ScalarType dt;
  int B, Hq, Hkv, Tk, D, bs, K;
  SelectionRule rule;
};
static std::vector<DecodeCase> decode_cases() {
  constexpr SelectionRule kTopK = SelectionRule::TopK, kChunked = SelectionRule::NsaChunked;
  using C = DecodeCase;
  return {C{torch::kBFloat16, 2, 16, 1, 333, 64, 16, 8, kTopK}, C{torch::kHalf, 3, 8, 8, 500, 128, 64, 3, kTopK},
              C{torch::kBFloat16, 1, 32, 1, 4097, 64, 32, 16, kTopK}, C{torch::kBFloat16, 4, 32, 2, 40, 64, 16, 3, kTopK},
              C{torch::kBFloat16, 1, 16, 1, 9000, 128, 16, 64, kTopK}, C{torch::kHalf, 2, 4, 2, 16, 64, 16, 1, kTopK},
              // batches of more groups than SMs: each group's heads in one CTA (16 and 32 of them)
              C{torch::kBFloat16, 70, 32, 2, 300, 64, 16, 4, kTopK}, C{torch::kBFloat16, 140, 32, 1, 200, 64, 16, 5, kTopK},
              // two of decode_pick's CTAs per group and 280 groups: the per-warp sorts of full chunks
              C{torch::kBFloat16, 140, 32, 2, 2100, 64, 16, 16, kTopK},
              C{torch::kBFloat16, 1, 16, 1, 250, 64, 16, 16, kChunked}, C{torch::kBFloat16, 2, 16, 1, 4097, 64, 32, 16, kChunked},
              C{torch::kBFloat16, 1, 32, 2, 5000, 64, 16, 16, kChunked}, C{torch::kHalf, 3, 16, 1, 10565, 128, 16, 48, kChunked},
              C{torch::kBFloat16, 1, 16, 1, 9000, 128, 16, 64, kChunked}, C{torch::kBFloat16, 70, 32, 2, 3000, 64, 16, 16, kChunked},
              // more candidate lists than the selection merge keeps in registers (69 chunks, two lists each)
              C{torch::kBFloat16, 2, 16, 1, 140000, 64, 16, 16, kChunked},
              // 35 chunks of one list: past select_by_radix's 32, the merge in registers at top-k
              C{torch::kBFloat16, 1, 32, 2, 70000, 64, 16, 16, kTopK}};
}

// A decode case's inputs: one query token, the keys and values as a view into
// a cache with room to spare (the kernel reads it through strides), and the
// pooled keys it is called with: fp32, and for bf16 models also bf16
// (PooledKeys::Bf16: one MMA per product).
struct DecodeInputs {
  Tensor q, k, v;
  std::vector<Tensor> pooled_keys;
};
static DecodeInputs decode_inputs(const DecodeCase& c) {
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(c.dt);
  Tensor kc = torch::randn({c.B, c.Hkv, c.Tk + 9, c.D}, o), vc = torch::randn_like(kc);
  DecodeInputs in{torch::randn({c.B, c.Hq, 1, c.D}, o), kc.narrow(2, 0, c.Tk), vc.narrow(2, 0, c.Tk), {}};
  Tensor means = complete_block_means(in.k.to(torch::kFloat), c.bs);
  in.pooled_keys.push_back(means);
  if (c.dt == torch::kBFloat16) in.pooled_keys.push_back(means.to(torch::kBFloat16));
  return in;
}

static void check_decode(AttentionBackend& cuda) {
  for (DecodeCase c : decode_cases()) {
    std::printf("[decode %s B%d Hq%d Hkv%d Tk%d D%d bs%d k%d %s]\n", c.dt == torch::kHalf ? "fp16" : "bf16", c.B, c.Hq,
                c.Hkv, c.Tk, c.D, c.bs, c.K, to_string(c.rule));
    auto [q, k, v, pooled_keys] = decode_inputs(c);
    SparseSpec spec{c.bs, c.K, c.rule};
    for (Tensor bk : pooled_keys) {
      if (bk.scalar_type() == torch::kBFloat16) std::printf("  bf16 pooled keys\n");
      Tensor blocks, ref_blocks;
      Tensor out = cuda.decode(q, k, v, bk, spec, &blocks);
      Tensor ref = reference_backend().decode(q.to(torch::kFloat), k.to(torch::kFloat), v.to(torch::kFloat), bk, spec,
                                              &ref_blocks);
      Tensor slot_equal = blocks.cpu().eq(ref_blocks.cpu());  // (B, Hkv, 1, K)
      const double same = slot_equal.to(torch::kFloat).mean().item<double>();
      check(same > 0.999, "decode: selection == reference", same);
      // the output of the groups whose selection is the reference's: a near tie
      // that flips one slot (the kernel and the reference sum the scores in
      // other orders) changes that group's output entirely
      Tensor group_equal = slot_equal.all(3).view({c.B, c.Hkv, 1});
      const int64_t flipped = c.B * c.Hkv - group_equal.sum().item<int64_t>();
      if (flipped) {  // each differing slot must be a near tie of the reference's group scores
        Tensor sc = pooled_selection_scores(q.to(torch::kFloat), bk, c.bs, c.Tk - 1).cpu().view({c.B * c.Hkv, -1});
        Tensor got = blocks.cpu().view({c.B * c.Hkv, c.K}), want = ref_blocks.cpu().view({c.B * c.Hkv, c.K});
        auto g = got.accessor<int64_t, 2>(), w = want.accessor<int64_t, 2>();
        auto score = sc.accessor<float, 2>();
        int beyond = 0;
        for (int64_t r = 0; r < got.size(0); ++r)
          for (int64_t i = 0; i < c.K; ++i)
            if (g[r][i] != w[r][i] &&
                (g[r][i] < 0 || w[r][i] < 0 || std::fabs(score[r][g[r][i]] - score[r][w[r][i]]) > 1e-5))
              ++beyond;
        std::printf("  %lld of %d groups with a near tie flipped: their outputs left out\n", (long long)flipped,
                    c.B * c.Hkv);
        check(beyond == 0, "decode: flipped slots are near ties", beyond);
      }
      Tensor heads = group_equal.expand({c.B, c.Hkv, c.Hq / c.Hkv}).reshape({c.B, c.Hq, 1, 1}).to(out.device());
      const double err = rel(out.to(torch::kFloat) * heads, ref.to(torch::kFloat) * heads);
      check(err < 1e-2, "decode: output", err);
      // the same call twice: bit for bit
      check(torch::equal(out, cuda.decode(q, k, v, bk, spec)), "decode: deterministic", 0);
    }
  }
  // a model decoding on the GPU: each step's logits against a sparse forward over the whole sequence
  ModelConfig mc = model_preset("tiny");
  mc.num_heads = 16, mc.num_kv_heads = 1, mc.head_dim = 64, mc.hidden_size = 256, mc.num_layers = 2;
  Transformer m(mc);
  m.to(torch::kCUDA, torch::kBFloat16);
  m.eval();
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  Tensor ids = torch::randint(0, mc.vocab_size, {1, 300}, torch::TensorOptions().dtype(torch::kLong)).to(torch::kCUDA);
  // k 16 nsa-chunked: from token 256 on the own block is past the first chunk
  // bf16 pooled keys: the cache's pooled keys in bf16 (the append kernel rounds them), the decode
  // kernel's one-term scores, and the whole forward's selection kernel rounding its means alike
  for (auto [mode, spec] : {std::pair{AttnMode::Sparse, SparseSpec{16, 4}}, std::pair{AttnMode::Full, SparseSpec{16, 4}},
                            std::pair{AttnMode::Sparse, SparseSpec{16, 16, SelectionRule::NsaChunked}},
                            std::pair{AttnMode::Sparse, SparseSpec{16, 16, SelectionRule::NsaChunked, PooledKeys::Bf16}}}) {
    Decoder d(m, 1, 300, spec);
    d.feed(ids.narrow(1, 0, 280), mode);
    // bf16: q of one token and of the whole sequence round differently, which
    // can flip a near-tie in selection at some step; the median step must agree
    std::vector<double> errs;
    for (int64_t t = 280; t < 300; ++t) {
      Tensor step = d.feed(ids.narrow(1, t, 1), mode);
      ForwardOptions fo;
      fo.mode = mode;
      fo.spec = spec;
      Tensor whole = m.forward(ids.narrow(1, 0, t + 1), fo).logits.select(1, t).to(torch::kFloat);
      errs.push_back(rel(step, whole));
    }
    std::sort(errs.begin(), errs.end());
    std::printf("  %s %s, %s pooled keys: model steps vs whole forward: median rel %.3g, worst %.3g\n",
                to_string(mode), to_string(spec.rule), to_string(spec.pooled_keys), errs[errs.size() / 2], errs.back());
    check(errs[errs.size() / 2] < 3e-2, "decode: model steps == whole forward (bf16, median)", errs[errs.size() / 2]);
  }
}

// An A/B switch of the decode kernel (an environment variable read each call)
// on against off, on every decode case and both attend kernels: the same
// selection and output bit for bit. SSA_DECODE_RADIX=1: the picks by
// select_by_radix instead of warp 0's merge of the candidate lists (the same
// blocks in the same order). SSA_DECODE_NORMALISE=1: each group's normalisers
// combined once by decode_normalise (the same code, so the same bits) instead
// of by every decode_pick CTA. SSA_DECODE_L2HINT=1: the selection's pooled
// keys and logits moved with L2 eviction hints (the same values). The cases
// reach 1 to 69 chunks, k 1 to 64 and both rules.
static void check_decode_switch(AttentionBackend& cuda, const char* variable) {
  std::printf("[decode: %s=1 against 0]\n", variable);
  for (const char* mma : {"1", "0"}) {
    setenv("SSA_DECODE_ATTEND_MMA", mma, 1);
    for (DecodeCase c : decode_cases()) {
      auto [q, k, v, pooled_keys] = decode_inputs(c);
      SparseSpec spec{c.bs, c.K, c.rule};
      for (Tensor bk : pooled_keys) {
        Tensor blocks[2], out[2];
        for (int on = 0; on < 2; ++on) {
          setenv(variable, on ? "1" : "0", 1);
          out[on] = cuda.decode(q, k, v, bk, spec, &blocks[on]);
        }
        unsetenv(variable);
        const bool same = torch::equal(blocks[0], blocks[1]) && torch::equal(out[0], out[1]);
        if (!same)
          std::printf("  B%d Hq%d Hkv%d Tk%d D%d bs%d k%d %s, %s pooled keys, attend mma %s: differ\n", c.B, c.Hq,
                      c.Hkv, c.Tk, c.D, c.bs, c.K, to_string(c.rule),
                      bk.scalar_type() == torch::kBFloat16 ? "bf16" : "fp32", mma);
        check(same, "decode: switch on == off, bit for bit", 0);
      }
    }
  }
  unsetenv("SSA_DECODE_ATTEND_MMA");
}

// The cache update kernel against the LibTorch path: the stored keys and
// values bit for bit, the pooled keys of the blocks completed to fp32 rounding,
// for single tokens, a prefill chunk spanning blocks and a view into a bigger cache.
static void check_append(AttentionBackend& cuda) {
  struct C { torch::ScalarType dt; int B, Hkv, D, cap, length, T, bs; };
  for (C c : {C{torch::kBFloat16, 2, 2, 64, 96, 15, 1, 16}, C{torch::kHalf, 1, 4, 128, 200, 5, 70, 16},
              C{torch::kBFloat16, 3, 1, 64, 300, 63, 1, 64}, C{torch::kBFloat16, 1, 2, 64, 64, 0, 64, 32}}) {
    std::printf("[append %s B%d Hkv%d D%d cap%d length%d T%d bs%d]\n", c.dt == torch::kHalf ? "fp16" : "bf16", c.B,
                c.Hkv, c.D, c.cap, c.length, c.T, c.bs);
    auto o = torch::TensorOptions().device(torch::kCUDA).dtype(c.dt);
    Tensor kc = torch::randn({c.B, c.Hkv, c.cap, c.D}, o), vc = torch::randn_like(kc);
    Tensor bk = torch::zeros({c.B, c.Hkv, c.cap / c.bs, c.D}, o.dtype(torch::kFloat));
    // the new tokens as views with a head stride other than T * D (as q/k/v projections come)
    Tensor kn = torch::randn({c.B, c.T, c.Hkv, c.D}, o).transpose(1, 2), vn = torch::randn_like(kn);
    Tensor kc2 = kc.clone(), vc2 = vc.clone(), bk2 = bk.clone();
    cuda.append_to_cache(kn, vn, kc, vc, bk, c.length, c.bs);
    reference_backend().append_to_cache(kn, vn, kc2, vc2, bk2, c.length, c.bs);
    check(torch::equal(kc, kc2) && torch::equal(vc, vc2), "append: keys and values stored", 0);
    const double err = (bk - bk2).abs().max().item<double>();
    check(err < 1e-5, "append: pooled keys", err);
    const int64_t done = (c.length + c.T) / c.bs;
    check(done == 0 || bk.narrow(2, c.length / c.bs, done - c.length / c.bs).abs().sum().item<double>() > 0,
          "append: the completed blocks were written", 0);
    // bf16 pooled keys: the kernel's mean rounded as LibTorch's copy rounds the reference's
    // (the two fp32 sums may differ in order, so an element may round to the neighbouring bf16)
    Tensor bh = bk.to(torch::kBFloat16).zero_(), bh2 = bh.clone();
    cuda.append_to_cache(kn, vn, kc, vc, bh, c.length, c.bs);
    reference_backend().append_to_cache(kn, vn, kc2, vc2, bh2, c.length, c.bs);
    const double equal = bh.eq(bh2).to(torch::kFloat).mean().item<double>();
    const double ulps = ((bh.to(torch::kFloat) - bh2.to(torch::kFloat)).abs() /
                         (bh2.to(torch::kFloat).abs() * (1.0 / 128) + 1e-30)).max().item<double>();
    check(equal > 0.999 && ulps <= 1.0, "append: bf16 pooled keys (fraction equal)", equal);
    check(done == 0 || bh.to(torch::kFloat).narrow(2, c.length / c.bs, done - c.length / c.bs).abs().sum().item<double>() > 0,
          "append: the completed blocks were written in bf16", 0);
  }
}

// The selection kernel with bf16 pooled keys (PooledKeys::Bf16, the released
// kernel's pooling) against the reference's: every row equal (near ties
// aside); and on these random inputs some rows must differ from fp32 pooling,
// or the rounding was not applied.
static void check_bf16_pooling(AttentionBackend& cuda, AttentionBackend& ref) {
  struct C { torch::ScalarType dt; int Hq, Hkv, T, D, bs, K; SelectionRule rule; };
  for (C c : {C{torch::kBFloat16, 32, 2, 1500, 64, 16, 16, SelectionRule::TopK},
              C{torch::kHalf, 16, 1, 2100, 128, 16, 32, SelectionRule::NsaChunked},
              C{torch::kBFloat16, 8, 2, 1300, 64, 32, 16, SelectionRule::NsaChunked}}) {
    auto o = torch::TensorOptions().device(torch::kCUDA).dtype(c.dt);
    Tensor q = torch::randn({1, c.Hq, c.T, c.D}, o), k = torch::randn({1, c.Hkv, c.T, c.D}, o);
    const SparseSpec bf16{c.bs, c.K, c.rule, PooledKeys::Bf16}, fp32{c.bs, c.K, c.rule};
    Selection sc = cuda.select(q, k, bf16), sr = ref.select(q.cpu(), k.cpu(), bf16);
    const double rows_equal = sc.blocks.cpu().eq(sr.blocks).all(3).to(torch::kFloat).mean().item<double>();
    const double unlike_fp32 =
        sc.blocks.cpu().ne(cuda.select(q, k, fp32).blocks.cpu()).any(3).to(torch::kFloat).mean().item<double>();
    std::printf("  bf16 pooled keys T%d Hq%d/%d D%d bs%d k%d %s: rows equal to the reference %.4f, unlike fp32 "
                "pooling %.4f\n",
                c.T, c.Hq, c.Hkv, c.D, c.bs, c.K, to_string(c.rule), rows_equal, unlike_fp32);
    check(rows_equal > 0.999, "bf16 pooled keys: selection == reference", rows_equal);
    check(unlike_fp32 > 0, "bf16 pooled keys: some rows unlike fp32 pooling", unlike_fp32);
  }
}

// The released checkpoints' nsa-chunked rule on the selection kernel: every
// slot equal to the fp32 reference on the CPU (near ties aside), on shapes
// whose rows reach past the first chunk (k 16 and 32), for the whole
// sequence and for a chunk of queries at an offset; and it must differ from
// the exact top-k on those rows, or the rule was not applied.
static void check_nsa_chunked(AttentionBackend& cuda, AttentionBackend& ref) {
  struct C { torch::ScalarType dt; int Hq, Hkv, T, D, bs, K, offset; };
  for (C c : {C{torch::kBFloat16, 32, 2, 1500, 64, 16, 16, 0}, C{torch::kHalf, 16, 1, 2100, 128, 16, 32, 0},
              C{torch::kBFloat16, 8, 2, 1300, 64, 32, 16, 0}, C{torch::kBFloat16, 32, 2, 1500, 64, 16, 16, 1100}}) {
    auto o = torch::TensorOptions().device(torch::kCUDA).dtype(c.dt);
    Tensor q = torch::randn({1, c.Hq, c.T - c.offset, c.D}, o), k = torch::randn({1, c.Hkv, c.T, c.D}, o);
    const SparseSpec chunked{c.bs, c.K, SelectionRule::NsaChunked}, topk{c.bs, c.K};
    check(cuda.supports(q, k, chunked, c.offset).empty(), "nsa-chunked: supports()", 0);
    Selection sc = cuda.select(q, k, chunked, c.offset), sr = ref.select(q.cpu(), k.cpu(), chunked, c.offset);
    const double rows_equal = sc.blocks.cpu().eq(sr.blocks).all(3).to(torch::kFloat).mean().item<double>();
    Tensor past_first_chunk = torch::arange(c.offset, c.T).div(c.bs, "floor").ge(c.K);
    Tensor differs = sc.blocks.cpu().ne(cuda.select(q, k, topk, c.offset).blocks.cpu()).any(3);
    const double differs_from_topk =
        differs.index({torch::indexing::Slice(), torch::indexing::Slice(), past_first_chunk}).to(torch::kFloat).mean().item<double>();
    std::printf("  nsa-chunked T%d Hq%d/%d D%d bs%d k%d offset %d: rows equal to the reference %.4f, rows past the "
                "first chunk unlike top-k %.3f\n",
                c.T, c.Hq, c.Hkv, c.D, c.bs, c.K, c.offset, rows_equal, differs_from_topk);
    check(rows_equal > 0.999, "nsa-chunked: selection == reference", rows_equal);
    check(differs_from_topk > 0.5, "nsa-chunked: unlike the exact top-k past the first chunk", differs_from_topk);
  }
}

int main() {
  AttentionBackend* cuda = cuda_backend();
  AttentionBackend& ref = reference_backend();
  if (!cuda) return std::printf("no cuda backend\n"), 1;
  struct C { torch::ScalarType dt; int B, Hq, Hkv, T, D, bs, K; };
  for (C c : {C{torch::kBFloat16, 2, 16, 1, 333, 64, 16, 8}, C{torch::kHalf, 1, 8, 8, 500, 128, 64, 3},
              C{torch::kBFloat16, 1, 32, 2, 700, 64, 32, 16}}) {
    std::printf("[%s B%d Hq%d Hkv%d T%d D%d bs%d k%d]\n", c.dt == torch::kHalf ? "fp16" : "bf16", c.B, c.Hq, c.Hkv,
                c.T, c.D, c.bs, c.K);
    auto o = torch::TensorOptions().device(torch::kCUDA).dtype(c.dt);
    Tensor q = torch::randn({c.B, c.Hq, c.T, c.D}, o), k = torch::randn({c.B, c.Hkv, c.T, c.D}, o),
           v = torch::randn({c.B, c.Hkv, c.T, c.D}, o);
    SparseSpec spec{c.bs, c.K};
    check(cuda->supports(q, k, spec).empty(), "supports()", 0);
    check(!cuda->supports(q.cpu(), k.cpu(), spec).empty(), "refuses CPU tensors", 0);
    check(&pick_backend(q, k, spec) == cuda, "pick_backend -> cuda", 0);
    Selection sc = cuda->select(q, k, spec), sr = ref.select(q, k, spec), src = ref.select(q.cpu(), k.cpu(), spec);
    double same = sc.blocks.eq(sr.blocks).to(torch::kFloat).mean().item<double>();
    double same_cpu = sc.blocks.cpu().eq(src.blocks).to(torch::kFloat).mean().item<double>();
    double ref_gpu_cpu = sr.blocks.cpu().eq(src.blocks).to(torch::kFloat).mean().item<double>();
    std::printf("  blocks range [%ld, %ld], nb %d\n", sc.blocks.min().item<int64_t>(), sc.blocks.max().item<int64_t>(),
                (c.T + c.bs - 1) / c.bs);
    std::printf("  reference on GPU vs reference on CPU: %.4f equal\n", ref_gpu_cpu);
    // rows where the reference repeats the own block in a later slot: a reference bug
    // (true division in `arange(T) / bs` makes the own block a "past" candidate)
    Tensor rb = src.blocks;
    Tensor dup = rb.narrow(3, 1, rb.size(3) - 1).eq(rb.narrow(3, 0, 1)).any(3);
    Tensor row_eq = sc.blocks.cpu().eq(rb).all(3);
    const double n_ok = row_eq.logical_or(dup).to(torch::kFloat).mean().item<double>();
    std::printf("  reference rows repeating the own block: %ld of %ld\n", dup.sum().item<int64_t>(), dup.numel());
    std::printf("  selection == reference on CPU (all slots): %.4f, on GPU: %.4f\n", same_cpu, same);
    check(n_ok > 0.999, "selection == reference, rows w/o that bug", n_ok);
    if (same_cpu < 0.0) {
      Tensor bad = sc.blocks.cpu().ne(src.blocks).nonzero();
      for (int i = 0; i < std::min<int64_t>(3, bad.size(0)); ++i) {
        auto ix = bad[i];
        int64_t b = ix[0].item<int64_t>(), h = ix[1].item<int64_t>(), t = ix[2].item<int64_t>();
        std::cout << "  mismatch b" << b << " h" << h << " t" << t << "\n    cuda " << sc.blocks.cpu()[b][h][t]
                  << "\n    ref  " << src.blocks[b][h][t] << "\n";
      }
    }
    check(sc.blocks.scalar_type() == torch::kLong, "selection int64", 0);

    Tensor dO = torch::randn_like(q), dO2 = torch::randn_like(q);
    auto run = [&](AttentionBackend& be, bool f32, Tensor* grads) {
      Tensor qq = (f32 ? q.to(torch::kFloat) : q).detach().requires_grad_();
      Tensor kk = (f32 ? k.to(torch::kFloat) : k).detach().requires_grad_();
      Tensor vv = (f32 ? v.to(torch::kFloat) : v).detach().requires_grad_();
      auto pr = be.dual(qq, kk, vv, sc);
      torch::autograd::backward({pr.first, pr.second}, {dO.to(pr.first.scalar_type()), dO2.to(pr.first.scalar_type())});
      grads[0] = pr.first.detach();
      grads[1] = pr.second.detach();
      grads[2] = qq.grad();
      grads[3] = kk.grad();
      grads[4] = vv.grad();
    };
    Tensor gc[5], gr[5];
    run(ref, true, gr);
    torch::cuda::synchronize();
    std::printf("  reference dual done\n");
    run(*cuda, false, gc);
    torch::cuda::synchronize();
    const char* names[5] = {"dual: full output", "dual: sparse output", "dual: dq", "dual: dk", "dual: dv"};
    for (int i = 0; i < 5; ++i) {
      double e = rel(gc[i], gr[i]);
      check(e < 2e-2, names[i], e);
    }
    // sparse alone
    Tensor qq = q.detach().requires_grad_();
    Tensor out = cuda->sparse(qq, k, v, sc);
    out.backward(dO);
    Tensor qr = q.to(torch::kFloat).detach().requires_grad_();
    Tensor outr = ref.sparse(qr, k.to(torch::kFloat), v.to(torch::kFloat), sc);
    outr.backward(dO.to(torch::kFloat));
    check(rel(out, outr) < 2e-2, "sparse output", rel(out, outr));
    check(rel(qq.grad(), qr.grad()) < 2e-2, "sparse dq", rel(qq.grad(), qr.grad()));

    check_chunked(*cuda, ref, q, k, v, spec);
    check(!cuda->supports(q, k, spec, 1).empty(), "supports() refuses queries past the keys", 0);
  }
  check_nsa_chunked(*cuda, ref);
  check_bf16_pooling(*cuda, ref);
  check_decode(*cuda);  // the attention step on the tensor cores (decode_attend_mma, the default)
  setenv("SSA_DECODE_ATTEND_MMA", "0", 1);  // and the scalar decode_attend
  std::printf("[decode: the scalar attention kernel]\n");
  check_decode(*cuda);
  unsetenv("SSA_DECODE_ATTEND_MMA");
  check_decode_switch(*cuda, "SSA_DECODE_RADIX");
  check_decode_switch(*cuda, "SSA_DECODE_NORMALISE");
  check_decode_switch(*cuda, "SSA_DECODE_L2HINT");
  check_append(*cuda);
  std::printf("%d failed\n", fails);
  return fails ? 1 : 0;
}
