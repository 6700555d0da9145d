#include "engine/metrics/analysis.h"

#include <chrono>
#include <cmath>
#include <sstream>

#include "engine/metrics/analysis_kernels.h"
#include "engine/memory/estimate.h"
#include "engine/model/transformer.h"
#include "engine/util/autocast.h"
#include "engine/util/error.h"

namespace ssalab {

using torch::Tensor;

// Copied once, from wherever `t` is straight into the vector's memory.
static std::vector<float> to_vector(const Tensor& t) {
  Tensor src = t.detach().to(torch::kFloat).contiguous();
  std::vector<float> v(size_t(src.numel()));
  torch::from_blob(v.data(), src.sizes(), torch::kFloat).copy_(src);
  return v;
}

// Slice `index` of `kept` (and of its head, when head >= 0), to the host.
static std::vector<float> kept_slice(const Tensor& kept, int index, int head) {
  if (!kept.defined()) return {};
  Tensor m = kept[index];
  if (head >= 0) m = m[head];
  return to_vector(to_host_off_stream(m.contiguous()));
}

std::vector<float> LayerAnalysis::map(CellMap which, int head) const { return kept_slice(cell_maps, int(which), head); }

std::vector<float> LayerAnalysis::row(RowStat which, int head) const { return kept_slice(row_stats, int(which), head); }

double Analysis::mean_sparsity() const {
  double s = 0;
  int n = 0;
  for (auto& l : layers)
    for (auto& h : l.heads) s += h.sparsity, ++n;
  return n ? s / n : 0;
}

double Analysis::mean_entropy() const {
  double s = 0;
  int n = 0;
  for (auto& l : layers)
    for (auto& h : l.heads) s += h.entropy, ++n;
  return n ? s / n : 0;
}

// Sums the last dimension (length L) into groups of `g` (zero-padded).
static Tensor pool_last(const Tensor& x, int64_t g) {
  const int64_t L = x.size(-1), n = (L + g - 1) / g;
  Tensor padded = n * g == L ? x : torch::constant_pad_nd(x, {0, n * g - L});
  auto sizes = padded.sizes().vec();
  sizes.back() = n;
  sizes.push_back(g);
  return padded.view(sizes).sum(-1);
}

// Queries in each of the n_cells cells of `cell` tokens (the last may be short), as floats.
static Tensor rows_per_cell(int64_t T, int64_t cell, int64_t n_cells, torch::Device dev) {
  return torch::clamp_max(double(T) - torch::arange(n_cells, torch::TensorOptions().device(dev)) * double(cell),
                          double(cell));
}

// What analyze_layer() reports, as tensors: rows (H, T), cell maps (H, nc, nc),
// token maps (H, T, T) when asked for, the selection (1, Hkv, T, K).
struct LayerTensors {
  Tensor blocks, sparsity, entropy, sink_token, sink_block, kl, lse;
  Tensor map_full, map_sparse, map_dropped, token_full, token_sparse;
};

// On the GPU kernels (analysis_kernels.h); false when they cannot run it.
static bool layer_with_kernels(const Tensor& q_in, const Tensor& k_in, const AnalysisRequest& req, const Analysis& a,
                               LayerTensors& r) {
  KernelLayerRows kr;
  if (!analyze_layer_kernels(q_in, k_in, req.spec, a.cell_size, kr)) return false;
  const int64_t per_cell = a.cell_size / req.spec.block_size;
  auto key_cells = [&](const Tensor& m) { return pool_last(m, per_cell).narrow(-1, 0, a.n_cells); };
  r.blocks = kr.blocks;
  r.sparsity = kr.sparsity, r.entropy = kr.entropy, r.sink_token = kr.sink_token, r.sink_block = kr.sink_block;
  r.lse = kr.lse;
  r.kl = -torch::log(r.sparsity.clamp_min(1e-30));  // KL(sparse || full) of a renormalised restriction
  r.map_full = key_cells(kr.map_full), r.map_sparse = key_cells(kr.map_sparse);
  r.map_dropped = key_cells(kr.map_dropped);
  return true;
}

// In LibTorch ops on any device, in row chunks.
static LayerTensors layer_with_torch(const Tensor& q_in, const Tensor& k_in, const AnalysisRequest& req,
                                     const Analysis& a) {
  const int64_t H = q_in.size(1), T = q_in.size(2), D = q_in.size(3), Hkv = k_in.size(1), G = H / Hkv;
  const int64_t bs = req.spec.block_size, nb = (T + bs - 1) / bs;
  const int64_t cell = a.cell_size, nc = a.n_cells, per_cell = cell / bs;
  const bool tokens = T <= req.token_map_limit;
  auto dev = q_in.device();
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(dev);
  LayerTensors r;
  Tensor q = q_in.to(torch::kFloat), k = k_in.to(torch::kFloat);
  Selection sel = select_blocks(q, k, req.spec);
  r.blocks = sel.blocks;
  Tensor bm = selection_block_mask(sel, T);  // (1, Hkv, T, nb)
  Tensor qg = q.view({Hkv, G, T, D}), kt = k[0].unsqueeze(1).transpose(-1, -2);  // (Hkv, 1, D, T)
  const double scale = 1.0 / std::sqrt(double(D));
  // Row chunks of about kScoreChunkElements scores that hold whole map cells,
  // so cell means need no carry between chunks.
  int64_t rows = std::max<int64_t>(1, kScoreChunkElements / std::max<int64_t>(1, H * T) / cell) * cell;
  rows = std::min(rows, ((T + cell - 1) / cell) * cell);

  std::vector<Tensor> sparsity_rows, entropy_rows, sink_rows, sinkb_rows, kl_rows, lse_rows, mf, ms, md, tf, ts;
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    if (req.cancel && req.cancel->load()) throw Error("analysis cancelled");
    const int64_t n = std::min(rows, T - r0);
    Tensor causal = torch::arange(T, lopt).view({1, T}) <= torch::arange(r0, r0 + n, lopt).view({n, 1});
    Tensor s = torch::matmul(qg.narrow(2, r0, n), kt) * scale;  // (Hkv, G, n, T)
    Tensor masked = s.masked_fill(causal.logical_not(), -INFINITY);
    Tensor p = torch::softmax(masked, -1);
    lse_rows.push_back(torch::logsumexp(masked, -1));
    Tensor sel_rows = bm[0].narrow(1, r0, n).unsqueeze(1).to(torch::kFloat);  // (Hkv, 1, n, nb)
    Tensor block_mass = pool_last(p, bs);                                        // (Hkv, G, n, nb)
    Tensor kept = block_mass * sel_rows;
    Tensor sparsity = kept.sum(-1);                                              // (Hkv, G, n)
    Tensor logp = torch::log(p.clamp_min(1e-30));
    entropy_rows.push_back(-(p * logp).sum(-1));
    sparsity_rows.push_back(sparsity);
    // copies, not views: a view of column 0 would keep the chunk's whole
    // (n, T) probabilities alive until the end, T x T per head in all
    sink_rows.push_back(p.select(-1, 0).clone());
    sinkb_rows.push_back(block_mass.select(-1, 0).clone());
    Tensor tok_keep = sel_rows.repeat_interleave(bs, -1).narrow(-1, 0, T) * causal.to(torch::kFloat);
    Tensor ps = p * tok_keep / sparsity.unsqueeze(-1);  // renormalised sparse row
    kl_rows.push_back((ps * (torch::log(ps.clamp_min(1e-30)) - logp)).sum(-1));
    // cell maps: mean over the chunk's query cells of mass per key cell
    auto cells = [&](const Tensor& m) {  // (Hkv, G, n, nb) -> (H, n/cell, nc)
      Tensor keyc = pool_last(m, per_cell).narrow(-1, 0, nc);  // (Hkv, G, n, nc)
      const int64_t qc = (n + cell - 1) / cell;
      Tensor padded = torch::constant_pad_nd(keyc, {0, 0, 0, qc * cell - n});
      Tensor sum = padded.view({Hkv, G, qc, cell, nc}).sum(3);
      // queries per cell (the last cell of the input may be short)
      return (sum / rows_per_cell(n, cell, qc, dev).view({1, 1, qc, 1})).reshape({H, qc, nc});
    };
    mf.push_back(cells(block_mass));
    ms.push_back(cells(kept / sparsity.unsqueeze(-1)));
    md.push_back(cells(block_mass - kept));
    if (tokens) {
      tf.push_back(p.reshape({H, n, T}));
      ts.push_back(ps.reshape({H, n, T}));
    }
  }
  auto rowcat = [&](std::vector<Tensor>& v) { return torch::cat(v, -1).reshape({H, T}); };
  r.sparsity = rowcat(sparsity_rows), r.entropy = rowcat(entropy_rows), r.sink_token = rowcat(sink_rows);
  r.sink_block = rowcat(sinkb_rows), r.kl = rowcat(kl_rows), r.lse = rowcat(lse_rows);
  r.map_full = torch::cat(mf, 1), r.map_sparse = torch::cat(ms, 1), r.map_dropped = torch::cat(md, 1);
  if (tokens) r.token_full = torch::cat(tf, 1), r.token_sparse = torch::cat(ts, 1);
  return r;
}

