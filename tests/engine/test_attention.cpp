// Attention ops against naive loops, gradients by finite differences (double),
// the stop-gradients of the SSA alignment losses, and (on a GPU) the fused
// dual-stream kernels against the split path.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdlib>

#include "engine/attention/attention.h"
#include "engine/util/error.h"
#include "tensor_checks.h"

using namespace ssalab;
using namespace ssalab::test;
using torch::Tensor;

TEST_CASE("full attention matches the naive loop", "[attention]") {
  for (auto [Hq, Hkv] : {std::pair{4, 1}, std::pair{4, 2}, std::pair{3, 3}}) {
    auto x = random_qkv(2, Hq, Hkv, 37, 8, 1);
    Tensor ref = naive_full_attention(x.q, x.k, x.v);
    Tensor out = reference_backend().full(x.q, x.k, x.v);
    INFO("Hq " << Hq << " Hkv " << Hkv << " diff " << max_diff(out, ref));
    REQUIRE(max_diff(out, ref) < 1e-10);
  }
}

TEST_CASE("selection and sparse attention match the naive loops", "[attention]") {
  struct Case { int B, Hq, Hkv, T, D, bs, k; };
  for (Case c : {Case{1, 4, 1, 64, 8, 8, 3}, Case{2, 4, 2, 50, 8, 8, 2}, Case{1, 6, 3, 45, 4, 4, 5},
                 Case{1, 2, 1, 33, 8, 16, 2}, Case{2, 8, 2, 96, 16, 16, 4}, Case{1, 1, 1, 17, 4, 1, 6}}) {
    auto x = random_qkv(c.B, c.Hq, c.Hkv, c.T, c.D, 7 + c.T);
    SparseSpec spec{c.bs, c.k};
    Tensor blocks_ref;
    Tensor ref = naive_sparse_attention(x.q, x.k, x.v, spec, &blocks_ref);
    Selection sel = select_blocks(x.q, x.k, spec);
    INFO("T " << c.T << " bs " << c.bs << " k " << c.k << " Hq/Hkv " << c.Hq << "/" << c.Hkv);
    REQUIRE(torch::equal(sel.blocks, blocks_ref));
    Tensor out = reference_backend().sparse(x.q, x.k, x.v, sel);
    REQUIRE(max_diff(out, ref) < 1e-10);
    // the local block is always slot 0, and every token attends to itself
    Tensor own = torch::div(torch::arange(c.T, torch::kLong), c.bs, "floor");
    REQUIRE(torch::equal(sel.blocks.select(3, 0), own.view({1, 1, c.T}).expand({c.B, c.Hkv, c.T})));
  }
}

TEST_CASE("ties between block scores go to the lower block index", "[attention]") {
  // identical keys everywhere: every past block scores the same
  Tensor q = torch::randn({1, 2, 64, 4}, torch::kDouble);
  Tensor k = torch::ones({1, 1, 64, 4}, torch::kDouble);
  Selection sel = select_blocks(q, k, {8, 3});
  // token 63 (block 7): past blocks 0..6 tie -> picks 0 and 1
  auto row = sel.blocks[0][0][63];
  REQUIRE(row[0].item<int64_t>() == 7);
  REQUIRE(row[1].item<int64_t>() == 0);
  REQUIRE(row[2].item<int64_t>() == 1);
}

TEST_CASE("sparse with k covering every block equals full attention", "[attention]") {
  auto x = random_qkv(2, 4, 2, 70, 8, 3);
  for (int bs : {1, 7, 16, 70}) {
    int nb = (70 + bs - 1) / bs;
    Tensor out = reference_backend().sparse(x.q, x.k, x.v, select_blocks(x.q, x.k, {bs, nb}));
    REQUIRE(max_diff(out, reference_backend().full(x.q, x.k, x.v)) < 1e-12);
  }
}

TEST_CASE("dual stream returns exactly the two single streams", "[attention]") {
  auto x = random_qkv(1, 4, 1, 48, 8, 5);
  Selection sel = select_blocks(x.q, x.k, {8, 2});
  auto both = reference_backend().dual(x.q, x.k, x.v, sel);
  REQUIRE(max_diff(both.first, reference_backend().full(x.q, x.k, x.v)) == 0);
  REQUIRE(max_diff(both.second, reference_backend().sparse(x.q, x.k, x.v, sel)) == 0);
}

