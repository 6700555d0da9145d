// Decoding with a KV cache on the GPU (issue "Generation with a KV cache"):
// attention time per generated token, our sparse decode kernel (selection
// from the cache's pooled block keys + attention over the k selected blocks,
// kernels/decode.cu) against dense decoding of the same cache with LibTorch's
// SDPA (enable_gqa: the cache read once; and on a pre-expanded cache, the
// layout HF's repeat_kv makes), and a whole 1B model's tokens/s, full
// against sparse.
//
//   ssalab_decode_bench [--contexts 8192,32768,131072] [--batches 1,32] [--iters 50]
//                       [--model-context 32768] [--model-batches 1,32] [--steps 32] [--no-model]
//                       [--bf16-pooling]
//
// Attention rows: bf16, one layer's cache, the L2 flushed before every timed
// call (a model's layers each read their own cache), median of --iters CUDA
// event timings, through AttentionBackend::decode (output, selection and
// workspace allocated per call) and the kernels alone on buffers made once.
// Bytes: dense reads K and V of every cached token; sparse
// reads the pooled keys (fp32, or bf16) of the complete blocks and K and V of the k
// selected blocks. The kernel's output and selection are checked against the
// engine's reference (select_blocks_pooled + masked attention in fp32).
// Model rows: a random-weight model in the released 1B layout (16 layers,
// 32 q / 2 kv heads, d64), bf16, its KV cache filled with random keys and
// values to the context (no prefill), then --steps decoding steps timed end to
// end (embedding to logits, sampling excluded), top-k rule, block 16, k 16,
// sparse with fp32 pooled keys and with bf16 ones (PooledKeys::Bf16, the
// released checkpoints' pooling).
// --bf16-pooling adds a table of the kernels alone with the pooled keys
// stored in bf16 (DecodeParams::block_keys_bf16) beside fp32 ones: what half
// the scoring bytes buy.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "bench/bench_args.h"
#include "engine/attention/attention.h"
#include "engine/attention/complete_blocks.h"
#include "engine/attention/kernel_params.h"
#include "engine/checkpoint/random_checkpoint.h"
#include "engine/generate/generate.h"
#include "engine/model/transformer.h"

using namespace ssalab;
using ssalab::bench::int_list;
using torch::Tensor;