// q or k in fp32 as the full rows' scores were taken: rounded to the
// kernels' input dtype first when they measured them, so that a reuse of
// their LSE sees the same values.
static Tensor as_scored(const Tensor& x, bool by_kernels) {
  Tensor y = x.detach();
  if (by_kernels) y = y.to(kernel_input_dtype(y));
  return y.to(torch::kFloat);
}

// True when `prev`, an analysis of the same q and k, holds what
// layer_from_kept() needs for this request: the full rows' LSE and a full map
// whose cells the new ones are made of (the same size or a multiple: a larger
// block size), and no token maps are asked for.
static bool can_reuse_rows(const LayerAnalysis* prev, const AnalysisRequest& req, const Analysis& a,
                           const Analysis* prev_analysis) {
  return prev && prev_analysis && prev->row_lse.defined() && prev->cell_maps.defined() && prev->row_stats.defined() &&
         a.cell_size % prev_analysis->cell_size == 0 && a.T > req.token_map_limit;
}

// A cell map (H, nc, nc) of cells `cell` tokens wide as one of cells `factor`
// times wider: a coarse cell's row is the mean over its queries (the fine
// rows weighted by their query counts), its column the sum over its keys.
static Tensor coarser_map(const Tensor& map, int64_t T, int64_t cell, int64_t factor, int64_t n_cells) {
  if (factor == 1) return map;
  const int64_t H = map.size(0), nc = map.size(1), padded = n_cells * factor;
  const Tensor weighted = map * rows_per_cell(T, cell, nc, map.device()).view({1, nc, 1});
  const Tensor rows = torch::constant_pad_nd(weighted, {0, 0, 0, padded - nc}).view({H, n_cells, factor, nc}).sum(2);
  const Tensor means = rows / rows_per_cell(T, cell * factor, n_cells, map.device()).view({1, n_cells, 1});
  return pool_last(means, factor).narrow(-1, 0, n_cells);
}

