// The NSA baseline's compression and sliding-window branches
// (engine/attention/nsa_branches.h, docs/method.md "The NSA baseline"):
// each branch against a naive per-query loop in double, under the attention
// contract (GQA, q_offset into a longer cache, partial blocks, rows that see
// no block yet); chunked calls against one call; finite-difference
// gradients; and a tiny NSA model whose attention layer is the hand-combined
// gated sum of the three branches.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "engine/attention/attention.h"
#include "engine/attention/nsa_branches.h"
#include "engine/metrics/analysis.h"
#include "engine/model/transformer.h"
#include "engine/util/error.h"
#include "tensor_checks.h"
#include "test_helpers.h"

using namespace ssalab;
using namespace ssalab::test;
using torch::Tensor;

namespace {

struct Case {
  int B, Hq, Hkv, Tq, Tk, D, param;  // param: block size or window
  int64_t q_offset;
};

// GQA (several groups, one group, no sharing), Tq and Tk not multiples of
// the block, queries into a longer cache, and rows before the first
// complete block.
const Case kCases[] = {
    {2, 4, 2, 13, 13, 8, 4, 0},   // self-attention, Tq not a multiple of bs
    {1, 4, 1, 7, 30, 8, 4, 11},   // a window of rows into a longer cache
    {1, 3, 3, 5, 21, 4, 8, 2},    // every row before the first complete block (p < 7)
    {2, 6, 2, 9, 9, 8, 16, 0},    // block larger than the sequence: no block ever
    {1, 4, 2, 1, 40, 8, 5, 39},   // one-token decoding
    {1, 2, 1, 17, 17, 4, 1, 0},   // block of one token: every past token is a block
};

// The selection branch, the compression and the window, gated and summed
// the way the model does (fla's order), for gates g (B, Hq, Tq, 3).
Tensor nsa_combined(const Qkv& x, const Tensor& g, const SparseSpec& spec, int cmp_block, int window,
                    int64_t q_offset) {
  Tensor o_slc = reference_backend().sparse(x.q, x.k, x.v, select_blocks(x.q, x.k, spec, q_offset));
  Tensor o = o_slc * g.select(-1, 1).unsqueeze(-1);
  o = o + compressed_attention(x.q, x.k, x.v, cmp_block, q_offset) * g.select(-1, 0).unsqueeze(-1);
  return o + window_attention(x.q, x.k, x.v, window, q_offset) * g.select(-1, 2).unsqueeze(-1);
}

}  // namespace

TEST_CASE("compressed attention matches the naive loop", "[nsa]") {
  for (const Case& c : kCases) {
    auto x = random_qkv(c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.D, 11);
    Tensor ref = naive_compressed_attention(x.q, x.k, x.v, c.param, c.q_offset);
    Tensor out = compressed_attention(x.q, x.k, x.v, c.param, c.q_offset);
    INFO("Hq " << c.Hq << " Hkv " << c.Hkv << " Tq " << c.Tq << " Tk " << c.Tk << " bs " << c.param << " offset "
               << c.q_offset << " diff " << max_diff(out, ref));
    REQUIRE(out.sizes() == x.q.sizes());
    REQUIRE(max_diff(out, ref) < 1e-12);
  }
}

TEST_CASE("compressed attention: which blocks a query sees, and zero before the first", "[nsa]") {
  const int bs = 4;
  auto x = random_qkv(1, 2, 1, 12, 12, 4, 3);
  Tensor out = compressed_attention(x.q, x.k, x.v, bs);
  // positions 0..2 see no complete block: exactly 0
  CHECK(torch::equal(out.narrow(2, 0, bs - 1), torch::zeros_like(out.narrow(2, 0, bs - 1))));
  // position 3 is the last token of block 0: it sees exactly block 0, so its
  // output is block 0's mean value, whatever the query
  Tensor vbar0 = x.v.narrow(2, 0, bs).mean(2);  // (1, 1, D)
  for (int h = 0; h < 2; ++h) CHECK(max_diff(out[0][h][3], vbar0[0][0]) < 1e-12);
  // position 6 still sees only block 0 (block 1 ends at 7)
  for (int h = 0; h < 2; ++h) CHECK(max_diff(out[0][h][6], vbar0[0][0]) < 1e-12);
  // a cache longer than the rows changes nothing (the keys past p are not visible)
  auto longer = random_qkv(1, 2, 1, 12, 40, 4, 3);
  longer.k.narrow(2, 0, 12).copy_(x.k);
  longer.v.narrow(2, 0, 12).copy_(x.v);
  Tensor rows = compressed_attention(x.q.narrow(2, 5, 7), longer.k, longer.v, bs, 5);
  CHECK(max_diff(rows, out.narrow(2, 5, 7)) < 1e-12);
}