namespace {

Tensor g_flush;
void flush_l2() {
  if (!g_flush.defined()) g_flush = torch::empty({int64_t(256) << 20}, torch::dtype(torch::kUInt8).device(torch::kCUDA));
  g_flush.zero_();
}

// Median ms of `iters` calls of f, each after an L2 flush, timed with events.
template <class F>
double time_ms(F&& f, int iters) {
  auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<double> t;
  for (int i = 0; i < iters + 3; ++i) {
    flush_l2();
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, stream.stream());
    f();
    cudaEventRecord(b, stream.stream());
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    if (i >= 3) t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double rel(const Tensor& a, const Tensor& b) {
  return ((a.to(torch::kFloat) - b.to(torch::kFloat)).norm() / (b.to(torch::kFloat).norm() + 1e-12)).item<double>();
}

struct Heads { int Hq, Hkv, D; const char* name; };
const Heads kShapes[] = {{32, 2, 64, "1B layer 32q/2kv d64"}, {16, 1, 128, "16q/1kv d128"}};
// the released checkpoints' rule beside the exact top-k (decode.cuh)
const SparseSpec kSpecs[] = {{16, 16, SelectionRule::TopK}, {16, 16, SelectionRule::NsaChunked},
                             {64, 16, SelectionRule::TopK}};

// One layer's cache of T random keys and values per sequence, the queries, and
// dense decoding's time (SDPA reading the cache once, enable_gqa) and bytes.
struct DecodeCase {
  Tensor q, k, v;
  double dense_ms, dense_bytes;
};
DecodeCase decode_case(const Heads& h, int T, int B, int iters) {
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::manual_seed(1);
  DecodeCase c;
  c.q = torch::randn({B, h.Hq, 1, h.D}, o), c.k = torch::randn({B, h.Hkv, T, h.D}, o),
  c.v = torch::randn({B, h.Hkv, T, h.D}, o);
  const bool gqa = h.Hq > h.Hkv;
  c.dense_ms = time_ms([&] { at::scaled_dot_product_attention(c.q, c.k, c.v, {}, 0.0, false, std::nullopt, gqa); }, iters);
  c.dense_bytes = 2.0 * B * h.Hkv * double(T) * h.D * 2;
  return c;
}

// f(heads, context, batch, case) over every shape, context and batch.
template <class F>
void for_each_case(const std::vector<int>& contexts, const std::vector<int>& batches, int iters, F f) {
  for (const Heads& h : kShapes)
    for (int T : contexts)
      for (int B : batches) f(h, T, B, decode_case(h, T, B, iters));
}

// Bytes sparse decoding reads per step: the pooled keys of the complete blocks
// (key_bytes an element) and K and V of the k selected blocks.
double sparse_bytes(const Heads& h, int T, int B, const SparseSpec& spec, int key_bytes) {
  return B * h.Hkv * (double(T / spec.block_size) * h.D * key_bytes + 2.0 * spec.top_k * spec.block_size * h.D * 2);
}

// A decode step's output and selection against the reference decoding with the
// same pooled keys, at batch 1 up to 32K tokens (the reference materialises
// (Hq, Tk) scores in fp32); "-" elsewhere.
std::string reference_check(const DecodeCase& dc, const Tensor& block_keys, const SparseSpec& spec, const Tensor& out,
                            const Tensor& blocks) {
  if (dc.q.size(0) != 1 || dc.k.size(2) > 32768) return "-";
  Tensor ref_blocks;
  Tensor ref = reference_backend().decode(dc.q.to(torch::kFloat), dc.k.to(torch::kFloat), dc.v.to(torch::kFloat),
                                          block_keys.to(torch::kFloat), spec, &ref_blocks);
  // flattened: the backend returns (B, Hkv, 1, k), the kernels alone write (B, Hkv, k), and comparing
  // the two as shaped would broadcast one group's slots against the other's
  const Tensor got = blocks.cpu().to(torch::kLong).reshape({-1}), want = ref_blocks.cpu().to(torch::kLong).reshape({-1});
  if (got.numel() != want.numel()) return "selection has the wrong size";
  const double same = got.eq(want).to(torch::kFloat).mean().item<double>();
  char buf[96];
  std::snprintf(buf, sizeof buf, "rel %.1e, slots equal %.3f", rel(out, ref), same);
  return buf;
}

// The decode kernels alone, on buffers made once (as a CUDA graph or a fused
// step would run them); the selection is written out only if asked for.
struct KernelsAlone {
  Tensor o, blocks, ws;
  ssa::DecodeParams p;
  KernelsAlone(const DecodeCase& dc, const Tensor& block_keys, const SparseSpec& spec, bool with_blocks) {
    o = torch::empty_like(dc.q);
    if (with_blocks) blocks = torch::empty({dc.q.size(0), dc.k.size(1), spec.top_k}, dc.q.options().dtype(torch::kInt));
    p = decode_params(dc.q, dc.k, dc.v, block_keys, spec.block_size, spec.top_k, spec.rule == SelectionRule::NsaChunked,
                      o, blocks);
    ws = torch::empty({int64_t(ssa::decode_workspace_bytes(p) / 4 + 1)}, dc.q.options().dtype(torch::kFloat));
    p.workspace = ws.data_ptr<float>();
  }
  std::string run() const { return ssa::decode_attention(p, at::cuda::getCurrentCUDAStream().stream()); }
};

void attention_rows(const std::vector<int>& contexts, const std::vector<int>& batches, int iters) {
  AttentionBackend& cuda = *cuda_backend();
  std::printf("\n## Attention per decoded token (bf16, one layer, L2 flushed; ms, median of %d)\n\n", iters);
  std::printf("| heads | context | batch | block/k | dense SDPA gqa | dense SDPA expanded | sparse decode | kernels alone | kernels/dense"
              " | bytes sparse/dense | kernels GB/s | check |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for_each_case(contexts, batches, iters, [&](const Heads& h, int T, int B, const DecodeCase& dc) {
    const Tensor &q = dc.q, &k = dc.k, &v = dc.v;
    const int G = h.Hq / h.Hkv;
    const double dense = dc.dense_ms;
    double expanded = -1;
    if (int64_t(B) * h.Hq * T * h.D * 2 * 2 < (int64_t(24) << 30)) {  // the expanded copy fits
      Tensor ke = k.repeat_interleave(G, 1), ve = v.repeat_interleave(G, 1);
      expanded = time_ms([&] { at::scaled_dot_product_attention(q, ke, ve); }, iters);
    }
    const double dense_bytes = dc.dense_bytes;
    for (const SparseSpec& spec : kSpecs) {
      Tensor bk = complete_block_means(k.to(torch::kFloat), spec.block_size);
      Tensor blocks;
      Tensor out = cuda.decode(q, k, v, bk, spec, &blocks);
      const std::string check = reference_check(dc, bk, spec, out, blocks);
      double sparse = time_ms([&] { cuda.decode(q, k, v, bk, spec); }, iters);
      const KernelsAlone alone(dc, bk, spec, false);
      double kernels = time_ms([&] { alone.run(); }, iters);
      const double bytes = sparse_bytes(h, T, B, spec, 4);
      std::printf("| %s | %d | %d | %d/%d%s | %.4f | %s | %.4f | %.4f | %.3f | %.3f | %.0f | %s |\n", h.name, T, B,
                  spec.block_size, spec.top_k, spec.rule == SelectionRule::NsaChunked ? " nsa-chunked" : "", dense,
                  expanded < 0 ? "-" : std::to_string(expanded).substr(0, 6).c_str(), sparse, kernels,
                  kernels / dense, bytes / dense_bytes, bytes / (kernels * 1e6), check.c_str());
      std::fflush(stdout);
    }
  });
}

// The kernels alone with bf16 pooled keys (PooledKeys::Bf16) against fp32
// ones on the same cache; the bf16 run's selection and output checked against
// the reference decoding with the same bf16-rounded keys.
void bf16_pooling_rows(const std::vector<int>& contexts, const std::vector<int>& batches, int iters) {
  std::printf("\n## Pooled keys in bf16 (the released checkpoints' pooling; kernels alone, bf16, L2 flushed; ms, "
              "median of %d)\n\n", iters);
  std::printf("| heads | context | batch | block/k | dense SDPA gqa | fp32 keys | bf16 keys | fp32/dense | bf16/dense"
              " | bytes sparse/dense fp32 / bf16 | check (bf16 keys) |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for_each_case(contexts, batches, iters, [&](const Heads& h, int T, int B, const DecodeCase& dc) {
    const double dense = dc.dense_ms, dense_bytes = dc.dense_bytes;
    for (const SparseSpec& spec : kSpecs) {
      Tensor bk = complete_block_means(dc.k.to(torch::kFloat), spec.block_size).contiguous();
      Tensor bk16 = bk.to(torch::kBFloat16);
      KernelsAlone alone(dc, bk, spec, true);
      const double fp32 = time_ms([&] { alone.run(); }, iters);
      alone.p.block_keys_bf16 = bk16.data_ptr();
      const std::string why = ssa::decode_supported(alone.p);
      if (!why.empty()) {
        std::printf("| %s | %d | %d | %d/%d | - | - | - | - | - | - | %s |\n", h.name, T, B, spec.block_size,
                    spec.top_k, why.c_str());
        continue;
      }
      const std::string e = alone.run();  // the bf16 keys' output and selection, checked
      const std::string check = (e.empty() ? "" : e + "; ") + reference_check(dc, bk16, spec, alone.o, alone.blocks);
      const double bf16 = time_ms([&] { alone.run(); }, iters);
      const double bytes32 = sparse_bytes(h, T, B, spec, 4), bytes16 = sparse_bytes(h, T, B, spec, 2);
      std::printf("| %s | %d | %d | %d/%d%s | %.4f | %.4f | %.4f | %.3f | %.3f | %.3f / %.3f | %s |\n", h.name, T, B,
                  spec.block_size, spec.top_k, spec.rule == SelectionRule::NsaChunked ? " nsa-chunked" : "", dense,
                  fp32, bf16, fp32 / dense, bf16 / dense, bytes32 / dense_bytes, bytes16 / dense_bytes,
                  check.c_str());
      std::fflush(stdout);
    }
  });
}