// The full-attention mass of each selected block and of block 0 of every row,
// (H, T, K + 1): slots 0 .. K-1 (0 for empty ones), then block 0; from the
// rows' LSE and the scores of those blocks' keys alone, in LibTorch ops on
// any device (kernels/block_mass.cuh does the same on a GPU).
static Tensor selected_block_mass(const Tensor& q, const Tensor& k, const Tensor& blocks_in, const Tensor& row_lse,
                                  int64_t bs, const std::atomic<bool>* cancel) {
  const int64_t H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), G = H / Hkv, K = blocks_in.size(3);
  const auto dev = q.device();
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(dev);
  const Tensor blocks = blocks_in[0].to(torch::kLong);  // (Hkv, T, K)
  const Tensor kflat = k[0].reshape({Hkv * T, D});      // gathered from
  const Tensor qg = q[0].view({Hkv, G, T, D});
  const Tensor lse = row_lse.to(dev, torch::kFloat).view({Hkv, G, T});
  const Tensor first_keys = k[0].narrow(1, 0, std::min(bs, T)).unsqueeze(1).transpose(-1, -2);  // (Hkv, 1, D, bs')
  const Tensor in_block = torch::arange(bs, lopt);
  const Tensor group_base = (torch::arange(Hkv, lopt) * T).view({Hkv, 1, 1, 1});
  const double scale = 1.0 / std::sqrt(double(D));
  // rows per chunk: the gathered keys (Hkv, n, K * bs, D) are the largest
  // temporary; a GPU takes 64x the CPU's cache-sized chunks (fewer launches)
  const int64_t budget = kScoreChunkElements * (dev.is_cuda() ? 64 : 1);
  const int64_t rows = std::max<int64_t>(1, budget / (Hkv * K * bs * D));
  std::vector<Tensor> parts;
  for (int64_t r0 = 0; r0 < T; r0 += rows) {
    if (cancel && cancel->load()) throw Error("analysis cancelled");
    const int64_t n = std::min(rows, T - r0);
    const Tensor b = blocks.narrow(1, r0, n).unsqueeze(-1);  // (Hkv, n, K, 1)
    const Tensor tok = b * bs + in_block;                     // (Hkv, n, K, bs)
    const Tensor pos = torch::arange(r0, r0 + n, lopt).view({1, n, 1, 1});
    const Tensor visible = ((b >= 0) & (tok <= pos)).view({Hkv, n, 1, K * bs});
    const Tensor keys = kflat.index_select(0, (tok.clamp(0, T - 1) + group_base).flatten()).view({Hkv, n, K * bs, D});
    const Tensor qc = qg.narrow(2, r0, n).permute({0, 2, 1, 3});              // (Hkv, n, G, D)
    const Tensor lc = lse.narrow(2, r0, n).permute({0, 2, 1}).unsqueeze(-1);  // (Hkv, n, G, 1)
    Tensor p = torch::exp(torch::matmul(qc, keys.transpose(-1, -2)) * scale - lc);  // (Hkv, n, G, K * bs)
    p.masked_fill_(visible.logical_not(), 0);
    const Tensor slots = p.view({Hkv, n, G, K, bs}).sum(-1);                          // (Hkv, n, G, K)
    const Tensor first = torch::exp(torch::matmul(qc, first_keys) * scale - lc);      // (Hkv, n, G, bs')
    const Tensor seen = torch::arange(first.size(-1), lopt).view({1, 1, 1, -1}) <= pos;
    const Tensor block0 = (first * seen).sum(-1, /*keepdim=*/true);                  // (Hkv, n, G, 1)
    parts.push_back(torch::cat({slots, block0}, -1).permute({0, 2, 1, 3}));          // (Hkv, G, n, K + 1)
  }
  return torch::cat(parts, 2).reshape({H, T, K + 1});
}

