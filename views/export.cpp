// Export: the map as PNG (the colormapped buffer itself, no screen grab),
// charts and the whole window as PNG (read back from the framebuffer after the
// frame is rendered), training metrics as CSV / JSON, per layer/head
// statistics as CSV.
#include <GL/gl.h>
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/util/background.h"
#include "views/map_widget.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

std::string prepare(const std::string& path) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) return "cannot create " + parent.string() + ": " + ec.message();
  return "";
}

std::string write_text(const std::string& path, const std::string& text) {
  if (std::string e = prepare(path); !e.empty()) return e;
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    if (!f) return "cannot write " + path;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return "cannot write " + path + ": " + ec.message();
  return "";
}

void csv_num(std::ostringstream& os, double v) {
  if (std::isfinite(v)) os << v;  // NaN / Inf: empty field
}

nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

struct ExportState {
  std::string prefix = "exports/ssalab";
  std::vector<std::string> written;
  std::vector<std::pair<std::string, std::future<std::string>>> pending;  // map PNGs being encoded
} g_export;

}  // namespace

std::string ExportMetricsCsv(const UiState& ui, const std::string& path) {
  if (!ui.snap) return "no session";
  std::ostringstream os;
  os.precision(8);
  os << "step,loss,ce_full,ce_sparse,sparsity_loss,commitment_loss,grad_norm,lr,tokens_per_s,val_ppl_full,val_ppl_sparse\n";
  for (const MetricPoint& p : ui.snap->history) {
    os << p.step;
    for (double v : {p.loss, p.ce_full, p.ce_sparse, p.sparsity_loss, p.commitment_loss, p.grad_norm, p.lr,
                     p.tokens_per_s, p.val_ppl_full, p.val_ppl_sparse}) {
      os << ',';
      csv_num(os, v);
    }
    os << '\n';
  }
  return write_text(path, os.str());
}

std::string ExportMetricsJson(const UiState& ui, const std::string& path) {
  if (!ui.snap) return "no session";
  nlohmann::json j;
  j["step"] = ui.snap->step;
  j["train"] = to_json(ui.snap->train);
  j["model"] = to_json(ui.snap->model);
  j["inference"] = to_string(ui.snap->inference);
  j["spec"] = {{"block_size", ui.snap->spec.block_size}, {"top_k", ui.snap->spec.top_k}};
  nlohmann::json hist = nlohmann::json::array();
  for (const MetricPoint& p : ui.snap->history)
    hist.push_back({{"step", p.step}, {"loss", num(p.loss)}, {"ce_full", num(p.ce_full)},
                    {"ce_sparse", num(p.ce_sparse)}, {"sparsity_loss", num(p.sparsity_loss)},
                    {"commitment_loss", num(p.commitment_loss)}, {"grad_norm", num(p.grad_norm)},
                    {"lr", num(p.lr)}, {"tokens_per_s", num(p.tokens_per_s)},
                    {"val_ppl_full", num(p.val_ppl_full)}, {"val_ppl_sparse", num(p.val_ppl_sparse)}});
  j["history"] = std::move(hist);
  if (ui.snap->analysis) j["analysis"] = to_json(*ui.snap->analysis);
  return write_text(path, j.dump(1));
}

std::string ExportLayerCsv(const UiState& ui, const std::string& path) {
  if (!ui.snap || !ui.snap->analysis) return "no analysis yet";
  return write_text(path, to_csv(*ui.snap->analysis));
}