// The cache update of one layer per step: LibTorch's copies (and the mean when
// a block completes) against the append kernel, 1B layer shape.
void append_rows(const std::vector<int>& batches, int iters) {
  const int Hkv = 2, D = 64, bs = 16, capacity = 32768;
  AttentionBackend& cuda = *cuda_backend();
  std::printf("\n## Cache update per layer and step (bf16, 1B layer 2 kv heads d64, block 16; ms, median of %d)\n\n", iters);
  std::printf("| batch | step | LibTorch ops | append kernel | ratio |\n|---|---|---|---|---|\n");
  for (int B : batches) {
    auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
    Tensor kc = torch::zeros({B, Hkv, capacity, D}, o), vc = torch::zeros_like(kc);
    Tensor bk = torch::zeros({B, Hkv, capacity / bs, D}, o.dtype(torch::kFloat));
    Tensor kn = torch::randn({B, Hkv, 1, D}, o), vn = torch::randn_like(kn);
    for (int length : {1000, 1007}) {  // 1007 + 1 completes block 62
      const double ops = time_ms([&] { reference_backend().append_to_cache(kn, vn, kc, vc, bk, length, bs); }, iters);
      const double kernel = time_ms([&] { cuda.append_to_cache(kn, vn, kc, vc, bk, length, bs); }, iters);
      std::printf("| %d | %s | %.4f | %.4f | %.2f |\n", B, length == 1007 ? "completes a block" : "inside a block", ops,
                  kernel, kernel / ops);
    }
  }
}

