// Pure functions under the views: no ImGui, no OpenGL, no LibTorch, so they
// compile in a second and are unit-tested in tests/views/test_view_math.cpp.
//
// Section index
//   1. Colormap      viridis as a table of packed RGBA, luminance
//   2. Scaling       linear / log normalisation of map values
//   3. Pooling       block pooling of a (rows, cols) map; the "dropped" map
//   4. Curves        finite points, EMA smoothing, min/max-envelope downsampling
//   5. Map transform zoom / pan of a square map, pixel -> (query, key)
//   6. Statistics    percentiles for frame times
//   7. Text          display form of tokenizer pieces
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ssalab::views {

// ---------------------------------------------------------------- 1. colormap
struct Rgb {
  float r = 0, g = 0, b = 0;  // sRGB, each in [0, 1]
};

// Viridis (van der Walt & Smith, matplotlib 2.0 default). Evaluated from a
// degree-6 polynomial fit per channel of the published 256-entry table; the
// fit stays within ~0.01 of the table (tests check the published 9-stop hex
// values and that luminance rises monotonically). t is clamped to [0, 1].
Rgb viridis(float t);

// 256 entries of viridis packed as RGBA8 in memory order (r, g, b, a = 255),
// i.e. the uint32 is 0xAABBGGRR on little-endian machines: what glTexImage2D
// with GL_RGBA / GL_UNSIGNED_BYTE and stbi_write_png expect.
const std::array<uint32_t, 256>& viridis_rgba();
constexpr uint32_t kMissingRgba = 0xFF303030u;  // NaN / masked cells: dark grey

uint32_t pack_rgba(Rgb c, float alpha = 1.0f);
// Relative luminance Y (Rec. 709 primaries, sRGB transfer undone), in [0, 1].
float luminance(Rgb c);

// ---------------------------------------------------------------- 2. scaling
enum class Scale { Linear, Log };

struct Range {
  float lo = 0, hi = 1;
};

// Range of the finite values of v. Linear: [0, max] when every value is >= 0
// (attention mass), else [min, max]. Log: [max(min positive, max * floor), max]
// so that a single zero cell does not flatten the picture.
Range auto_range(const float* v, size_t n, Scale s, float log_floor = 1e-4f);
// Value -> [0, 1] under the scale (clamped); NaN stays NaN.
float normalize(float v, Scale s, Range r);
// Colormapped RGBA of n values (NaN -> kMissingRgba).
void colorize(const float* v, size_t n, Scale s, Range r, uint32_t* rgba_out);

// ---------------------------------------------------------------- 3. pooling
// A dense row-major matrix of floats.
struct Grid {
  int rows = 0, cols = 0;
  std::vector<float> v;
  float at(int r, int c) const { return v[size_t(r) * cols + c]; }
};

// How the cells of a pooled map combine the values they cover.
enum class Pool {
  Sum,           // sum of the covered values
  Mean,          // mean of the covered values
  QueryMeanKeySum  // attention maps: sum over the keys, mean over the queries
                   // (a cell is "mass that one query of the cell puts on the
                   // keys of the cell"; rows then still sum to 1)
};
// Pools src (rows x cols) into ceil(rows/cell) x ceil(cols/cell); the last
// cell of each side may be partial and is averaged over what it covers.
Grid pool_map(const Grid& src, int cell, Pool mode);

// Dropped mass at token level, exact: full(t, s) where the block of key s is
// not among query t's selected blocks, else 0. `selected` is (T, K) for the
// query head's KV group, -1 = empty slot.
Grid dropped_token_map(const Grid& full, const int32_t* selected, int K, int block_size);

// ---------------------------------------------------------------- 4. curves
struct Series {
  std::vector<double> x, y;
};

// The points of (x, y) whose y is finite (CE of the full stream is NaN on
// steps that drew sparse; validation PPL exists only on validation steps).
Series finite_points(const std::vector<double>& x, const std::vector<double>& y);

// Exponential moving average with TensorBoard's debiasing: s_i = w s_{i-1} +
// (1 - w) y_i, divided by (1 - w^(i+1)), so the first point is y_0 rather
// than a value pulled towards zero. w in [0, 1); 0 returns y. Non-finite
// inputs are passed through unchanged and do not enter the average.
std::vector<double> ema(const std::vector<double>& y, double weight);

// A downsampled curve: one entry per output point; lo/hi bound the raw values
// the point stands for (lo == hi == y where a point is a raw point).
struct Envelope {
  std::vector<double> x, y, lo, hi;
  size_t size() const { return x.size(); }
};

// Points of s with x in [x0, x1], reduced to at most max_points + 2 entries
// by bucketing x into max_points equal-width bins (mean, min, max per bin).
// The first and last point in range are always kept exactly, so are spikes
// (through lo/hi). Fewer points than 2 * max_points are returned as they are.
// s.x must be non-decreasing.
Envelope downsample(const Series& s, double x0, double x1, int max_points);

// ---------------------------------------------------------------- 5. map transform
// A square map of n x n cells drawn in a screen rectangle. The visible part is
// the window [u0, u0 + 1/zoom] x [v0, v0 + 1/zoom] in map coordinates, where
// (0, 0) is the top-left corner of cell (0, 0) and (1, 1) the bottom-right of
// cell (n-1, n-1); u runs along keys (columns), v along queries (rows).
struct MapView {
  float zoom = 1.0f;  // >= 1
  float u0 = 0, v0 = 0;
};

struct ScreenRect {
  float x = 0, y = 0, w = 1, h = 1;
  bool contains(float px, float py) const { return px >= x && py >= y && px < x + w && py < y + h; }
};

struct MapHit {
  bool inside = false;
  int row = -1, col = -1;  // cell under the pixel (query cell, key cell)
};

// Keeps zoom in [1, max_zoom] and the window inside the map.
MapView clamp_view(MapView v, float max_zoom);
// Cell under a screen pixel.
MapHit hit_test(const MapView& v, const ScreenRect& r, int n_cells, float px, float py);
// Screen position of map coordinate (u, v).
void map_to_screen(const MapView& v, const ScreenRect& r, float u, float vv, float* px, float* py);
// Zoom by `factor` keeping the map point under (px, py) where it is.
MapView zoom_at(const MapView& v, const ScreenRect& r, float px, float py, float factor, float max_zoom);
// Pan by a screen-space drag (dx, dy) pixels.
MapView pan_by(const MapView& v, const ScreenRect& r, float dx, float dy, float max_zoom);

// Tokens [first, last) that map cell `cell` covers when cells hold cell_size tokens.
struct TokenRange {
  int64_t first = 0, last = 0;
};
TokenRange cell_tokens(int cell, int cell_size, int64_t T);

// ---------------------------------------------------------------- 6. statistics
// Nearest-rank percentile (p in [0, 100]) of v; NaN when v is empty.
double percentile(std::vector<double> v, double p);

// ---------------------------------------------------------------- 7. text
// A tokenizer piece as the UI shows it: byte-level BPE pieces ("Ġthe",
// "Ċ") as their text, sentencepiece's U+2581 word marker as a space, byte
// pieces "<0x0A>" as "\n"-style escapes, control characters escaped.
std::string display_piece(const std::string& piece);

}  // namespace ssalab::views
