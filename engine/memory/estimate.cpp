#include "engine/memory/estimate.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#ifdef SSALAB_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

#include "engine/util/error.h"

namespace ssalab {

namespace {

constexpr uint64_t kFloat = 4;  // fp32 bytes: the CPU computes in fp32
// What a run holds besides its tensors (the training data, BLAS and thread
// buffers, allocator slack): measured as the peak resident size of a
// training run less its tensors, tiny preset, on the 2-core VM.
constexpr uint64_t kRuntimeBytes = uint64_t(200) << 20;
constexpr uint64_t kInferenceRuntimeBytes = uint64_t(64) << 20;  // no training data, no optimizer

uint64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  uint64_t kb = 0;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

uint64_t gpu_free_bytes(torch::Device device) {
#ifdef SSALAB_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDAGuard guard(device);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return free_b;
  }
#else
  (void)device;
#endif
  return 0;
}

}  // namespace

uint64_t gpu_peak_allocated_bytes() {
#ifdef SSALAB_WITH_CUDA
  if (torch::cuda::is_available())
    return uint64_t(c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak);  // [0]: AGGREGATE
#endif
  return 0;
}

namespace {

uint64_t u(int64_t x) { return uint64_t(std::max<int64_t>(0, x)); }

int64_t blocks_of(int64_t T, const SparseSpec& spec) {
  const int64_t bs = std::max(1, spec.block_size);
  return (T + bs - 1) / bs;
}

// Activations one layer's forward holds at once (inference: freed before the
// next layer): the normed input, q/k/v and the attention output, the MLP's
// gate, up and their product, the residual stream.
uint64_t layer_activations(const ModelConfig& m, int64_t rows) {
  const int64_t E = m.hidden_size, F = m.intermediate_size, D = m.head_dim;
  return u(rows) * u(4 * E + 3 * F + (2 * m.num_heads + 2 * m.num_kv_heads) * D) * kFloat;
}

// Block selection over every query (select_blocks): the scores against the
// block keys, their softmax and the group sum, (H, T, blocks) each.
uint64_t selection_scores(const ModelConfig& m, int64_t batch, int64_t T, const SparseSpec& spec) {
  return u(batch) * u(m.num_heads) * u(T) * u(blocks_of(T, spec)) * kFloat * 3;
}

}  // namespace

uint64_t MemoryEstimate::bytes() const {
  uint64_t b = 0;
  for (const auto& [what, n] : parts) b += n;
  return b;
}

std::string bytes_text(uint64_t b) {
  char buf[64];
  if (b >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(uint64_t(1) << 30));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(uint64_t(1) << 20));
  return buf;
}

std::string MemoryEstimate::describe() const {
  std::vector<std::pair<std::string, uint64_t>> sorted = parts;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string s = bytes_text(bytes()) + " (";
  size_t shown = 0;
  for (const auto& [what, n] : sorted) {
    if (n == 0) continue;
    s += (shown++ ? ", " : "") + what + " " + bytes_text(n);
  }
  return s + ")";
}

uint64_t memory_limit_from_env() {
  const char* v = std::getenv("SSALAB_MEMORY_LIMIT");
  if (!v || !*v) return 0;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  uint64_t scale = 1;
  if (end && *end) {
    switch (std::toupper(static_cast<unsigned char>(*end))) {
      case 'K': scale = uint64_t(1) << 10; break;
      case 'M': scale = uint64_t(1) << 20; break;
      case 'G': scale = uint64_t(1) << 30; break;
      case 'T': scale = uint64_t(1) << 40; break;
      default: scale = 0;
    }
    ++end;
    if (*end == 'B' || *end == 'b' || *end == 'i') ++end;  // "8G", "8GB", "8GiB"
    if (*end == 'B') ++end;
  }
  if (end == v || (end && *end) || scale == 0 || !(x > 0) || x * double(scale) > 1e18)
    throw Error(std::string("SSALAB_MEMORY_LIMIT='") + v + "' is not a size (bytes, or a number with K, M, G or T)");
  return uint64_t(x * double(scale));
}

uint64_t available_memory(torch::Device device) {
  const uint64_t found = device.is_cpu() ? mem_available_bytes() : gpu_free_bytes(device);
  const uint64_t limit = memory_limit_from_env();
  if (limit == 0) return found;
  return found == 0 ? limit : std::min(found, limit);
}