void model_rows(int context, const std::vector<int>& batches, int steps) {
  ModelConfig c = released_layout_config("1b");
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  Transformer model(c, [&](const std::string& name, const std::vector<int64_t>& shape) {
    return name.find("norm") != std::string::npos ? torch::ones(shape, o) : torch::randn(shape, o) * 0.02;
  });
  model.eval();
  torch::NoGradGuard ng;
  struct Run { AttnMode mode; PooledKeys keys; const char* name; };
  std::printf("\n## A 1B model (released layout, random weights, bf16) decoding at %d tokens of context\n\n", context);
  std::printf("| batch | attention | ms per step | tokens/s | KV cache GB | peak GPU GB |\n|---|---|---|---|---|---|\n");
  for (int B : batches)
    for (Run run : {Run{AttnMode::Full, PooledKeys::Fp32, "full"}, Run{AttnMode::Sparse, PooledKeys::Fp32, "sparse"},
                    Run{AttnMode::Sparse, PooledKeys::Bf16, "sparse, bf16 pooled keys"}}) {
      const AttnMode mode = run.mode;
      const SparseSpec spec{16, 16, SelectionRule::TopK, run.keys};
      c10::cuda::CUDACachingAllocator::resetPeakStats(0);
      Decoder d(model, B, context + steps + 8, spec);  // + the warm-up steps
      for (int l = 0; l < c.num_layers; ++l) {  // a context of random keys and values, no prefill
        Tensor k = torch::randn({B, c.num_kv_heads, context, c.head_dim}, o), v = torch::randn_like(k);
        d.cache().append(l, k, v);
      }
      d.cache().commit();
      if (mode == AttnMode::Full) {  // dense attention on the cache's (strided) view vs a contiguous copy
        Tensor kview = d.cache().keys(0), vview = d.cache().values(0);
        Tensor q = torch::randn({B, c.num_heads, 1, c.head_dim}, o);
        const bool gqa = c.num_heads > c.num_kv_heads;
        const int64_t choice = at::_fused_sdp_choice(q, kview, vview, {}, 0.0, false, std::nullopt, gqa);
        const double strided =
            time_ms([&] { at::scaled_dot_product_attention(q, kview, vview, {}, 0.0, false, std::nullopt, gqa); }, 10);
        Tensor kc = kview.contiguous(), vc = vview.contiguous();
        const double packed =
            time_ms([&] { at::scaled_dot_product_attention(q, kc, vc, {}, 0.0, false, std::nullopt, gqa); }, 10);
        const double flash =
            time_ms([&] { at::_scaled_dot_product_flash_attention(q, kview, vview, 0.0, false); }, 10);
        std::printf("<!-- B %d, one layer: SDPA on the cache view: backend %lld, %.4f ms (same shape each call); on a "
                    "contiguous copy %.4f ms; FlashAttention on the view %.4f ms -->\n",
                    B, (long long)choice, strided, packed, flash);
      }
      Tensor tok = torch::randint(0, c.vocab_size, {B, 1}, torch::TensorOptions().dtype(torch::kLong));
      for (int i = 0; i < 3; ++i) d.feed(tok, mode);  // warm-up
      torch::cuda::synchronize();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < steps; ++i) d.feed(tok, mode);
      torch::cuda::synchronize();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
      std::printf("| %d | %s | %.3f | %.0f | %.2f | %.2f |\n", B, run.name, 1e3 * s / steps, B * steps / s,
                  d.cache().bytes() / 1e9,
                  stats.allocated_bytes[0].peak / 1e9);  // [0]: StatType::AGGREGATE
      std::fflush(stdout);
    }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> contexts = {8192, 32768, 131072}, batches = {1, 32}, model_batches = {1, 32};
  int iters = 50, model_context = 32768, steps = 32;
  bool model = true, bf16_pooling = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--contexts") contexts = int_list(next());
    else if (a == "--batches") batches = int_list(next());
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--model-context") model_context = std::stoi(next());
    else if (a == "--model-batches") model_batches = int_list(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--no-model") model = false;
    else if (a == "--bf16-pooling") bf16_pooling = true;
    else return std::fprintf(stderr, "unknown argument %s\n", a.c_str()), 2;
  }
  if (!torch::cuda::is_available() || !cuda_backend()) return std::fprintf(stderr, "needs CUDA and the kernels\n"), 1;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("# ssalab_decode_bench on %s\n", prop.name);
  attention_rows(contexts, batches, iters);
  if (bf16_pooling) bf16_pooling_rows(contexts, batches, iters);
  append_rows(batches, iters);
  if (model) model_rows(model_context, model_batches, steps);
  return 0;
}
