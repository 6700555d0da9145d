#include "views/map_widget.h"

#include <GL/gl.h>
#include <imgui.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "engine/util/files.h"

namespace ssalab::views {

// ---------------------------------------------------------------- image

namespace {

// Slice h of an (H, n, n) buffer as a Grid; empty Grid when the buffer is short.
Grid slice(const std::vector<float>& buf, int h, int n) {
  Grid g;
  size_t nn = size_t(n) * n;
  if (n <= 0 || buf.size() < (size_t(h) + 1) * nn) return g;
  g.rows = g.cols = n;
  g.v.assign(buf.begin() + h * nn, buf.begin() + (h + 1) * nn);
  return g;
}

}  // namespace

MapImage build_map_image(const Analysis& a, const MapRequest& req) {
  MapImage m;
  m.T = a.T;
  m.block_size = a.spec.block_size;
  if (a.layers.empty() || a.num_heads <= 0) {
    m.problem = "the analysis holds no layers";
    return m;
  }
  const int layer = std::clamp(req.layer, 0, int(a.layers.size()) - 1);
  const int H = a.num_heads;
  const int head = std::clamp(req.head, 0, H - 1);
  const LayerAnalysis& L = a.layers[layer];
  const int64_t T = a.T;

  bool tokens = req.prefer_tokens && !L.token_full.empty() &&
                (req.kind != MapKind::Sparse || !L.token_sparse.empty());
  const int n = tokens ? int(T) : a.n_cells;
  m.cell_size = tokens ? 1 : a.cell_size;
  m.token_level = tokens;

  const int Hkv = std::max(1, a.num_kv_heads);
  const int K = (T > 0 && !L.selected.empty()) ? int(L.selected.size() / (size_t(Hkv) * T)) : 0;

  // Token maps live on the host; cell maps are copied from the analysis's
  // device (LayerAnalysis::map): the head shown, or every head at once for
  // their mean.
  std::vector<float> all_heads;
  auto cells = [&](CellMap which, int h) {
    if (!req.mean_heads) return slice(L.map(which, h), 0, n);
    if (all_heads.empty()) all_heads = L.map(which);
    return slice(all_heads, h, n);
  };
  auto head_grid = [&](int h) -> Grid {
    if (!tokens) return cells(req.kind == MapKind::Full ? CellMap::Full
                              : req.kind == MapKind::Sparse ? CellMap::Sparse : CellMap::Dropped, h);
    if (req.kind == MapKind::Sparse) return slice(L.token_sparse, h, n);
    Grid g = slice(L.token_full, h, n);
    if (req.kind == MapKind::Full || g.rows == 0) return g;
    // Dropped: full mass outside the query's selected blocks.
    if (K == 0) return Grid{};
    int group = h / std::max(1, H / Hkv);
    return dropped_token_map(g, L.selected.data() + size_t(group) * T * K, K, a.spec.block_size);
  };

  if (!req.mean_heads) {
    m.values = head_grid(head);
  } else {
    for (int h = 0; h < H; ++h) {
      Grid g = head_grid(h);
      if (g.rows == 0) {
        m.values = Grid{};
        break;
      }
      if (m.values.rows == 0) {
        m.values = std::move(g);
      } else {
        for (size_t i = 0; i < g.v.size(); ++i) m.values.v[i] += g.v[i];
      }
    }
    for (float& x : m.values.v) x /= float(H);
  }
  if (m.values.rows == 0) m.problem = std::string("the analysis has no ") + to_string(req.kind) + " map for this layer";
  return m;
}

int64_t row_query(const MapImage& m, int row) {
  if (m.token_level) return row;
  TokenRange r = cell_tokens(row, m.cell_size, m.T);
  return std::max<int64_t>(r.first, r.last - 1);
}

// ---------------------------------------------------------------- texture

MapWidget::~MapWidget() {
  if (texture_) glDeleteTextures(1, &texture_);
}

Range MapWidget::own_range() const { return own_range_; }

void MapWidget::update(const std::shared_ptr<const Analysis>& a, const MapRequest& req, Scale scale,
                       const Range* forced_range) {
  set_image(a, req, scale);
  set_colors(forced_range);
}

void MapWidget::set_image(const std::shared_ptr<const Analysis>& a, const MapRequest& req, Scale scale) {
  if (!a) {
    analysis_.reset();
    image_ = MapImage{};
    rgba_.clear();
    return;
  }
  bool same = a == analysis_ && req.layer == req_.layer && req.head == req_.head &&
              req.mean_heads == req_.mean_heads && req.kind == req_.kind && req.prefer_tokens == req_.prefer_tokens;
  if (!same) {
    analysis_ = a;
    req_ = req;
    image_ = build_map_image(*a, req);
    rgba_.clear();  // forces a recolour
  }
  if (!same || scale != scale_) {  // the automatic range is a pass over the image: only on change
    scale_ = scale;
    own_range_ = auto_range(image_.values.v.data(), image_.values.v.size(), scale);
    rgba_.clear();
  }
}

void MapWidget::set_colors(const Range* forced_range) {
  if (!analysis_) return;
  Range r = forced_range ? *forced_range : own_range_;
  if (rgba_.size() == image_.values.v.size() && r.lo == range_.lo && r.hi == range_.hi) return;
  range_ = r;
  rgba_.resize(image_.values.v.size());
  colorize(image_.values.v.data(), image_.values.v.size(), scale_, range_, rgba_.data());
  dirty_ = true;  // texture is stale; uploaded when next drawn
}

void MapWidget::upload() {
  const int n = image_.n();
  if (n <= 0) return;
  if (!texture_) {
    glGenTextures(1, &texture_);
    glBindTexture(GL_TEXTURE_2D, texture_);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);
  }
  glBindTexture(GL_TEXTURE_2D, texture_);
  glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
  glPixelStorei(GL_UNPACK_ROW_LENGTH, 0);
  if (tex_n_ != n) {
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, n, n, 0, GL_RGBA, GL_UNSIGNED_BYTE, rgba_.data());
    tex_n_ = n;
  } else {
    glTexSubImage2D(GL_TEXTURE_2D, 0, 0, 0, n, n, GL_RGBA, GL_UNSIGNED_BYTE, rgba_.data());
  }
  ++uploads_;
  dirty_ = false;
}