TEST_CASE("sliding-window attention matches the naive loop", "[nsa]") {
  for (const Case& c : kCases) {
    for (int window : {1, c.param, 6, 128}) {
      auto x = random_qkv(c.B, c.Hq, c.Hkv, c.Tq, c.Tk, c.D, 12);
      Tensor ref = naive_window_attention(x.q, x.k, x.v, window, c.q_offset);
      Tensor out = window_attention(x.q, x.k, x.v, window, c.q_offset);
      INFO("Hq " << c.Hq << " Hkv " << c.Hkv << " Tq " << c.Tq << " Tk " << c.Tk << " window " << window
                 << " offset " << c.q_offset << " diff " << max_diff(out, ref));
      REQUIRE(max_diff(out, ref) < 1e-12);
    }
  }
}

TEST_CASE("sliding window: `window` tokens, the query's own included; wide windows are full attention", "[nsa]") {
  auto x = random_qkv(1, 4, 2, 20, 20, 8, 5);
  // window 1: each query sees only itself, so it returns its own value row
  Tensor one = window_attention(x.q, x.k, x.v, 1);
  Tensor v_per_head = x.v.repeat_interleave(2, 1);
  CHECK(max_diff(one, v_per_head) < 1e-12);
  // a window covering every position is causal full attention
  CHECK(max_diff(window_attention(x.q, x.k, x.v, 20), naive_full_attention(x.q, x.k, x.v)) < 1e-12);
  CHECK(max_diff(window_attention(x.q, x.k, x.v, 1000), naive_full_attention(x.q, x.k, x.v)) < 1e-12);
  // window 19 differs from full only in the last row, which drops key 0
  Tensor w19 = window_attention(x.q, x.k, x.v, 19), full = naive_full_attention(x.q, x.k, x.v);
  CHECK(max_diff(w19.narrow(2, 0, 19), full.narrow(2, 0, 19)) < 1e-12);
  CHECK(max_diff(w19.narrow(2, 19, 1), full.narrow(2, 19, 1)) > 1e-6);
}

TEST_CASE("the branches' row chunks join up (long calls against the naive loops)", "[nsa]") {
  // enough rows that both branches split the rows into several chunks
  auto x = random_qkv(1, 4, 1, 700, 900, 4, 21);
  Tensor w = window_attention(x.q, x.k, x.v, 9, 150);
  CHECK(max_diff(w, naive_window_attention(x.q, x.k, x.v, 9, 150)) < 1e-12);
  auto y = random_qkv(1, 1, 1, 1100, 1100, 4, 22);
  Tensor c = compressed_attention(y.q, y.k, y.v, 1);  // 1100 blocks: rows chunked
  CHECK(max_diff(c, naive_compressed_attention(y.q, y.k, y.v, 1)) < 1e-11);
}