TEST_CASE("long inputs are processed in row chunks with the same result", "[attention]") {
  // 4 heads x 4500 rows exceeds one chunk (2^20 scores): exercises the chunk loop
  torch::manual_seed(11);
  const int T = 4500;
  Tensor q = torch::randn({1, 4, T, 8}), k = torch::randn({1, 1, T, 8}), v = torch::randn({1, 1, T, 8});
  torch::NoGradGuard ng;
  Tensor out = reference_backend().full(q, k, v);
  // compare a few rows with a direct computation
  for (int t : {0, 1000, 4095, T - 1}) {
    Tensor s = torch::matmul(q[0][2][t], k[0][0].narrow(0, 0, t + 1).t()) / std::sqrt(8.0);
    Tensor ref = torch::matmul(torch::softmax(s, 0), v[0][0].narrow(0, 0, t + 1));
    REQUIRE(max_diff(out[0][2][t], ref) < 1e-5);
  }
}

TEST_CASE("finite-difference gradients of full and sparse attention", "[attention][grad]") {
  auto x = random_qkv(1, 4, 2, 24, 4, 9);
  Selection sel = select_blocks(x.q, x.k, {4, 2});  // fixed selection: no gradient through it
  auto& be = reference_backend();
  check_grad([&](const Tensor& q) { return be.full(q, x.k, x.v); }, x.q);
  check_grad([&](const Tensor& k) { return be.full(x.q, k, x.v); }, x.k);
  check_grad([&](const Tensor& v) { return be.full(x.q, x.k, v); }, x.v);
  check_grad([&](const Tensor& q) { return be.sparse(q, x.k, x.v, sel); }, x.q);
  check_grad([&](const Tensor& k) { return be.sparse(x.q, k, x.v, sel); }, x.k);
  check_grad([&](const Tensor& v) { return be.sparse(x.q, x.k, v, sel); }, x.v);
}

TEST_CASE("the alignment loss is the paper's sparsity and commitment losses, in value and gradient",
          "[attention][grad]") {
  torch::manual_seed(3);
  for (auto dtype : {torch::kDouble, torch::kFloat, torch::kBFloat16}) {
    Tensor hf = (torch::randn({2, 5, 3, 4}, torch::kDouble) * 2).to(dtype).set_requires_grad(true);
    Tensor hs = (torch::randn({2, 5, 3, 4}, torch::kDouble) * 2).to(dtype).set_requires_grad(true);
    INFO("dtype " << dtype);
    // the paper's two losses, each with its stop-gradient (SSA.md)
    const auto mean = at::Reduction::Mean;
    Tensor sparsity = torch::smooth_l1_loss(hf, hs.detach(), mean, 1.0);
    Tensor commitment = torch::smooth_l1_loss(hf.detach(), hs, mean, 1.0);
    Tensor a = alignment_loss(hf, hs);
    // value: SmoothL1 with beta 1, mean over elements, and each loss's value
    Tensor d = (hf - hs).abs().detach().to(torch::kDouble);
    double expect = torch::where(d < 1, 0.5 * d * d, d - 0.5).mean().item<double>();
    REQUIRE(a.item<double>() == Approx(expect).epsilon(dtype == torch::kDouble ? 1e-12 : 1e-2));
    REQUIRE(torch::equal(a, sparsity));
    REQUIRE(torch::equal(a, commitment));
    // gradient: that of sparsity + commitment, bit for bit (sparsity moves
    // h_full only, commitment h_sparse only)
    auto g_paper = torch::autograd::grad({sparsity + commitment}, {hf, hs});
    auto g_ours = torch::autograd::grad({a}, {hf, hs});
    REQUIRE(g_paper[0].abs().sum().item<double>() > 0);
    REQUIRE(torch::equal(g_ours[0], g_paper[0]));
    REQUIRE(torch::equal(g_ours[1], g_paper[1]));
    // and not that of twice one loss (what a doubled term would train with)
    REQUIRE_FALSE(torch::equal(g_ours[0], 2 * g_paper[0]));
  }
  // finite differences in each argument
  Tensor hf = torch::randn({2, 5, 3, 4}, torch::kDouble) * 2, hs = torch::randn({2, 5, 3, 4}, torch::kDouble) * 2;
  check_grad([&](const Tensor& x) { return alignment_loss(x, hs); }, hf);
  check_grad([&](const Tensor& x) { return alignment_loss(hf, x); }, hs);
}