// Another selection measured against full rows analysed before (reanalyze()).
// The full row of each query, so its LSE, entropy, token-0 mass and the full
// map, does not depend on the selection; what does is the mass inside the
// selected blocks, exp(score - lse) summed over their k * block_size keys,
// and the mass on block 0 (the first block_size keys). Both come from those
// keys alone, so a slider change costs the selection plus O(T * k * block_size)
// scores instead of the O(T^2) of a fresh analysis. The kept and sparse maps
// are the selected blocks' masses pooled into cells; dropped = full - kept.
static LayerTensors layer_from_kept(const Tensor& q_in, const Tensor& k_in, const AnalysisRequest& req,
                                    const Analysis& a, const LayerAnalysis& prev, const Analysis& prev_analysis) {
  const int64_t H = q_in.size(1), T = q_in.size(2), Hkv = k_in.size(1), G = H / Hkv;
  const int64_t bs = req.spec.block_size, K = req.spec.top_k, nb = (T + bs - 1) / bs;
  const int64_t cell = a.cell_size, nc = a.n_cells, per_cell = cell / bs;
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(q_in.device());
  LayerTensors r;
  Tensor mass;  // (H, T, K + 1)
  if (prev.by_kernels) {
    KernelSelectionMass km;
    if (selection_mass_kernels(q_in, k_in, req.spec, prev.row_lse, km)) r.blocks = km.blocks, mass = km.mass;
  }
  if (!mass.defined()) {
    const Tensor q = as_scored(q_in, prev.by_kernels), k = as_scored(k_in, prev.by_kernels);
    r.blocks = select_blocks(q, k, req.spec).blocks;
    mass = selected_block_mass(q, k, r.blocks, prev.row_lse, bs, req.cancel);
  }
  const Tensor slot_mass = mass.narrow(-1, 0, K);  // full-attention mass per selected slot
  r.sparsity = slot_mass.sum(-1);
  r.sink_block = mass.select(-1, K);
  r.entropy = prev.row_stats[int(RowStat::Entropy)];
  r.sink_token = prev.row_stats[int(RowStat::SinkToken)];
  r.lse = prev.row_lse;
  r.kl = -torch::log(r.sparsity.clamp_min(1e-30));
  // the slots' masses into (query cell, key block), then key blocks into cells;
  // empty slots carry mass 0, so their clamped block index adds nothing
  const Tensor blocks = r.blocks[0].to(torch::kLong);  // (Hkv, T, K)
  const Tensor slot_cell =
      torch::div(torch::arange(T, lopt), cell, "floor").view({1, T, 1}) * nb + blocks.clamp_min(0);  // (Hkv, T, K)
  const Tensor index = slot_cell.unsqueeze(1).expand({Hkv, G, T, K}).reshape({H, T * K});
  const Tensor rows_in_cell = rows_per_cell(T, cell, nc, q_in.device());
  auto pooled = [&](const Tensor& m) {  // (H, T, K) slot masses -> (H, nc, nc) cell means
    Tensor sum = torch::zeros({H, nc * nb}, m.options()).scatter_add_(1, index, m.reshape({H, T * K}));
    Tensor per_row = sum.view({H, nc, nb}) / rows_in_cell.view({1, nc, 1});
    return pool_last(per_row, per_cell).narrow(-1, 0, nc);
  };
  const Tensor full = coarser_map(prev.cell_maps[int(CellMap::Full)], T, prev_analysis.cell_size,
                                  cell / prev_analysis.cell_size, nc);
  r.map_full = full;
  r.map_dropped = (full - pooled(slot_mass)).clamp_min(0);
  r.map_sparse = pooled(slot_mass / r.sparsity.clamp_min(1e-30).unsqueeze(-1));
  return r;
}