MemoryEstimate training_step_memory(const ModelConfig& m, const TrainConfig& t, torch::Device device) {
  const bool reference = device.is_cpu();
  MemoryEstimate e;
  const int64_t B = t.batch_size, T = t.seq_len, L = m.num_layers;
  int64_t params = int64_t(m.vocab_size) * m.hidden_size * (m.tied_embeddings ? 1 : 2);
  params += L * (int64_t(m.hidden_size) * (m.num_heads + 2 * m.num_kv_heads) * m.head_dim +
                 int64_t(m.num_heads) * m.head_dim * m.hidden_size + 3 * int64_t(m.hidden_size) * m.intermediate_size);
  // gradients and AdamW's two moments; the weights themselves belong to the model
  e.add("gradients and optimizer state", u(params) * kFloat * 3);
  // every layer's activations stay for the backward pass
  e.add("saved activations", u(L) * layer_activations(m, B * T));
  // the reference attention keeps each stream's probabilities (B, H, T, T)
  // for the backward pass, and its masks; SSA runs a full and a sparse
  // stream. The 1.5 is measured: peak resident size against this term,
  // tiny preset, T 512 -> 1024 on the 2-core VM (bench/results/cpu-2026-12-03-memory.txt)
  const int64_t streams = t.method == Method::Ssa ? 2 : 1;
  if (reference)
    e.add("attention probabilities", u(L) * u(streams) * u(B) * u(m.num_heads) * u(T) * u(T) * kFloat * 3 / 2);
  if (reference && t.method != Method::Full) {
    SparseSpec spec;
    spec.block_size = m.block_size;
    spec.top_k = m.block_counts;
    e.add("block selection", selection_scores(m, B, T, spec));
  }
  // logits, their log-softmax and its gradient
  e.add("logits", u(B) * u(T) * u(m.vocab_size) * kFloat * 3);
  e.add("runtime working memory", kRuntimeBytes);
  return e;
}

// A forward pass without its logits.
static MemoryEstimate forward_memory(const ModelConfig& m, int64_t batch, int64_t T, AttnMode mode,
                                     const SparseSpec& spec, torch::Device device) {
  const bool reference = device.is_cpu();
  MemoryEstimate e;
  e.add("activations", layer_activations(m, batch * T) * 2);  // a layer's and the residual stream around it
  // scores are computed in row chunks of kScoreChunkElements: scores, mask, probabilities
  e.add("attention scores", u(std::min<int64_t>(kScoreChunkElements, batch * m.num_heads * T * T)) * kFloat * 3);
  if (reference && mode == AttnMode::Sparse) e.add("block selection", selection_scores(m, batch, T, spec));
  e.add("runtime working memory", kInferenceRuntimeBytes);
  return e;
}

MemoryEstimate inference_memory(const ModelConfig& m, int64_t batch, int64_t T, AttnMode mode, const SparseSpec& spec,
                                torch::Device device) {
  MemoryEstimate e = forward_memory(m, batch, T, mode, spec, device);
  e.add("logits", u(batch) * u(T) * u(m.vocab_size) * kFloat);
  return e;
}

MemoryEstimate analysis_memory(const ModelConfig& m, int64_t T, const SparseSpec& spec, AttnMode inference,
                               int token_map_limit, int max_cells, bool token_losses, torch::Device device) {
  MemoryEstimate e = forward_memory(m, 1, T, inference, spec, device);
  // token losses: a chunk of rows at a time, its logits, in fp32 and log-softmaxed
  const int64_t chunk_rows = std::min<int64_t>(T, std::max<int64_t>(1, kLogitChunkElements / m.vocab_size));
  if (token_losses) e.add("logits of a row chunk", u(chunk_rows) * u(m.vocab_size) * kFloat * 3);
  const int64_t L = m.num_layers, H = m.num_heads, nb = blocks_of(T, spec);
  e.add("captured q and k", u(L) * u(T) * u(m.num_heads + m.num_kv_heads) * u(m.head_dim) * kFloat);
  // per layer: the selection (analyze_layer scores every query at once) as a
  // transient, then what the analysis keeps
  if (device.is_cpu())  // the kernels select without the (T, blocks) scores
    e.add("selection of one layer", selection_scores(m, 1, T, spec) + u(m.num_kv_heads) * u(T) * u(nb) * kFloat);
  const int64_t per_cell = std::max<int64_t>(1, (nb + max_cells - 1) / std::max(1, max_cells));
  const int64_t n_cells = (T + per_cell * spec.block_size - 1) / (per_cell * spec.block_size);
  e.add("block-pooled maps", u(L) * u(H) * u(n_cells) * u(n_cells) * kFloat * 3);
  // rows: sparsity, entropy, token-0 mass, and the LSE a slider change reuses
  e.add("row statistics and selections",
        u(L) * (u(H) * u(T) * kFloat * 4 + u(m.num_kv_heads) * u(T) * u(std::max(1, spec.top_k)) * 4));
  if (T <= token_map_limit) e.add("token-level maps", u(L) * u(H) * u(T) * u(T) * kFloat * 2);
  return e;
}

void require_memory(const MemoryEstimate& need, const std::string& what, torch::Device device) {
  const uint64_t available = available_memory(device);
  if (available == 0 || need.bytes() <= available) return;
  const bool limited = memory_limit_from_env() != 0;
  throw Error(what + " needs about " + need.describe() + " on " + device.str() + ", but only " +
              bytes_text(available) + " is available" + (limited ? " (SSALAB_MEMORY_LIMIT)" : "") +
              "; nothing was started");
}

}  // namespace ssalab