TEST_CASE("a chunked prefill (q_offset) equals one call, for each branch and the gated sum", "[nsa]") {
  const int T = 37, bs = 4, window = 6;
  const SparseSpec spec{bs, 3, SelectionRule::TopK};
  auto x = random_qkv(2, 4, 2, T, T, 8, 31);
  torch::manual_seed(32);
  Tensor g = torch::sigmoid(torch::randn({2, 4, T, 3}, torch::kDouble));
  Tensor whole = nsa_combined(x, g, spec, bs, window, 0);
  Tensor cmp = compressed_attention(x.q, x.k, x.v, bs), swa = window_attention(x.q, x.k, x.v, window);
  // chunks end mid-block and at block ends; each sees the keys written so far
  int64_t start = 0;
  for (int64_t end : {3, 8, 13, 30, T}) {
    const int64_t n = end - start;
    Qkv part{x.q.narrow(2, start, n), x.k.narrow(2, 0, end), x.v.narrow(2, 0, end)};
    INFO("rows [" << start << ", " << end << ")");
    CHECK(max_diff(compressed_attention(part.q, part.k, part.v, bs, start), cmp.narrow(2, start, n)) < 1e-12);
    CHECK(max_diff(window_attention(part.q, part.k, part.v, window, start), swa.narrow(2, start, n)) < 1e-12);
    start = end;
  }
  // the gated sum, selection included (whose spec needs k blocks in the keys: first chunk 12 tokens)
  start = 0;
  for (int64_t end : {12, 13, 30, T}) {
    const int64_t n = end - start;
    Qkv part{x.q.narrow(2, start, n), x.k.narrow(2, 0, end), x.v.narrow(2, 0, end)};
    Tensor rows = nsa_combined(part, g.narrow(2, start, n), spec, bs, window, start);
    INFO("rows [" << start << ", " << end << ")");
    CHECK(max_diff(rows, whole.narrow(2, start, n)) < 1e-12);
    start = end;
  }
}

TEST_CASE("the branches are differentiable (finite differences, double)", "[nsa]") {
  // rows before the first complete block included: no NaN in their gradient
  auto x = random_qkv(1, 4, 2, 11, 11, 4, 41);
  for (int bs : {3, 4}) {
    check_grad([&](const Tensor& q) { return compressed_attention(q, x.k, x.v, bs); }, x.q);
    check_grad([&](const Tensor& k) { return compressed_attention(x.q, k, x.v, bs); }, x.k);
    check_grad([&](const Tensor& v) { return compressed_attention(x.q, x.k, v, bs); }, x.v);
  }
  check_grad([&](const Tensor& q) { return window_attention(q, x.k, x.v, 3); }, x.q);
  check_grad([&](const Tensor& k) { return window_attention(x.q, k, x.v, 3); }, x.k);
  check_grad([&](const Tensor& v) { return window_attention(x.q, x.k, v, 3); }, x.v);
  // with a cache: rows [4, 9) of 11 keys
  check_grad([&](const Tensor& k) { return compressed_attention(x.q.narrow(2, 0, 5), k, x.v, 2, 4); }, x.k);
  check_grad([&](const Tensor& k) { return window_attention(x.q.narrow(2, 0, 5), k, x.v, 4, 4); }, x.k);
  // a row with no visible block gets exactly zero gradient from compression
  Tensor q = x.q.clone().set_requires_grad(true);
  Tensor gq = torch::autograd::grad({compressed_attention(q, x.k, x.v, 4).sum()}, {q})[0];
  CHECK(torch::equal(gq.narrow(2, 0, 3), torch::zeros_like(gq.narrow(2, 0, 3))));
  CHECK(gq.narrow(2, 3, 8).abs().sum().item<double>() > 0);
}

TEST_CASE("the branches refuse calls outside the contract", "[nsa][bad-input]") {
  auto x = random_qkv(1, 4, 2, 5, 8, 4, 1);
  CHECK_THROWS_AS(compressed_attention(x.q, x.k, x.v, 4, 4), Error);  // rows [4, 9) need 9 keys
  CHECK_THROWS_AS(window_attention(x.q, x.k, x.v, 0), Error);
  CHECK_THROWS_AS(compressed_attention(x.q, x.k, x.v, 0), Error);
  auto y = random_qkv(1, 3, 2, 5, 8, 4, 1);  // 3 query heads on 2 kv heads
  CHECK_THROWS_AS(window_attention(y.q, y.k, y.v, 2), Error);
}

