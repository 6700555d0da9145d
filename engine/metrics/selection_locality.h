// How much neighbouring queries agree on their selected blocks. A sparse
// kernel that gives a tile of consecutive queries the union of their blocks
// reads each key block once per tile instead of once per query; whether that
// pays depends on these figures of a trained model's selections (random
// selections share almost nothing beyond the own block).
#pragma once

#include <cstdint>
#include <vector>

namespace ssalab {

struct SelectionLocality {
  int tile = 64;                 // queries per tile
  double neighbour_overlap = 0;  // mean |S(t) & S(t-1)| / |S(t)| over rows t >= 1
  double tile_union = 0;         // mean number of distinct blocks a tile's queries select
  double tile_reuse = 0;         // selections per distinct block in a tile: sum |S(t)| / |union|
};

// `selected` (groups, T, K) as LayerAnalysis::selected: block indices, -1 for
// empty slots. Tiles start at query 0; the last one may be shorter.
SelectionLocality selection_locality(const std::vector<int32_t>& selected, int64_t groups, int64_t T, int64_t K,
                                     int tile = 64);

// A recorded selection (groups, T, K; block size `block_size`), e.g. a trained
// model's layer*_selected_blocks.npy from `ssalab analyze`, replayed at
// another shape (batch, kv_heads, T_out, K) for the kernel benchmark: KV head h
// takes recorded group h % groups, and query t takes recorded row t mod T'
// (T' = T rounded down to whole blocks) with its blocks moved on by the whole
// periods before it, so every row keeps its own block in slot 0, its blocks
// causal and distinct, and the recorded rows' locality.
std::vector<int32_t> replay_selection(const std::vector<int32_t>& selected, int64_t groups, int64_t T, int64_t K,
                                      int block_size, int64_t batch, int64_t kv_heads, int64_t T_out);

}  // namespace ssalab
