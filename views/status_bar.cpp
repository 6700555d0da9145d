// Frame-level pieces: the menu bar (panel toggles, layout reset), the status
// bar (run state, pinned query with an unpin button, newest message), the
// message log, the default window layout, and releasing GL resources.
#include <imgui.h>

#include <algorithm>
#include <cstring>

#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

// Default placement as fractions of the area between menu bar and status bar.
struct Placement {
  const char* name;
  float x, y, w, h;
};
const Placement kLayout[] = {
    {"Controls", 0.000f, 0.00f, 0.225f, 0.47f},
    {"Export", 0.000f, 0.47f, 0.225f, 0.12f},
    {"Text probe", 0.000f, 0.59f, 0.225f, 0.41f},
    {"Attention map", 0.225f, 0.00f, 0.390f, 0.63f},
    {"Selected blocks", 0.225f, 0.63f, 0.390f, 0.37f},
    {"Curves", 0.615f, 0.00f, 0.385f, 0.43f},
    {"Per-layer metrics", 0.615f, 0.43f, 0.385f, 0.27f},
    {"Compare", 0.615f, 0.70f, 0.385f, 0.30f},
    {"Log", 0.300f, 0.30f, 0.400f, 0.30f},
    {"Paradox", 0.100f, 0.04f, 0.800f, 0.90f},  // floats over the rest; close it to see them
    {"Open model", 0.200f, 0.08f, 0.600f, 0.60f},
    {"Generate", 0.150f, 0.05f, 0.700f, 0.85f},
};
int g_layout_frame = -1;
const float kStatusHeight = 26.0f;

}  // namespace

void ResetLayout() { g_layout_frame = ImGui::GetFrameCount(); }

// Called by each panel right before its Begin(): the first-run placement.
void PlaceNextWindow(const char* name) {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  const float top = ImGui::GetFrameHeight();
  const float area_h = vp->Size.y - top - kStatusHeight;
  for (const Placement& p : kLayout)
    if (std::strcmp(p.name, name) == 0) {
      const bool force = g_layout_frame >= 0 && ImGui::GetFrameCount() <= g_layout_frame + 1;
      const ImGuiCond cond = force ? ImGuiCond_Always : ImGuiCond_FirstUseEver;
      ImGui::SetNextWindowPos(ImVec2(vp->Pos.x + p.x * vp->Size.x, vp->Pos.y + top + p.y * area_h), cond);
      ImGui::SetNextWindowSize(ImVec2(p.w * vp->Size.x, p.h * area_h), cond);
      return;
    }
}

void DrawMenuBar(UiState& ui) {
  if (!ImGui::BeginMainMenuBar()) return;
  if (ImGui::BeginMenu("File")) {
    if (ImGui::MenuItem("Open model...")) ui.show_open_model = true;
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("View")) {
    ImGui::MenuItem("Open model", nullptr, &ui.show_open_model);
    ImGui::MenuItem("Controls", nullptr, &ui.show_controls);
    ImGui::MenuItem("Text probe", nullptr, &ui.show_probe);
    ImGui::MenuItem("Attention map", nullptr, &ui.show_map);
    ImGui::MenuItem("Selected blocks", nullptr, &ui.show_blocks);
    ImGui::MenuItem("Per-layer metrics", nullptr, &ui.show_layers);
    ImGui::MenuItem("Curves", nullptr, &ui.show_curves);
    ImGui::MenuItem("Compare", nullptr, &ui.show_compare);
    ImGui::MenuItem("Paradox", nullptr, &ui.show_paradox);
    ImGui::MenuItem("Export", nullptr, &ui.show_export);
    ImGui::MenuItem("Generate", nullptr, &ui.show_generate);
    ImGui::MenuItem("Log", nullptr, &ui.show_log);
    ImGui::Separator();
    if (ImGui::MenuItem("Reset layout")) ResetLayout();
    ImGui::EndMenu();
  }
  if (ImGui::BeginMenu("Help")) {
    ImGui::TextUnformatted("Map: wheel zooms, drag pans, click pins the query of a row,\n"
                           "right click or Esc unpins, double click resets the view.\n"
                           "Curves: wheel zooms the step range, drag pans, double click fits.\n"
                           "Entropy is in nats. AttnSparsity = full-attention mass inside the\n"
                           "query's top-k blocks; dropped = 1 - AttnSparsity.");
    ImGui::EndMenu();
  }
  if (ui.snap) {
    ImGui::SameLine(ImGui::GetWindowWidth() - 330);
    ImGui::TextDisabled("%s  %d layers x %d heads  %.2fM params", to_string(ui.snap->train.method),
                        ui.snap->model.num_layers, ui.snap->model.num_heads,
                        double(ui.snap->model.num_parameters()) / 1e6);
  }
  ImGui::EndMainMenuBar();
}

