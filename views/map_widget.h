// The attention map as an OpenGL texture, shared by the Attention map panel,
// Compare (two of them) and Export.
//
// build_map_image() turns one Analysis into the matrix to show (token level
// when the engine kept token maps and the user wants them, else its
// block-pooled cells); MapWidget colormaps it, uploads it only when the
// analysis or a setting changed, and draws it with zoom/pan, the block grid,
// the selected blocks of the focus query, and a hover readout.
#pragma once
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "engine/metrics/analysis.h"
#include "views/ui_state.h"
#include "views/view_math.h"

namespace ssalab::views {

struct MapImage {
  Grid values;            // n x n, row = query cell, column = key cell
  int cell_size = 1;      // tokens per cell (1 = token level)
  int64_t T = 0;          // tokens of the analysed text
  int block_size = 16;    // selection block size the analysis used
  bool token_level = false;
  std::string problem;    // non-empty when the analysis lacks what was asked
  int n() const { return values.rows; }
};

// What to show. head is ignored when mean_heads.
struct MapRequest {
  int layer = 0, head = 0;
  bool mean_heads = false;
  MapKind kind = MapKind::Full;
  bool prefer_tokens = true;
};
MapImage build_map_image(const Analysis& a, const MapRequest& req);

// The query a map row stands for: the row's token at token level, the last
// token of the cell otherwise (it sees the most context).
int64_t row_query(const MapImage& m, int row);

class MapWidget {
 public:
  MapWidget() = default;
  ~MapWidget();
  MapWidget(const MapWidget&) = delete;
  MapWidget& operator=(const MapWidget&) = delete;

  // Rebuilds the image/texture when the analysis or a setting changed.
  // forced_range: use this colour range instead of the image's own (Compare).
  void update(const std::shared_ptr<const Analysis>& a, const MapRequest& req, Scale scale,
              const Range* forced_range = nullptr);
  // The two halves of update(): the image (+ its own colour range), then the colours.
  void set_image(const std::shared_ptr<const Analysis>& a, const MapRequest& req, Scale scale);
  void set_colors(const Range* forced_range = nullptr);
  // Draws the map in a size x size square at the cursor. With `interactive`,
  // the mouse zooms (wheel), pans (drag), pins (click) and unpins (right click).
  ScreenRect draw(const char* id, UiState& ui, float size, bool interactive);
  // A vertical colour bar with the range's ends, at the cursor.
  void draw_colorbar(float height) const;

  bool ready() const { return analysis_ && image_.n() > 0; }
  const MapImage& image() const { return image_; }
  const Range& range() const { return range_; }
  Range own_range() const;  // the image's automatic range under the last scale given
  Scale scale() const { return scale_; }
  const std::vector<uint32_t>& rgba() const { return rgba_; }
  const std::shared_ptr<const Analysis>& analysis() const { return analysis_; }
  int uploads() const { return uploads_; }

 private:
  void upload();
  std::shared_ptr<const Analysis> analysis_;
  MapRequest req_;
  Scale scale_ = Scale::Log;
  Range range_;
  Range own_range_;
  MapImage image_;
  std::vector<uint32_t> rgba_;
  unsigned texture_ = 0;
  int tex_n_ = 0;
  bool dirty_ = false;
  int uploads_ = 0;
  // interaction
  bool dragging_ = false;
};

// Writes a colormapped n x n image (MapWidget::rgba()) to PNG, upscaled
// (nearest) so the picture is at least min_side pixels wide, atomically.
// Returns "" or the error.
std::string write_map_png(const std::vector<uint32_t>& rgba, int n, const std::string& path, int min_side = 512);
// RGBA pixels (rows top first, row_bytes apart) to a PNG file, atomically.
// Returns "" or the error. Used by the map export and framebuffer captures.
std::string write_png_atomic(const std::string& path, int width, int height, const void* rgba, int row_bytes);
// An already-finished future: for the PNG writers' early errors.
std::future<std::string> ready_result(std::string result);

}  // namespace ssalab::views
