// Attention analysis: what the app shows and `ssalab analyze` prints.
//
// One forward pass (full or sparse inference) captures each layer's post-RoPE
// q and k; then, per layer and query head, the *full*-attention row of every
// query is compared with the query's top-k selection. Rows are processed in
// chunks so nothing T x T is held at once beyond `token_map_limit` tokens:
// memory is O(T * number of blocks).
//
// Definitions (docs/method.md "The quantities the app shows"):
//   sparsity(t) = full-attention mass inside t's selected blocks
//   dropped(t)  = 1 - sparsity(t)
//   entropy(t)  = -sum p log p of the full row, in nats
//   sink_token  = mass on token 0; sink_block = mass on block 0
//   kl(t)       = KL(sparse || full) of the row (= -log sparsity(t))
// Head figures are means over the query rows whose selection is a real choice
// (own block index + 1 > top-k, i.e. t >= k * block_size); earlier rows keep
// everything and would only dilute the numbers. Short inputs without such rows use every row.
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "engine/attention/attention.h"
#include "engine/config.h"
#include "engine/metrics/selection_locality.h"

namespace ssalab {

class Transformer;

struct HeadStats {
  double sparsity = 0, dropped = 0, entropy = 0, sink_token = 0, sink_block = 0, kl_sparse_full = 0;
};

// The block-pooled maps a layer keeps (LayerAnalysis::cell_maps).
enum class CellMap { Full = 0, Sparse = 1, Dropped = 2 };
// The per-row statistics a layer keeps (LayerAnalysis::row_stats):
// AttnSparsity (the full-attention mass inside the row's selected blocks),
// entropy in nats, and the mass on token 0.
enum class RowStat { Sparsity = 0, Entropy = 1, SinkToken = 2 };

struct LayerAnalysis {
  std::vector<HeadStats> heads;  // one per query head
  // Per-row statistics (3, H, T) float, indexed by RowStat, kept where the
  // analysis ran like cell_maps (a 1B model at 32K tokens has 200 MB of
  // them); row() copies out what a view shows.
  torch::Tensor row_stats;
  // One statistic of this layer's rows as floats on the host: every head
  // (H, T), or one head's (T) when head >= 0. Empty without statistics.
  std::vector<float> row(RowStat which, int head = -1) const;
  // Block-pooled maps (3, H, n_cells, n_cells) float, indexed by CellMap:
  // cell (i, j) is the mean over the queries of cell i of the attention mass
  // they put on the keys of cell j; Dropped is the full-attention mass that
  // the selection leaves out. They stay on the device the analysis ran on (a
  // 1B model's 16 layers x 32 heads at 512 cells are 1.6 GB, seconds to copy
  // to the host); map() copies out what a view shows.
  torch::Tensor cell_maps;
  // One map of this layer as floats on the host: every head (H, n_cells,
  // n_cells), or one head's (n_cells, n_cells) when head >= 0. Empty when the
  // analysis holds no maps. From a GPU, the copy runs on a side stream, so it
  // does not wait behind training work queued on the main one.
  std::vector<float> map(CellMap which, int head = -1) const;
  // Token-level maps (H, T, T); empty when T > token_map_limit.
  std::vector<float> token_full, token_sparse;
  // Selected blocks (Hkv, T, K) int32, -1 = empty slot; slot 0 = local block.
  std::vector<int32_t> selected;
  // (1, H, T, D), (1, Hkv, T, D) post-RoPE, as the forward made them (its
  // device and dtype: on a GPU they stay there), kept for query_detail() and reanalyze()
  torch::Tensor q, k;
  // (H, T) float: the log-sum-exp of each full-attention row, where the
  // analysis ran. It does not depend on the selection, so with the full map
  // and the entropy it lets reanalyze() measure another selection from the
  // scores inside the selected blocks alone (k * block_size keys a row, not T).
  torch::Tensor row_lse;
  bool by_kernels = false;     // computed by the GPU kernels (bf16) rather than LibTorch ops
  bool from_kept_rows = false;  // reanalyze() reused row_lse, the entropy and the full map
};

struct AnalysisRequest {
  std::vector<int> tokens;
  AttnMode inference = AttnMode::Full;  // which stream feeds the next layer
  SparseSpec spec;                      // selection measured against
  int token_map_limit = 1024;           // keep token maps up to this length
  int max_cells = 512;                  // map resolution cap (cells per side)
  const std::atomic<bool>* cancel = nullptr;  // when set to true, analyze() throws Error("analysis cancelled")
  bool token_losses = false;            // also each token's NLL under full and sparse inference
};

struct Analysis {
  int64_t T = 0;
  int num_layers = 0, num_heads = 0, num_kv_heads = 0;
  SparseSpec spec;
  AttnMode inference = AttnMode::Full;
  int cell_size = 16;  // tokens per map cell (a multiple of spec.block_size)
  int n_cells = 0;
  std::vector<int> tokens;
  std::vector<LayerAnalysis> layers;
  // token_losses only: nll_*[i] = -log p(tokens[i+1] | prefix) in nats, (T-1)
  std::vector<float> nll_full, nll_sparse;
  bool qk_reused = false;  // made by reanalyze(): selection and statistics only, on kept q and k
  bool bf16_autocast = false;  // an fp32 model on CUDA: the forward ran under bf16 autocast, as training does
  double seconds = 0;      // wall time the analysis took (analyze() or reanalyze(), token losses included)
  double mean_sparsity() const;  // over layers and heads
  double mean_entropy() const;
};

// Everything about one query row of one head, for the "selected blocks" view.
struct QueryDetail {
  int64_t query = 0;
  int head = 0, kv_head = 0;
  int64_t own_block = 0;
  std::vector<float> block_scores;   // group-summed selection probability per complete block (< own block ranked)
  std::vector<float> block_mass;     // full-attention mass of this head per block (all blocks up to own)
  std::vector<int32_t> selected;     // chosen blocks, slot 0 = local block
  double sparsity = 0, entropy = 0;
};

Analysis analyze(Transformer& model, const AnalysisRequest& req);
// -log p(token t+1 | prefix) of each token after the first, from the model's
// final hidden states (1, T, hidden) (ForwardOptions::hidden_only), turned
// into logits `rows` rows at a time (<= 0: kLogitChunkElements' worth) so
// that no (T, V) tensor exists.
std::vector<float> token_nll(Transformer& model, const torch::Tensor& hidden, const torch::Tensor& tokens,
                             int64_t rows = 0);
// The same from captured per-layer q (1, Hq, T, D) and k (1, Hkv, T, D); req.tokens may be empty.
// `previous`, when given, is an analysis of these same q and k under another
// selection: what it measured that does not depend on the selection (each
// full row's LSE, entropy and token-0 mass, the full map) is reused where the
// new map cells are the old ones or unions of them (a larger block size) and
// no token maps are asked for, so only the scores
// inside the new selection's blocks are taken (LayerAnalysis::from_kept_rows).
Analysis analyze_qk(const std::vector<torch::Tensor>& q, const std::vector<torch::Tensor>& k, const AnalysisRequest& req,
                    const Analysis* previous = nullptr);
// Another selection (k, block size or rule) measured on `previous`'s kept q
// and k, without a forward pass through the layers: only selection and
// statistics run again (and one sparse forward when req.token_losses, for the
// sparse stream's token losses). Under full inference q and k do not depend
// on the selection, so the result equals analyze(model, req). Throws when
// `previous` is not a full-inference analysis of req.tokens with q and k kept.
Analysis reanalyze(Transformer& model, const Analysis& previous, const AnalysisRequest& req);
// -log p(token t+1 | prefix) of each token after the first under one stream
// (full, or sparse with `spec`): what req.token_losses adds to an analysis,
// for a caller that shows the statistics first and the losses once ready.
std::vector<float> stream_token_nll(Transformer& model, const std::vector<int>& tokens, AttnMode mode,
                                    const SparseSpec& spec);
QueryDetail query_detail(const Analysis& a, int layer, int head, int64_t query);

// How much neighbouring queries of one layer share their selected blocks
// (selection_locality.h), over every KV head.
SelectionLocality layer_selection_locality(const Analysis& a, int layer, int tile = 64);

// JSON summary (per layer/head stats and selection locality; no maps) and CSV of the same.
nlohmann::json to_json(const Analysis& a);
std::string to_csv(const Analysis& a);

}  // namespace ssalab