// `prev`: this layer in an analysis of the same q and k under another
// selection (reanalyze()), or null.
static void analyze_layer(const Tensor& q_in, const Tensor& k_in, const AnalysisRequest& req, const Analysis& a,
                          LayerAnalysis& out, const LayerAnalysis* prev, const Analysis* prev_analysis) {
  const int64_t H = q_in.size(1), T = q_in.size(2), bs = req.spec.block_size, K = req.spec.top_k;
  auto lopt = torch::TensorOptions().dtype(torch::kLong).device(q_in.device());
  if (req.cancel && req.cancel->load()) throw Error("analysis cancelled");
  LayerTensors r;
  if (can_reuse_rows(prev, req, a, prev_analysis)) {
    r = layer_from_kept(q_in, k_in, req, a, *prev, *prev_analysis);
    out.by_kernels = prev->by_kernels;
    out.from_kept_rows = true;
  } else {
    out.by_kernels = T > req.token_map_limit && layer_with_kernels(q_in, k_in, req, a, r);
    if (!out.by_kernels) r = layer_with_torch(q_in, k_in, req, a);
  }
  Tensor sp = r.sparsity, en = r.entropy, sk = r.sink_token, sb = r.sink_block, kl = r.kl;
  if (r.token_full.defined()) {
    out.token_full = to_vector(r.token_full);
    out.token_sparse = to_vector(r.token_sparse);
  }
  out.selected = [&] {
    // narrowed to int32 where it is, then copied: half the bytes over PCIe
    Tensor s = r.blocks[0].to(torch::kInt).to(torch::kCPU).contiguous();
    return std::vector<int32_t>(s.data_ptr<int32_t>(), s.data_ptr<int32_t>() + s.numel());
  }();
  out.row_stats = torch::stack({sp, en, sk}).to(torch::kFloat).contiguous();
  out.cell_maps = torch::stack({r.map_full, r.map_sparse, r.map_dropped}).to(torch::kFloat).contiguous();
  // rows whose selection is a real choice: more than K blocks visible
  Tensor t = torch::arange(T, lopt);
  Tensor rows_mask = (torch::div(t, bs, "floor") + 1) > K;
  if (rows_mask.sum().item<int64_t>() == 0) rows_mask = torch::ones({T}, lopt.dtype(torch::kBool));
  auto mean_rows = [&](const Tensor& x) {  // (H, T) -> (H,) doubles
    Tensor m = x.index({torch::indexing::Slice(), rows_mask}).mean(-1).to(torch::kCPU, torch::kDouble).contiguous();
    return std::vector<double>(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
  };
  auto vs = mean_rows(sp), ve = mean_rows(en), vk = mean_rows(sk), vb = mean_rows(sb), vkl = mean_rows(kl);
  out.heads.resize(H);
  for (int64_t h = 0; h < H; ++h)
    out.heads[h] = HeadStats{vs[h], 1.0 - vs[h], ve[h], vk[h], vb[h], vkl[h]};
  out.row_lse = r.lse.to(torch::kFloat).contiguous();
  out.q = q_in.detach();
  out.k = k_in.detach();
}

Analysis analyze_qk(const std::vector<Tensor>& q, const std::vector<Tensor>& k, const AnalysisRequest& req,
                    const Analysis* previous) {
  if (q.empty() || q.size() != k.size()) throw Error("analysis: need one q and one k per layer");
  const int64_t T = q[0].size(2);
  std::string problem = check_sparse_spec(req.spec, T);
  if (!problem.empty()) throw Error("analysis: " + problem);
  Analysis a;
  a.T = T;
  a.num_layers = int(q.size());
  a.num_heads = int(q[0].size(1));
  a.num_kv_heads = int(k[0].size(1));
  a.spec = req.spec;
  a.inference = req.inference;
  a.tokens = req.tokens;
  const int64_t bs = req.spec.block_size, nb = (T + bs - 1) / bs;
  const int64_t per_cell = std::max<int64_t>(1, (nb + req.max_cells - 1) / std::max(1, req.max_cells));
  a.cell_size = int(per_cell * bs);
  a.n_cells = int((T + a.cell_size - 1) / a.cell_size);
  torch::NoGradGuard no_grad;
  a.layers.resize(q.size());
  const bool reuse = previous && previous->layers.size() == q.size();
  for (size_t l = 0; l < q.size(); ++l)
    analyze_layer(q[l], k[l], req, a, a.layers[l], reuse ? &previous->layers[l] : nullptr, reuse ? previous : nullptr);
  return a;
}

// The request's tokens as the model's (1, T) int64 input.
static Tensor token_tensor(const std::vector<int>& ids, torch::Device device) {
  const std::vector<int64_t> wide(ids.begin(), ids.end());
  return torch::tensor(wide, torch::kLong).view({1, int64_t(wide.size())}).to(device);
}

std::vector<float> token_nll(Transformer& model, const Tensor& hidden, const Tensor& tokens, int64_t rows) {
  const int64_t T = tokens.size(1);
  if (rows <= 0) rows = std::max<int64_t>(1, kLogitChunkElements / model.config().vocab_size);
  std::vector<float> nll;
  nll.reserve(size_t(T - 1));
  for (int64_t r0 = 0; r0 < T - 1; r0 += rows) {
    const int64_t n = std::min(rows, T - 1 - r0);
    Tensor lp = torch::log_softmax(model.logits(hidden[0].narrow(0, r0, n)).to(torch::kFloat), -1);
    Tensor part = -lp.gather(1, tokens[0].narrow(0, r0 + 1, n).view({n, 1})).view({n});
    part = part.to(torch::kCPU).contiguous();
    nll.insert(nll.end(), part.data_ptr<float>(), part.data_ptr<float>() + n);
  }
  return nll;
}

static std::vector<float> stream_nll(Transformer& model, const Tensor& tokens, AttnMode mode, const SparseSpec& spec) {
  Bf16AutocastScope autocast(wants_bf16_autocast(model.parameters().front()));
  ForwardOptions fo;
  fo.mode = mode;
  fo.spec = spec;
  fo.hidden_only = true;
  return token_nll(model, model.forward(tokens, fo).hidden, tokens);
}

// The token losses of the stream that does not feed the analysed layers.
static std::vector<float> other_stream_nll(Transformer& model, const Tensor& tokens, const AnalysisRequest& req) {
  return stream_nll(model, tokens, req.inference == AttnMode::Full ? AttnMode::Sparse : AttnMode::Full, req.spec);
}

std::vector<float> stream_token_nll(Transformer& model, const std::vector<int>& tokens, AttnMode mode,
                                    const SparseSpec& spec) {
  if (tokens.size() < 2) return {};
  torch::NoGradGuard no_grad;
  model.eval();
  return stream_nll(model, token_tensor(tokens, model.parameters().front().device()), mode, spec);
}

Analysis analyze(Transformer& model, const AnalysisRequest& req) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t T = int64_t(req.tokens.size());
  if (T == 0) throw Error("analysis: no tokens to analyse");
  std::string problem = check_sparse_spec(req.spec, T);
  if (!problem.empty()) throw Error("analysis: " + problem);
  const ModelConfig& c = model.config();
  for (int tok : req.tokens)
    if (tok < 0 || tok >= c.vocab_size) throw Error("analysis: token id " + std::to_string(tok) + " outside the vocabulary");
  auto dev = model.parameters().front().device();
  require_memory(analysis_memory(c, T, req.spec, req.inference, req.token_map_limit, req.max_cells, req.token_losses, dev),
                 "analysing " + std::to_string(T) + " tokens", dev);
  torch::NoGradGuard no_grad;
  model.eval();
  ForwardOptions fo;
  fo.mode = req.inference;
  fo.spec = req.spec;
  fo.capture = true;
  fo.hidden_only = true;
  torch::Tensor tokens = token_tensor(req.tokens, dev);
  const bool autocast_forward = wants_bf16_autocast(model.parameters().front());
  ForwardOutput out;
  {
    Bf16AutocastScope autocast(autocast_forward);
    out = model.forward(tokens, fo);
  }
  Analysis a = analyze_qk(out.q, out.k, req);
  a.bf16_autocast = autocast_forward;
  if (req.token_losses && T >= 2) {
    // -log p(token t+1 | prefix) under both streams: which tokens sparse attention hurts
    std::vector<float> here, there = other_stream_nll(model, tokens, req);
    {
      Bf16AutocastScope autocast(autocast_forward);
      here = token_nll(model, out.hidden, tokens);
    }
    a.nll_full = req.inference == AttnMode::Full ? here : there;
    a.nll_sparse = req.inference == AttnMode::Full ? there : here;
  }
  a.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return a;
}