TEST_CASE("impossible sparse settings are rejected with the reason", "[attention][bad-input]") {
  auto x = random_qkv(1, 2, 1, 32, 4, 1);
  REQUIRE_THROWS_WITH(select_blocks(x.q, x.k, {8, 0}), Catch::Contains("top-k must be >= 1"));
  REQUIRE_THROWS_WITH(select_blocks(x.q, x.k, {8, 5}), Catch::Contains("exceeds the 4 blocks"));
  REQUIRE_THROWS_WITH(select_blocks(x.q, x.k, {64, 1}), Catch::Contains("does not fit"));
  REQUIRE_THROWS_WITH(select_blocks(x.q, x.k, {0, 1}), Catch::Contains("block size must be >= 1"));
  REQUIRE(check_sparse_spec({8, 4}, 32).empty());
}

TEST_CASE("on CUDA, the fused dual-stream kernels match the split path", "[attention][cuda]") {
  if (!torch::cuda::is_available() || !cuda_backend()) {
    WARN("no CUDA device: skipped");
    return;
  }
  auto x = random_qkv(2, 8, 2, 300, 64, 9, torch::kBFloat16);
  Tensor q = x.q.cuda(), k = x.k.cuda(), v = x.v.cuda();
  Selection sel = cuda_backend()->select(q, k, {16, 5});
  Tensor g_full = torch::randn_like(q), g_sparse = torch::randn_like(q);
  // {full, sparse, dq, dk, dv} through the backend's dual(), with the two streams'
  // own upstream gradients
  auto run = [&](const char* mode) {
    if (mode) setenv("SSALAB_DUAL_KERNEL", mode, 1);
    else unsetenv("SSALAB_DUAL_KERNEL");
    Tensor qq = q.detach().requires_grad_(), kk = k.detach().requires_grad_(), vv = v.detach().requires_grad_();
    auto out = cuda_backend()->dual(qq, kk, vv, sel);
    torch::autograd::backward({out.first, out.second}, {g_full, g_sparse});
    unsetenv("SSALAB_DUAL_KERNEL");
    return std::vector<Tensor>{out.first.detach(), out.second.detach(), qq.grad(), kk.grad(), vv.grad()};
  };
  const auto split = run(nullptr), fused = run("fused");
  const char* names[5] = {"full output", "sparse output", "dq", "dk", "dv"};
  for (int i = 0; i < 5; ++i) {
    const Tensor a = fused[i].to(torch::kFloat), b = split[i].to(torch::kFloat);
    const double rel = ((a - b).norm() / (b.norm() + 1e-12)).item<double>();
    INFO(names[i] << ": relative difference " << rel);
    REQUIRE(rel < 2e-2);
  }
  // only the sparse stream's gradient: the full output's counts as zero
  setenv("SSALAB_DUAL_KERNEL", "fused", 1);
  Tensor qq = q.detach().requires_grad_();
  auto out = cuda_backend()->dual(qq, k, v, sel);
  out.second.backward(g_sparse);
  unsetenv("SSALAB_DUAL_KERNEL");
  Tensor qs = q.detach().requires_grad_();
  cuda_backend()->sparse(qs, k, v, sel).backward(g_sparse);
  const double rel = ((qq.grad() - qs.grad()).to(torch::kFloat).norm() / qs.grad().to(torch::kFloat).norm()).item<double>();
  INFO("dq through the sparse output alone: relative difference " << rel);
  REQUIRE(rel < 2e-2);
}