// ---------------------------------------------------------------- drawing

namespace {

const ImU32 kLocalColor = IM_COL32(255, 140, 0, 255);    // the forced local block
const ImU32 kPickedColor = IM_COL32(255, 60, 120, 255);  // the other picked blocks
const ImU32 kGridColor = IM_COL32(255, 255, 255, 38);

std::string piece_at(const UiState& ui, int64_t t, int64_t T) {
  if (!ui.snap || int64_t(ui.snap->probe_pieces.size()) != T || t < 0 || t >= T) return "";
  return "'" + display_piece(ui.snap->probe_pieces[size_t(t)]) + "'";
}

}  // namespace

ScreenRect MapWidget::draw(const char* id, UiState& ui, float size, bool interactive) {
  ImGui::PushID(id);
  ImVec2 p0 = ImGui::GetCursorScreenPos();
  ScreenRect rect{p0.x, p0.y, size, size};
  ImGui::InvisibleButton("map", ImVec2(size, size),
                         ImGuiButtonFlags_MouseButtonLeft | ImGuiButtonFlags_MouseButtonRight |
                             ImGuiButtonFlags_MouseButtonMiddle);
  const bool hovered = ImGui::IsItemHovered();
  const bool active = ImGui::IsItemActive();
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImVec2 p1(p0.x + size, p0.y + size);
  dl->AddRectFilled(p0, p1, IM_COL32(20, 20, 24, 255));

  const int n = image_.n();
  if (!ready()) {
    const char* msg = analysis_ ? image_.problem.c_str() : "no analysis yet";
    dl->AddText(ImVec2(p0.x + 8, p0.y + 8), IM_COL32(200, 200, 200, 255), msg);
    ImGui::PopID();
    return rect;
  }
  if (dirty_) upload();

  const float max_zoom = std::max(1.0f, n * 24.0f / size);
  MapView& v = ui.view;
  v = clamp_view(v, max_zoom);
  ImGuiIO& io = ImGui::GetIO();

  // Interaction: wheel zooms at the cursor, drag pans, a click pins the query
  // of the row, right click unpins, double click resets the view.
  if (interactive && hovered) {
    if (io.MouseWheel != 0) v = zoom_at(v, rect, io.MousePos.x, io.MousePos.y, std::pow(1.25f, io.MouseWheel), max_zoom);
    if (ImGui::IsMouseDoubleClicked(ImGuiMouseButton_Left)) v = MapView{};
    if (ImGui::IsMouseClicked(ImGuiMouseButton_Right)) ui.pinned = -1;
  }
  if (interactive && active) {
    if (ImGui::IsMouseDragging(ImGuiMouseButton_Left, 3.0f) || ImGui::IsMouseDragging(ImGuiMouseButton_Middle, 3.0f)) {
      dragging_ = true;
      v = pan_by(v, rect, io.MouseDelta.x, io.MouseDelta.y, max_zoom);
    }
  }
  MapHit hit = hovered ? hit_test(v, rect, n, io.MousePos.x, io.MousePos.y) : MapHit{};
  if (interactive && ImGui::IsItemDeactivated()) {
    if (!dragging_ && hit.inside && ImGui::IsMouseReleased(ImGuiMouseButton_Left)) ui.pinned = row_query(image_, hit.row);
    dragging_ = false;
  }
  if (hit.inside) ui.hover_next = row_query(image_, hit.row);

  // The texture, through the visible window of the map.
  const float span = 1.0f / v.zoom;
  dl->AddImage(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(texture_)), p0, p1, ImVec2(v.u0, v.v0),
               ImVec2(v.u0 + span, v.v0 + span));
  dl->PushClipRect(p0, p1, true);

  auto to_screen = [&](double u, double vv) {
    float x, y;
    map_to_screen(v, rect, float(u), float(vv), &x, &y);
    return ImVec2(x, y);
  };
  const Analysis& a = *analysis_;
  const int cell = image_.cell_size;

  // Block grid: lines every `step` tokens, doubled until they are >= 6 px apart.
  if (ui.show_grid) {
    int64_t step = std::max<int64_t>(image_.block_size, cell);
    auto px_per_token = [&] { return size * v.zoom / (double(n) * cell); };
    while (step * px_per_token() < 6.0 && step < image_.T) step *= 2;
    if (step < image_.T) {
      double t_lo = v.u0 * n * cell, t_hi = (v.u0 + span) * n * cell;
      for (int64_t t = (int64_t(t_lo) / step + 1) * step; t < t_hi; t += step) {
        double u = double(t) / cell / n;
        ImVec2 a0 = to_screen(u, 0), b0 = to_screen(0, u);
        dl->AddLine(ImVec2(a0.x, p0.y), ImVec2(a0.x, p1.y), kGridColor);
        dl->AddLine(ImVec2(p0.x, b0.y), ImVec2(p1.x, b0.y), kGridColor);
      }
    }
  }

  // Selected blocks of the focus query (pinned, else hovered).
  const int64_t q = ui.focus_query();
  const int layer = std::clamp(req_.layer, 0, int(a.layers.size()) - 1);
  const LayerAnalysis& L = a.layers[layer];
  const int Hkv = std::max(1, a.num_kv_heads);
  const int K = (a.T > 0 && !L.selected.empty()) ? int(L.selected.size() / (size_t(Hkv) * a.T)) : 0;
  if (ui.show_selection && q >= 0 && q < a.T) {
    const int row = int(q / cell);
    ImVec2 r0 = to_screen(0, double(row) / n), r1 = to_screen(1, double(row + 1) / n);
    if (r1.y - r0.y < 3) {
      float c = 0.5f * (r0.y + r1.y);
      r0.y = c - 1.5f;
      r1.y = c + 1.5f;
    }
    dl->AddRectFilled(ImVec2(p0.x, r0.y), ImVec2(p1.x, r1.y), IM_COL32(255, 255, 255, 28));
    if (K > 0) {
      const int group = std::clamp(req_.head, 0, a.num_heads - 1) / std::max(1, a.num_heads / Hkv);
      const int32_t* sel = L.selected.data() + (size_t(group) * a.T + q) * K;
      const int bs = a.spec.block_size;
      for (int k = K - 1; k >= 0; --k) {
        if (sel[k] < 0) continue;
        int64_t first = int64_t(sel[k]) * bs, last = std::min<int64_t>(first + bs, q + 1);
        double c0 = double(first / cell), c1 = double((last + cell - 1) / cell);
        ImVec2 b0 = to_screen(c0 / n, 0), b1 = to_screen(c1 / n, 0);
        if (b1.x - b0.x < 3) b1.x = b0.x + 3;
        dl->AddRect(ImVec2(b0.x - 1, r0.y - 1), ImVec2(b1.x + 1, r1.y + 1), k == 0 ? kLocalColor : kPickedColor, 0,
                    0, 2.0f);
      }
    }
    if (ui.pinned == q) dl->AddTriangleFilled(ImVec2(p0.x, r0.y - 4), ImVec2(p0.x, r1.y + 4),
                                              ImVec2(p0.x + 8, 0.5f * (r0.y + r1.y)), kPickedColor);
  }
  dl->PopClipRect();
  dl->AddRect(p0, p1, IM_COL32(90, 90, 100, 255));

  // Hover readout.
  if (hit.inside) {
    float val = image_.values.at(hit.row, hit.col);
    ImGui::BeginTooltip();
    if (image_.token_level) {
      ImGui::Text("query %d %s", hit.row, piece_at(ui, hit.row, image_.T).c_str());
      ImGui::Text("key   %d %s", hit.col, piece_at(ui, hit.col, image_.T).c_str());
      ImGui::Text("%s = %.4g", to_string(req_.kind), val);
    } else {
      TokenRange qr = cell_tokens(hit.row, cell, image_.T), kr = cell_tokens(hit.col, cell, image_.T);
      ImGui::Text("queries %lld-%lld", (long long)qr.first, (long long)qr.last - 1);
      ImGui::Text("keys    %lld-%lld", (long long)kr.first, (long long)kr.last - 1);
      ImGui::Text("%s = %.4g (mass per query)", to_string(req_.kind), val);
    }
    if (interactive) ImGui::TextDisabled("click: pin query  right click: unpin  wheel: zoom  drag: pan");
    ImGui::EndTooltip();
  }
  ImGui::PopID();
  return rect;
}