Analysis reanalyze(Transformer& model, const Analysis& previous, const AnalysisRequest& req) {
  const auto t0 = std::chrono::steady_clock::now();
  if (previous.inference != AttnMode::Full || req.inference != AttnMode::Full)
    throw Error("reanalyze: only a full-inference analysis keeps q and k that do not depend on the selection");
  if (previous.tokens != req.tokens) throw Error("reanalyze: the tokens differ from the analysed ones");
  if (previous.layers.empty() || !previous.layers[0].q.defined()) throw Error("reanalyze: no q and k were kept");
  std::vector<Tensor> q, k;
  for (const LayerAnalysis& L : previous.layers) q.push_back(L.q), k.push_back(L.k);
  Analysis a = analyze_qk(q, k, req, &previous);
  a.qk_reused = true;
  a.bf16_autocast = previous.bf16_autocast;
  if (req.token_losses && a.T >= 2) {
    torch::NoGradGuard no_grad;
    Tensor tokens = token_tensor(req.tokens, model.parameters().front().device());
    a.nll_full = previous.nll_full;  // the full stream does not see the selection
    a.nll_sparse = other_stream_nll(model, tokens, req);
  }
  a.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return a;
}

QueryDetail query_detail(const Analysis& a, int layer, int head, int64_t query) {
  if (layer < 0 || layer >= int(a.layers.size())) throw Error("query_detail: no layer " + std::to_string(layer));
  if (head < 0 || head >= a.num_heads) throw Error("query_detail: no head " + std::to_string(head));
  if (query < 0 || query >= a.T) throw Error("query_detail: query " + std::to_string(query) + " out of range");
  torch::NoGradGuard no_grad;
  const LayerAnalysis& L = a.layers[layer];
  const int64_t G = a.num_heads / a.num_kv_heads, g = head / G, bs = a.spec.block_size, D = L.q.size(3);
  const int64_t own = query / bs, K = a.spec.top_k;
  QueryDetail d;
  d.query = query;
  d.head = head;
  d.kv_head = int(g);
  d.own_block = own;
  const double scale = 1.0 / std::sqrt(double(D));
  // selection probabilities over blocks complete at `query`, summed over the group
  const int64_t visible = (query + 1) / bs;
  Tensor kg = L.k[0][g].to(torch::kFloat);  // (T, D), on the device the forward ran on
  if (visible > 0) {
    Tensor kbar = kg.narrow(0, 0, visible * bs).view({visible, bs, D}).mean(1);       // (visible, D)
    Tensor qrows = L.q[0].narrow(0, g * G, G).select(1, query).to(torch::kFloat);     // (G, D)
    Tensor score = torch::softmax(torch::matmul(qrows, kbar.t()) * scale, -1).sum(0);  // (visible,)
    d.block_scores = to_vector(score);
  }
  Tensor p =
      torch::softmax(torch::matmul(kg.narrow(0, 0, query + 1), L.q[0][head][query].to(torch::kFloat)) * scale, 0);
  d.block_mass = to_vector(pool_last(p, bs));
  d.entropy = -(p * torch::log(p.clamp_min(1e-30))).sum().item<double>();
  const int32_t* sel = L.selected.data() + (g * a.T + query) * K;
  for (int64_t i = 0; i < K; ++i)
    if (sel[i] >= 0) {
      d.selected.push_back(sel[i]);
      d.sparsity += d.block_mass[sel[i]];
    }
  return d;
}