TEST_CASE("on CUDA, select_and_dual gives dual(select())", "[attention][cuda]") {
  if (!torch::cuda::is_available() || !cuda_backend()) {
    WARN("no CUDA device: skipped");
    return;
  }
  auto x = random_qkv(2, 8, 2, 300, 64, 10, torch::kBFloat16);
  const SparseSpec spec{16, 5, SelectionRule::NsaChunked};
  Tensor g_full = torch::randn_like(x.q).cuda(), g_sparse = torch::randn_like(x.q).cuda();
  auto run = [&](bool joined) {
    Tensor q = x.q.cuda().requires_grad_(), k = x.k.cuda().requires_grad_(), v = x.v.cuda().requires_grad_();
    auto out = joined ? cuda_backend()->select_and_dual(q, k, v, spec)
                      : cuda_backend()->dual(q, k, v, cuda_backend()->select(q, k, spec));
    torch::autograd::backward({out.first, out.second}, {g_full, g_sparse});
    return std::vector<Tensor>{out.first.detach(), out.second.detach(), q.grad(), k.grad(), v.grad()};
  };
  const auto joined = run(true), apart = run(false);
  // the outputs bit for bit (the same selection); the gradients up to the
  // order of the dense backward's atomic sums
  REQUIRE(torch::equal(joined[0], apart[0]));
  REQUIRE(torch::equal(joined[1], apart[1]));
  for (size_t i = 2; i < joined.size(); ++i) {
    const Tensor a = joined[i].to(torch::kFloat), b = apart[i].to(torch::kFloat);
    const double rel = ((a - b).norm() / (b.norm() + 1e-12)).item<double>();
    INFO("gradient " << i - 2 << ": relative difference " << rel);
    REQUIRE(rel < 1e-2);
  }
}

// ---------------------------------------------------------------- the cache contract

TEST_CASE("queries at an offset against a longer key cache match the naive loops", "[attention][cache]") {
  auto x = random_qkv(2, 4, 2, 70, 8, 21);
  for (int64_t offset : {0, 5, 33, 54}) {
    const int64_t Tq = 70 - offset - 3;  // three keys past the last query: invisible to all of them
    Tensor q = x.q.narrow(2, offset, Tq);
    Tensor ref = naive_full_attention(q, x.k, x.v, offset);
    INFO("offset " << offset);
    REQUIRE(max_diff(reference_backend().full(q, x.k, x.v, offset), ref) < 1e-10);
    for (SelectionRule rule : {SelectionRule::TopK, SelectionRule::NsaChunked}) {
      SparseSpec spec{4, 3, rule};
      Tensor naive_blocks;
      Tensor sref = naive_sparse_attention(q, x.k, x.v, spec, &naive_blocks, offset);
      Selection sel = reference_backend().select(q, x.k, spec, offset);
      REQUIRE(sel.q_offset == offset);
      REQUIRE(torch::equal(sel.blocks, naive_blocks));
      REQUIRE(max_diff(reference_backend().sparse(q, x.k, x.v, sel), sref) < 1e-10);
    }
  }
}

TEST_CASE("a chunked forward equals the whole forward, full and sparse", "[attention][cache]") {
  auto x = random_qkv(1, 6, 2, 203, 16, 22);
  const int64_t T = 203;
  for (SelectionRule rule : {SelectionRule::TopK, SelectionRule::NsaChunked}) {
    SparseSpec spec{8, 18, rule};  // k >= 16: the chunked rule differs from topk past 16 blocks
    AttentionBackend& be = reference_backend();
    Tensor whole_full = be.full(x.q, x.k, x.v);
    Selection whole_sel = be.select(x.q, x.k, spec);
    Tensor whole_sparse = be.sparse(x.q, x.k, x.v, whole_sel);
    // prefill in uneven chunks, each against the keys written so far (a growing cache)
    std::vector<Tensor> full_parts, sparse_parts, block_parts;
    for (int64_t start : {0, 150, 151, 190}) {
      const int64_t end = start == 0 ? 150 : start == 150 ? 151 : start == 151 ? 190 : T;
      Tensor q = x.q.narrow(2, start, end - start), k = x.k.narrow(2, 0, end), v = x.v.narrow(2, 0, end);
      full_parts.push_back(be.full(q, k, v, start));
      Selection sel = be.select(q, k, spec, start);
      block_parts.push_back(sel.blocks);
      sparse_parts.push_back(be.sparse(q, k, v, sel));
    }
    INFO("rule " << to_string(rule));
    REQUIRE(torch::equal(torch::cat(block_parts, 2), whole_sel.blocks));
    REQUIRE(max_diff(torch::cat(full_parts, 2), whole_full) < 1e-12);
    REQUIRE(max_diff(torch::cat(sparse_parts, 2), whole_sparse) < 1e-12);
  }
}