void MapWidget::draw_colorbar(float height) const {
  ImVec2 p0 = ImGui::GetCursorScreenPos();
  const float w = 14.0f;
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const auto& lut = viridis_rgba();
  const int steps = 64;
  for (int i = 0; i < steps; ++i) {
    float t0 = float(i) / steps, t1 = float(i + 1) / steps;
    uint32_t c = lut[size_t(std::lround((1.0f - t0 - 0.5f / steps) * 255.0f))];
    dl->AddRectFilled(ImVec2(p0.x, p0.y + t0 * height), ImVec2(p0.x + w, p0.y + t1 * height), c);
  }
  dl->AddRect(p0, ImVec2(p0.x + w, p0.y + height), IM_COL32(90, 90, 100, 255));
  char buf[32];
  auto label = [&](float frac, float value) {
    std::snprintf(buf, sizeof buf, "%.3g", value);
    dl->AddText(ImVec2(p0.x + w + 4, p0.y + frac * (height - ImGui::GetTextLineHeight())),
                ImGui::GetColorU32(ImGuiCol_Text), buf);
  };
  label(0.0f, range_.hi);
  float mid = scale_ == Scale::Log ? std::sqrt(range_.lo * range_.hi) : 0.5f * (range_.lo + range_.hi);
  label(0.5f, mid);
  label(1.0f, range_.lo);
  ImGui::Dummy(ImVec2(w + 56, height));
}

std::string write_map_png(const std::vector<uint32_t>& rgba, int n, const std::string& path, int min_side) {
  if (n <= 0 || rgba.size() != size_t(n) * n) return "no map to export";
  const int f = std::max(1, (min_side + n - 1) / n);
  const int side = n * f;
  std::vector<uint32_t> out(size_t(side) * side);
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x) out[size_t(y) * side + x] = rgba[size_t(y / f) * n + x / f];
  return write_png_atomic(path, side, side, out.data(), side * 4);
}

std::string write_png_atomic(const std::string& path, int width, int height, const void* rgba, int row_bytes) {
  std::string png;
  auto append = [](void* dst, void* data, int size) {
    static_cast<std::string*>(dst)->append(static_cast<const char*>(data), size_t(size));
  };
  if (!stbi_write_png_to_func(append, &png, width, height, 4, rgba, row_bytes)) return "cannot encode " + path;
  try {
    write_file_atomic(path, png);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::future<std::string> ready_result(std::string result) {
  std::promise<std::string> p;
  p.set_value(std::move(result));
  return p.get_future();
}

}  // namespace ssalab::views