std::future<std::string> SaveFramebufferPng(const std::string& path, const ScreenRect* rect, int fb_width,
                                            int fb_height, float scale_x, float scale_y) {
  int x = 0, y = 0, w = fb_width, h = fb_height;
  if (rect) {
    x = int(std::floor(rect->x * scale_x));
    w = int(std::ceil(rect->w * scale_x));
    h = int(std::ceil(rect->h * scale_y));
    y = fb_height - int(std::floor(rect->y * scale_y)) - h;  // GL rows start at the bottom
    int x1 = std::min(fb_width, x + w), y1 = std::min(fb_height, y + h);
    x = std::max(0, x);
    y = std::max(0, y);
    w = x1 - x;
    h = y1 - y;
  }
  if (w <= 0 || h <= 0) return ready_result("nothing to capture");
  // Only the read-back needs the GL context (and this frame's back buffer);
  // a whole window's PNG takes ~0.2 s to encode, so that runs on a worker.
  std::vector<unsigned char> px(size_t(w) * h * 4);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadBuffer(GL_BACK);
  glReadPixels(x, y, w, h, GL_RGBA, GL_UNSIGNED_BYTE, px.data());
  return background_workers().submit([path, w, h, px = std::move(px)]() mutable -> std::string {
    if (std::string e = prepare(path); !e.empty()) return e;
    for (size_t i = 3; i < px.size(); i += 4) px[i] = 255;  // opaque
    const size_t row = size_t(w) * 4;
    for (int top = 0, bottom = h - 1; top < bottom; ++top, --bottom)  // GL's bottom-up rows, top first
      std::swap_ranges(px.begin() + top * row, px.begin() + (top + 1) * row, px.begin() + bottom * row);
    return write_png_atomic(path, w, h, px.data(), int(row));
  });
}

void DrawExport(UiState& ui) {
  if (!ui.show_export) return;
  PlaceNextWindow("Export");
  if (!ImGui::Begin("Export", &ui.show_export)) {
    ImGui::End();
    return;
  }
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##prefix", "path prefix", &g_export.prefix);
  auto report = [&](const std::string& path, const std::string& err) {
    if (err.empty()) {
      ui.info("wrote " + path);
      g_export.written.push_back(path);
    } else {
      ui.error("export failed: " + err);
    }
  };
  for (auto it = g_export.pending.begin(); it != g_export.pending.end();) {  // map PNGs written on a worker
    if (it->second.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      ++it;
      continue;
    }
    report(it->first, it->second.get());
    it = g_export.pending.erase(it);
  }
  const std::string step = ui.snap ? "_step" + std::to_string(ui.snap->step) : "";
  if (ImGui::Button("map PNG")) {
    std::string p = g_export.prefix + "_map_L" + std::to_string(ui.layer) + (ui.mean_heads ? "_mean" : "_H" + std::to_string(ui.head)) +
                    "_" + to_string(ui.kind) + step + ".png";
    if (std::string e = prepare(p); !e.empty()) report(p, e);
    else g_export.pending.emplace_back(p, ExportMapPng(p));
  }
  ImGui::SameLine();
  if (ImGui::Button("curves PNG")) {
    std::string p = g_export.prefix + "_curves" + step + ".png";
    ui.captures.push_back({p, false, ui.curves_rect});
    g_export.written.push_back(p);
  }
  ImGui::SameLine();
  if (ImGui::Button("window PNG")) {
    std::string p = g_export.prefix + "_window" + step + ".png";
    ui.captures.push_back({p, true, {}});
    g_export.written.push_back(p);
  }
  if (ImGui::Button("metrics CSV")) {
    std::string p = g_export.prefix + "_metrics" + step + ".csv";
    report(p, ExportMetricsCsv(ui, p));
  }
  ImGui::SameLine();
  if (ImGui::Button("metrics JSON")) {
    std::string p = g_export.prefix + "_metrics" + step + ".json";
    report(p, ExportMetricsJson(ui, p));
  }
  ImGui::SameLine();
  if (ImGui::Button("layers CSV")) {
    std::string p = g_export.prefix + "_layers" + step + ".csv";
    report(p, ExportLayerCsv(ui, p));
  }
  if (!g_export.written.empty()) ImGui::TextDisabled("last: %s", g_export.written.back().c_str());
  ImGui::End();
}

}  // namespace ssalab::views