TEST_CASE("a call whose queries run past the keys is refused with the reason", "[attention][cache][bad-input]") {
  auto x = random_qkv(1, 2, 1, 32, 4, 23);
  REQUIRE_THROWS_WITH(reference_backend().full(x.q, x.k.narrow(2, 0, 20), x.v.narrow(2, 0, 20)),
                      Catch::Contains("there are 20 keys"));
  REQUIRE_THROWS_WITH(reference_backend().full(x.q.narrow(2, 0, 8), x.k, x.v, 30), Catch::Contains("[30, 38)"));
  REQUIRE_FALSE(reference_backend().supports(x.q, x.k, {8, 4}, 1).empty());
  REQUIRE(reference_backend().supports(x.q.narrow(2, 0, 8), x.k, {8, 4}, 24).empty());
}

// ---------------------------------------------------------------- selection rules

TEST_CASE("the nsa-chunked rule matches its naive loop and differs from topk only past the first chunk",
          "[attention][rule]") {
  // 48 blocks of 4 tokens: queries in chunk 0 (blocks 0-15), 1 and 2
  auto x = random_qkv(1, 4, 1, 192, 8, 24);
  SparseSpec chunked{4, 16, SelectionRule::NsaChunked}, topk{4, 16, SelectionRule::TopK};
  Tensor naive_blocks;
  Tensor ref = naive_sparse_attention(x.q, x.k, x.v, chunked, &naive_blocks);
  Selection sel = select_blocks(x.q, x.k, chunked);
  REQUIRE(torch::equal(sel.blocks, naive_blocks));
  REQUIRE(max_diff(reference_backend().sparse(x.q, x.k, x.v, sel), ref) < 1e-10);
  Selection exact = select_blocks(x.q, x.k, topk);
  // inside the first 16 blocks both rules keep every block 0..own
  REQUIRE(torch::equal(sel.blocks.narrow(2, 0, 64), exact.blocks.narrow(2, 0, 64)));
  // with k < 16 the released kernel is an exact top-k
  REQUIRE(torch::equal(select_blocks(x.q, x.k, {4, 8, SelectionRule::NsaChunked}).blocks,
                       select_blocks(x.q, x.k, {4, 8, SelectionRule::TopK}).blocks));
}

TEST_CASE("nsa-chunked on hand-checked rows", "[attention][rule]") {
  // One head, one group, block size 1, 40 tokens: the score of block j for any
  // query is set by its key alone (a large q along one axis), so the ranking
  // is known: keys with a larger first coordinate win.
  const int64_t T = 40;
  Tensor q = torch::zeros({1, 1, T, 2}, torch::kDouble), k = torch::zeros({1, 1, T, 2}, torch::kDouble);
  q.select(3, 0).fill_(30.0);
  for (int64_t j = 0; j < T; ++j) k[0][0][j][0] = double((j * 7) % 40) / 40.0;  // a fixed permutation of scores
  Selection sel = select_blocks(q, k, {1, 16, SelectionRule::NsaChunked});
  auto row = [&](int64_t t) {
    std::vector<int64_t> r;
    for (int64_t s = 0; s < 16; ++s) r.push_back(sel.blocks[0][0][t][s].item<int64_t>());
    return r;
  };
  // t = 10: still in chunk 0, every block 0..10, own first, then by falling score
  std::vector<int64_t> r10 = row(10);
  REQUIRE(r10[0] == 10);
  std::vector<int64_t> got(r10.begin() + 1, r10.begin() + 11), want;
  for (int64_t j = 0; j < 10; ++j) want.push_back(j);
  std::sort(got.begin(), got.end());
  REQUIRE(got == want);
  REQUIRE(r10[11] == -1);
  // t = 17: chunk 1 = blocks 16..31; 8 best of blocks 0..15, plus block 16 (the only
  // other candidate of the current chunk), 6 slots empty.
  // scores (j*7 % 40): best of 0..15 are j = 11 (37), 5 (35), 10 (30), 4 (28), 15 (25),
  // 9 (23), 3 (21), 14 (18); block 16 scores 32.
  std::vector<int64_t> r17 = row(17);
  std::vector<int64_t> expect17 = {17, 11, 5, 16, 10, 4, 15, 9, 3, 14, -1, -1, -1, -1, -1, -1};
  REQUIRE(r17 == expect17);
  // the exact rule would fill all 15 past slots instead
  Selection exact = select_blocks(q, k, {1, 16, SelectionRule::TopK});
  REQUIRE(exact.blocks[0][0][17][15].item<int64_t>() >= 0);
}