namespace {

// A tiny NSA model: llama-nsa with a sliding window.
ModelConfig nsa_config(int window = 6) {
  ModelConfig c = test::micro_model();  // 4 q heads on 2 kv heads, head dim 8, block 8, k 3
  c.arch = Arch::LlamaNSA;
  c.gate = true;
  c.window_size = window;
  return c;
}

// The attention layer by hand, from the layer's own weights, in double:
// projections, RoPE, the three gates, the naive branches, o_proj.
Tensor attention_by_hand(AttentionImpl& A, const ModelConfig& c, const Tensor& x_f, AttnMode mode,
                         const SparseSpec& spec) {
  torch::NoGradGuard ng;
  const int64_t B = x_f.size(0), T = x_f.size(1), H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  Tensor x = x_f.to(torch::kDouble);
  auto W = [](const Linear& l) { return l->weight.to(torch::kDouble); };
  RopeTables r = rope_tables(c, 0, T, torch::kCPU, torch::kDouble);
  Tensor q = apply_rope(torch::matmul(x, W(A.q_proj).t()).view({B, T, H, D}).transpose(1, 2), r.cos, r.sin);
  Tensor k = apply_rope(torch::matmul(x, W(A.k_proj).t()).view({B, T, Hkv, D}).transpose(1, 2), r.cos, r.sin);
  Tensor v = torch::matmul(x, W(A.v_proj).t()).view({B, T, Hkv, D}).transpose(1, 2);
  // rows 3h, 3h+1, 3h+2 of g_proj: g_cmp, g_slc, g_swa of head h
  Tensor g = torch::sigmoid(torch::matmul(x, W(A.g_proj).t()).view({B, T, H, 3})).permute({0, 2, 1, 3});
  Tensor o_slc = mode == AttnMode::Full ? naive_full_attention(q, k, v) : naive_sparse_attention(q, k, v, spec);
  Tensor o = o_slc * g.select(-1, 1).unsqueeze(-1) +
             naive_compressed_attention(q, k, v, c.block_size) * g.select(-1, 0).unsqueeze(-1) +
             naive_window_attention(q, k, v, c.window_size) * g.select(-1, 2).unsqueeze(-1);
  return torch::matmul(o.transpose(1, 2).reshape({B, T, H * D}), W(A.o_proj).t());
}

}  // namespace

TEST_CASE("an NSA model's attention layer is the gated sum of the three branches", "[nsa][model]") {
  ModelConfig c = nsa_config();
  REQUIRE(model_support_problem(c).empty());
  Transformer m(c);
  m.init_weights(5);
  {  // gates far from 0.5 so a swapped row would show
    torch::NoGradGuard ng;
    for (auto& l : *m.layers) l->as<DecoderLayerImpl>()->self_attn->g_proj->weight.mul_(40.0);
  }
  auto& A = *m.layers->ptr<DecoderLayerImpl>(0)->self_attn;
  CHECK(A.nsa_block_size == c.block_size);
  CHECK(A.nsa_window == c.window_size);
  const int64_t T = 29;  // not a multiple of the block
  torch::manual_seed(6);
  Tensor x = torch::randn({2, T, c.hidden_size});
  RopeTables r = rope_tables(c, 0, T, torch::kCPU, torch::kFloat);
  for (AttnMode mode : {AttnMode::Sparse, AttnMode::Full}) {
    for (int window : {1, 6, 100}) {
      A.nsa_window = window;
      ModelConfig cw = c;
      cw.window_size = window;
      ForwardOptions fo;
      fo.mode = mode;
      fo.spec = model_sparse_spec(c);
      std::vector<Tensor> alignment;
      ForwardOutput out;
      torch::NoGradGuard ng;
      Tensor got = A.forward(x, r.cos, r.sin, fo, alignment, out);
      Tensor want = attention_by_hand(A, cw, x, mode, fo.spec);
      INFO(to_string(mode) << " window " << window << " diff " << max_diff(got, want));
      CHECK(max_diff(got, want) < 1e-5 * std::max(1.0, want.abs().max().item<double>()));
    }
  }
  A.nsa_window = c.window_size;
  // without the window the same weights give another output (the branches do something)
  ModelConfig plain = c;
  plain.window_size = 0;
  Transformer p(plain);
  p.init_weights(5);
  Tensor tokens = torch::randint(0, c.vocab_size, {1, T}, torch::kLong);
  torch::NoGradGuard ng;
  for (auto& l : *p.layers) l->as<DecoderLayerImpl>()->self_attn->g_proj->weight.mul_(40.0);
  CHECK(max_diff(m.forward(tokens).logits, p.forward(tokens).logits) > 1e-4);
}

