#include "engine/metrics/selection_locality.h"

#include <algorithm>

#include "engine/util/error.h"

namespace ssalab {

namespace {

// The valid blocks of one row, sorted (a row's slots hold distinct blocks).
std::vector<int32_t> row_blocks(const int32_t* row, int64_t K) {
  std::vector<int32_t> blocks;
  for (int64_t s = 0; s < K; ++s)
    if (row[s] >= 0) blocks.push_back(row[s]);
  std::sort(blocks.begin(), blocks.end());
  return blocks;
}

int64_t shared_count(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  int64_t n = 0;
  for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    if (a[i] == b[j]) ++n, ++i, ++j;
    else if (a[i] < b[j]) ++i;
    else ++j;
  }
  return n;
}

}  // namespace

SelectionLocality selection_locality(const std::vector<int32_t>& selected, int64_t groups, int64_t T, int64_t K,
                                     int tile) {
  if (groups < 1 || T < 1 || K < 1 || tile < 1) throw Error("selection_locality: empty shape or tile");
  if (int64_t(selected.size()) != groups * T * K)
    throw Error("selection_locality: " + std::to_string(selected.size()) + " slots for " + std::to_string(groups) +
                " x " + std::to_string(T) + " x " + std::to_string(K));
  SelectionLocality out;
  out.tile = tile;
  double overlap_sum = 0, union_sum = 0, reuse_sum = 0;
  int64_t overlap_rows = 0, tiles = 0;
  std::vector<int32_t> tile_blocks;
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<int32_t> previous;
    for (int64_t t0 = 0; t0 < T; t0 += tile) {
      tile_blocks.clear();
      int64_t selections = 0;
      for (int64_t t = t0; t < std::min(T, t0 + tile); ++t) {
        std::vector<int32_t> blocks = row_blocks(selected.data() + (g * T + t) * K, K);
        if (t > 0 && !blocks.empty()) {
          overlap_sum += double(shared_count(blocks, previous)) / double(blocks.size());
          ++overlap_rows;
        }
        selections += int64_t(blocks.size());
        tile_blocks.insert(tile_blocks.end(), blocks.begin(), blocks.end());
        previous = std::move(blocks);
      }
      std::sort(tile_blocks.begin(), tile_blocks.end());
      const int64_t distinct = std::unique(tile_blocks.begin(), tile_blocks.end()) - tile_blocks.begin();
      if (distinct > 0) {
        union_sum += double(distinct);
        reuse_sum += double(selections) / double(distinct);
        ++tiles;
      }
    }
  }
  if (overlap_rows > 0) out.neighbour_overlap = overlap_sum / double(overlap_rows);
  if (tiles > 0) out.tile_union = union_sum / double(tiles), out.tile_reuse = reuse_sum / double(tiles);
  return out;
}

std::vector<int32_t> replay_selection(const std::vector<int32_t>& selected, int64_t groups, int64_t T, int64_t K,
                                      int block_size, int64_t batch, int64_t kv_heads, int64_t T_out) {
  if (groups < 1 || T < 1 || K < 1 || block_size < 1 || batch < 1 || kv_heads < 1 || T_out < 1)
    throw Error("replay_selection: empty shape");
  if (int64_t(selected.size()) != groups * T * K)
    throw Error("replay_selection: " + std::to_string(selected.size()) + " slots for " + std::to_string(groups) +
                " x " + std::to_string(T) + " x " + std::to_string(K));
  const int64_t period = T / block_size * block_size;
  if (period == 0)
    throw Error("replay_selection: " + std::to_string(T) + " recorded rows are less than one block of " +
                std::to_string(block_size));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t t = 0; t < period; ++t)
      if (selected[size_t((g * T + t) * K)] != t / block_size)
        throw Error("replay_selection: recorded row " + std::to_string(t) + " does not start with its own block");
  std::vector<int32_t> out(size_t(batch * kv_heads * T_out * K));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t t = 0; t < T_out; ++t) {
        const int32_t* row = selected.data() + ((h % groups) * T + t % period) * K;
        const int64_t shift = t / period * (period / block_size);
        int32_t* dst = out.data() + ((b * kv_heads + h) * T_out + t) * K;
        for (int64_t s = 0; s < K; ++s) dst[s] = row[s] >= 0 ? int32_t(row[s] + shift) : -1;
      }
  return out;
}

}  // namespace ssalab
