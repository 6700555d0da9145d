// Attention map panel: layer/head pickers, full / sparse / dropped, scale,
// token or block level, and the map itself (views/map_widget.h).
#include <imgui.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "engine/util/background.h"
#include "views/map_widget.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {
std::unique_ptr<MapWidget> g_map;  // released by ShutdownViews() while GL is alive

MapWidget& map_widget() {
  if (!g_map) g_map = std::make_unique<MapWidget>();
  return *g_map;
}
}  // namespace

void ReleaseAttentionMap() { g_map.reset(); }

MapWidgetInfo CurrentMapInfo() {
  MapWidgetInfo info;
  if (!g_map) return info;
  info.ready = g_map->ready();
  info.n = g_map->image().n();
  info.cell_size = g_map->image().cell_size;
  info.T = g_map->image().T;
  info.uploads = g_map->uploads();
  return info;
}

std::future<std::string> ExportMapPng(const std::string& path) {
  if (!g_map || !g_map->ready()) return ready_result("no map to export yet");
  // a copy of the pixels, so the map may change while the PNG is encoded
  return background_workers().submit(
      [rgba = g_map->rgba(), n = g_map->image().n(), path] { return write_map_png(rgba, n, path); });
}

// Layer / head / kind / scale pickers; shared with Compare.
void DrawMapSettings(UiState& ui, const Analysis* a) {
  const int L = a ? a->num_layers : 1, H = a ? a->num_heads : 1;
  ImGui::SetNextItemWidth(110);
  ImGui::SliderInt("layer", &ui.layer, 0, std::max(0, L - 1));
  ImGui::SameLine();
  ImGui::BeginDisabled(ui.mean_heads);
  ImGui::SetNextItemWidth(110);
  ImGui::SliderInt("head", &ui.head, 0, std::max(0, H - 1));
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::Checkbox("mean over heads", &ui.mean_heads);

  int kind = int(ui.kind);
  ImGui::RadioButton("full", &kind, int(MapKind::Full));
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("full attention of each query");
  ImGui::SameLine();
  ImGui::RadioButton("sparse", &kind, int(MapKind::Sparse));
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("attention restricted to the query's top-k blocks (renormalised)");
  ImGui::SameLine();
  ImGui::RadioButton("dropped", &kind, int(MapKind::Dropped));
  if (ImGui::IsItemHovered())
    ImGui::SetTooltip("full-attention mass outside the selected blocks (full minus what the selection keeps)");
  ui.kind = MapKind(kind);
  ImGui::SameLine(0, 24);
  int scale = int(ui.scale);
  ImGui::RadioButton("linear", &scale, int(Scale::Linear));
  ImGui::SameLine();
  ImGui::RadioButton("log", &scale, int(Scale::Log));
  ui.scale = Scale(scale);
}

void DrawAttentionMap(UiState& ui) {
  if (!ui.show_map) return;
  PlaceNextWindow("Attention map");
  if (!ImGui::Begin("Attention map", &ui.show_map, ImGuiWindowFlags_NoScrollWithMouse | ImGuiWindowFlags_NoScrollbar)) {
    ImGui::End();
    return;
  }
  std::shared_ptr<const Analysis> a = ui.snap ? ui.snap->analysis : nullptr;
  DrawMapSettings(ui, a.get());

  const bool has_tokens = a && !a->layers.empty() && !a->layers[0].token_full.empty();
  ImGui::BeginDisabled(!has_tokens);
  ImGui::Checkbox("token level", &ui.prefer_tokens);
  ImGui::EndDisabled();
  if (!has_tokens && a && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
    ImGui::SetTooltip("%lld tokens: the engine keeps only block-pooled maps at this length", (long long)a->T);
  ImGui::SameLine();
  ImGui::Checkbox("block grid", &ui.show_grid);
  ImGui::SameLine();
  ImGui::Checkbox("selected blocks", &ui.show_selection);
  ImGui::SameLine();
  if (ImGui::Button("reset view")) ui.view = MapView{};
  ImGui::SameLine();
  ImGui::TextDisabled("zoom %.1fx", ui.view.zoom);
  ImGui::SameLine();
  ImGui::BeginDisabled(!ui.session);
  // Probe, k, block size and inference changes re-analyse by themselves; this
  // is for "now, on the current weights" between the automatic analyses.
  if (ImGui::SmallButton("re-analyse")) ui.session->request_analysis();
  ImGui::EndDisabled();

  MapWidget& w = map_widget();
  w.update(a, MapRequest{ui.layer, ui.head, ui.mean_heads, ui.kind, ui.prefer_tokens}, ui.scale);
  if (a) {
    const MapImage& m = w.image();
    ImGui::TextDisabled("T %lld  %s  block %d  k %d  %s inference  step %lld", (long long)a->T,
                        m.token_level ? "token level" : ("cells of " + std::to_string(m.cell_size) + " tokens").c_str(),
                        a->spec.block_size, a->spec.top_k, to_string(a->inference),
                        ui.snap ? (long long)ui.snap->step : 0LL);
  } else {
    ImGui::TextDisabled("waiting for the first analysis of the probe text");
  }

  ImVec2 avail = ImGui::GetContentRegionAvail();
  float size = std::max(64.0f, std::min(avail.x - 80.0f, avail.y - 4.0f));
  ui.map_rect = w.draw("attn", ui, size, true);
  ImGui::SameLine();
  w.draw_colorbar(size);
  ImGui::End();
}

}  // namespace ssalab::views