TEST_CASE("NSA: every gate row and every projection gets a gradient, in each mode", "[nsa][model]") {
  torch::manual_seed(8);
  Tensor tokens = torch::randint(0, 512, {2, 33}, torch::kLong);
  auto g_proj_grad = [&](const ModelConfig& c, ForwardOptions fo) {
    Transformer m(c);
    m.init_weights(9);
    ForwardOutput out = m.forward(tokens.narrow(1, 0, 32), fo);
    Tensor loss = lm_loss(out.logits, tokens.narrow(1, 1, 32));
    if (fo.dual) loss = loss + 10.0 * out.alignment_loss;
    loss.backward();
    for (auto& p : m.named_parameters()) {
      INFO(p.key());
      REQUIRE(p.value().grad().defined());
      REQUIRE(torch::isfinite(p.value().grad()).all().item<bool>());
    }
    auto& A = *m.layers->ptr<DecoderLayerImpl>(0)->self_attn;
    for (auto* lin : {&A.q_proj, &A.k_proj, &A.v_proj}) CHECK((*lin)->weight.grad().abs().sum().item<double>() > 0);
    return A.g_proj->weight.grad().view({c.num_heads, 3, c.hidden_size}).abs().sum(std::vector<int64_t>{0, 2});  // (3,)
  };
  ModelConfig c = nsa_config();
  ForwardOptions sparse;
  sparse.mode = AttnMode::Sparse;
  sparse.spec = model_sparse_spec(c);
  ForwardOptions full;
  ForwardOptions dual = sparse;
  dual.dual = true;
  for (const ForwardOptions& fo : {sparse, full, dual}) {
    Tensor g = g_proj_grad(c, fo);
    INFO(to_string(fo.mode) << (fo.dual ? " dual" : "") << " g_cmp/g_slc/g_swa grad " << g);
    CHECK(g[0].item<double>() > 0);
    CHECK(g[1].item<double>() > 0);
    CHECK(g[2].item<double>() > 0);
  }
  // the SSA/MoBA/FullAttn models (window_size 0) still use g_slc only
  Tensor g = g_proj_grad(nsa_config(0), sparse);
  CHECK(g[0].item<double>() == 0);
  CHECK(g[1].item<double>() > 0);
  CHECK(g[2].item<double>() == 0);
}

TEST_CASE("analysing an NSA model runs (maps show the selection branch's q and k)", "[nsa][metrics]") {
  Transformer m(nsa_config());
  m.init_weights(10);
  AnalysisRequest req;
  for (int i = 0; i < 40; ++i) req.tokens.push_back((i * 37) % 512);
  req.spec = model_sparse_spec(m.config());
  req.token_losses = true;
  for (AttnMode mode : {AttnMode::Full, AttnMode::Sparse}) {
    req.inference = mode;
    Analysis a = analyze(m, req);
    CHECK(a.layers.size() == size_t(m.config().num_layers));
    CHECK(std::isfinite(a.mean_sparsity()));
    CHECK(a.nll_full.size() == 39);
  }
}

TEST_CASE("an NSA config without the g_proj gate is refused", "[nsa][bad-input]") {
  ModelConfig c = nsa_config();
  c.gate = false;
  CHECK(model_support_problem(c).find("g_proj") != std::string::npos);
  CHECK_THROWS_AS(Transformer(c), Error);
}

TEST_CASE("on CUDA, an NSA model in bf16 agrees with the fp32 reference", "[nsa][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  ModelConfig c = nsa_config(32);
  c.head_dim = 64;
  c.block_size = 16;
  c.block_counts = 4;
  Transformer m(c);
  m.init_weights(3);
  m.to(torch::kCUDA);
  torch::NoGradGuard ng;
  Tensor tokens = torch::randint(0, c.vocab_size, {2, 256}, torch::dtype(torch::kLong).device(torch::kCUDA));
  ForwardOptions fo;
  fo.mode = AttnMode::Sparse;
  fo.spec = {16, 4};
  Tensor ref = m.forward(tokens, fo).logits;  // fp32: reference backend for every branch
  m.to(torch::kBFloat16);
  Tensor fast = m.forward(tokens, fo).logits.to(torch::kFloat);  // bf16: kernel selection + LibTorch branches
  double err = (fast - ref).abs().max().item<double>(), scale = ref.abs().max().item<double>();
  INFO("max error " << err << " of " << scale);
  REQUIRE(err < 0.05 * scale + 0.05);
}