void DrawStatusBar(UiState& ui) {
  const ImGuiViewport* vp = ImGui::GetMainViewport();
  ImGui::SetNextWindowPos(ImVec2(vp->Pos.x, vp->Pos.y + vp->Size.y - kStatusHeight));
  ImGui::SetNextWindowSize(ImVec2(vp->Size.x, kStatusHeight));
  ImGui::PushStyleVar(ImGuiStyleVar_WindowPadding, ImVec2(8, 4));
  ImGui::Begin("##status", nullptr,
               ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                   ImGuiWindowFlags_NoFocusOnAppearing | ImGuiWindowFlags_NoBringToFrontOnFocus);
  if (ui.snap) {
    ImGui::Text("%s  step %lld/%lld", to_string(ui.snap->state), (long long)ui.snap->step,
                (long long)ui.snap->total_steps);
    if (!ui.snap->status.empty()) {
      ImGui::SameLine();
      ImGui::TextDisabled("| %s", ui.snap->status.c_str());
    }
  } else {
    ImGui::TextDisabled("%s", ui.session_problem.empty() ? "starting..." : ui.session_problem.c_str());
  }
  if (ui.snap && ui.snap->analysis) {
    // what the last analysis cost: what turning k or the block size costs here
    const Analysis& a = *ui.snap->analysis;
    ImGui::SameLine();
    ImGui::TextDisabled("| analysed %lld tokens in %.2f s%s%s", (long long)a.T, a.seconds,
                        a.qk_reused ? " (selection only, on kept q and k)" : "",
                        a.bf16_autocast ? " (fp32 model, bf16 autocast forward)" : "");
  }
  if (ui.snap && !ui.snap->attention_fallback.empty()) {
    // the kernels were asked for and the reference path ran: say so, once, here
    ImGui::SameLine();
    ImGui::TextColored(ImVec4(1, 0.7f, 0.3f, 1), "| attention on the reference path");
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", ui.snap->attention_fallback.c_str());
  }
  if (ui.pinned >= 0) {
    ImGui::SameLine();
    ImGui::TextColored(ImVec4(1, 0.35f, 0.6f, 1), "| pinned query %lld", (long long)ui.pinned);
    ImGui::SameLine();
    if (ImGui::SmallButton("unpin")) ui.pinned = -1;
  }
  if (!ui.log.empty()) {
    const Message& m = ui.log.back();
    ImGui::SameLine();
    ImGui::TextColored(m.error ? ImVec4(1, 0.4f, 0.4f, 1) : ImVec4(0.7f, 0.8f, 0.7f, 1), "| %s", m.text.c_str());
    ImGui::SameLine();
    if (ImGui::SmallButton("log")) ui.show_log = !ui.show_log;
  }
  // median of the last 60 frames' own time (poll to swap; idle waits excluded)
  double frame = 0;
  if (!ui.frame_ms.empty()) {
    size_t n = std::min<size_t>(60, ui.frame_ms.size());
    frame = percentile(std::vector<double>(ui.frame_ms.end() - n, ui.frame_ms.end()), 50);
  }
  ImGui::SameLine(ImGui::GetWindowWidth() - 110);
  ImGui::TextDisabled("frame %.1f ms", frame);
  ImGui::End();
  ImGui::PopStyleVar();

  if (ui.show_log) {
    PlaceNextWindow("Log");
    if (ImGui::Begin("Log", &ui.show_log)) {
      if (ImGui::SmallButton("clear")) ui.log.clear();
      for (const Message& m : ui.log)
        ImGui::TextColored(m.error ? ImVec4(1, 0.4f, 0.4f, 1) : ImVec4(0.8f, 0.8f, 0.8f, 1), "[%7.1f s] %s", m.time,
                           m.text.c_str());
      if (ImGui::GetScrollY() >= ImGui::GetScrollMaxY()) ImGui::SetScrollHereY(1.0f);
    }
    ImGui::End();
  }
}

void ShutdownViews() {
  ReleaseAttentionMap();
  ReleaseCompare();
  ReleaseParadox();
  ReleaseSelectedBlocks();
}

void JoinViewWorkers() {
  JoinOpenModelWorkers();
  JoinCompareWorkers();
  JoinParadoxWorkers();
}

}  // namespace ssalab::views