SelectionLocality layer_selection_locality(const Analysis& a, int layer, int tile) {
  if (layer < 0 || layer >= int(a.layers.size())) throw Error("selection locality: no layer " + std::to_string(layer));
  return selection_locality(a.layers[layer].selected, a.num_kv_heads, a.T, a.spec.top_k, tile);
}

nlohmann::json to_json(const Analysis& a) {
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < a.layers.size(); ++l) {
    nlohmann::json heads = nlohmann::json::array();
    for (auto& h : a.layers[l].heads)
      heads.push_back({{"attn_sparsity", h.sparsity},
                       {"dropped_mass", h.dropped},
                       {"entropy_nats", h.entropy},
                       {"sink_token", h.sink_token},
                       {"sink_block", h.sink_block},
                       {"kl_sparse_full", h.kl_sparse_full}});
    nlohmann::json layer = {{"layer", l}, {"by_gpu_kernels", a.layers[l].by_kernels}, {"heads", heads}};
    if (!a.layers[l].selected.empty()) {
      const SelectionLocality loc = layer_selection_locality(a, int(l));
      layer["selection_locality"] = {{"neighbour_overlap", loc.neighbour_overlap},
                                     {"tile_queries", loc.tile},
                                     {"tile_distinct_blocks", loc.tile_union},
                                     {"tile_selections_per_block", loc.tile_reuse}};
    }
    layers.push_back(layer);
  }
  return {{"tokens", a.T},
          {"inference", to_string(a.inference)},
          {"block_size", a.spec.block_size},
          {"top_k", a.spec.top_k},
          {"selection_rule", to_string(a.spec.rule)},
          {"pooled_keys", to_string(a.spec.pooled_keys)},
          {"mean_attn_sparsity", a.mean_sparsity()},
          {"mean_entropy_nats", a.mean_entropy()},
          {"layers", layers}};
}

std::string to_csv(const Analysis& a) {
  std::ostringstream s;
  s << "layer,head,attn_sparsity,dropped_mass,entropy_nats,sink_token,sink_block,kl_sparse_full\n";
  s.precision(6);
  for (size_t l = 0; l < a.layers.size(); ++l)
    for (size_t h = 0; h < a.layers[l].heads.size(); ++h) {
      const HeadStats& x = a.layers[l].heads[h];
      s << l << ',' << h << ',' << x.sparsity << ',' << x.dropped << ',' << x.entropy << ',' << x.sink_token << ','
        << x.sink_block << ',' << x.kl_sparse_full << '\n';
    }
  return s.str();
}

}  // namespace ssalab
