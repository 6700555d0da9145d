#include "views/ui_state.h"

#include <imgui.h>

#include <algorithm>

namespace ssalab::views {

const char* to_string(MapKind k) {
  switch (k) {
    case MapKind::Full: return "full";
    case MapKind::Sparse: return "sparse";
    case MapKind::Dropped: return "dropped";
  }
  return "?";
}

namespace {
void push(UiState& ui, bool error, const std::string& text) {
  double now = ImGui::GetCurrentContext() ? ImGui::GetTime() : 0.0;
  ui.log.push_back({now, error, text});
  while (ui.log.size() > 200) ui.log.pop_front();
}
}  // namespace

void UiState::info(const std::string& text) { push(*this, false, text); }
void UiState::error(const std::string& text) { push(*this, true, text); }

void BeginFrameState(UiState& ui) {
  ui.hovered = ui.hover_next;
  ui.hover_next = -1;
  std::string prev_error = ui.snap ? ui.snap->error : std::string();
  ui.snap = ui.session ? ui.session->snapshot() : nullptr;
  if (!ui.snap) return;
  if (!ui.snap->error.empty() && ui.snap->error != prev_error) ui.error(ui.snap->error);
  const Analysis* a = ui.snap->analysis.get();
  if (a && a != ui.last_analysis) {
    ui.last_analysis = a;
    // the trend only compares analyses of the same text length
    if (!ui.analysis_history.empty() && ui.analysis_history.back().T != a->T) ui.analysis_history.clear();
    if (ui.analysis_history.empty() || ui.snap->step != ui.analysis_history.back().step)
      ui.analysis_history.push_back({ui.snap->step, a->T, a->mean_sparsity(), a->mean_entropy()});
    // keep the pinned query valid for the new text
    if (ui.pinned >= a->T) ui.pinned = -1;
    ui.layer = std::min(ui.layer, std::max(0, a->num_layers - 1));
    ui.head = std::min(ui.head, std::max(0, a->num_heads - 1));
  }
}

}  // namespace ssalab::views
