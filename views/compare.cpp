// Compare: the session's model and a second model (an ssalab checkpoint, a
// model folder or a cached hub id) side by side, on the same probe with the
// same inference settings (k, block size, full/sparse). The second model
// reads the probe with its own tokenizer.
// The checkpoint is loaded and analysed on the app's background workers
// (engine/util/background.h); the panel polls the futures and never waits.
// A future no longer wanted (a new load while one runs) is simply dropped.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <chrono>
#include <future>

#include "engine/checkpoint/checkpoint.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/background.h"
#include "views/map_widget.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

struct CompareState {
  std::string path;
  std::future<std::shared_ptr<OpenedModel>> loading;
  std::shared_ptr<OpenedModel> model;
  std::string error;
  std::future<std::shared_ptr<const Analysis>> analyzing;
  std::shared_ptr<const Analysis> analysis;   // of the checkpoint
  const Analysis* matched = nullptr;          // the session analysis it was requested for
  std::string token_note;
  bool shared_range = true;
  std::unique_ptr<MapWidget> left, right;
};
CompareState g_compare;

// Tokens for the second model: the session's ids when its tokenizer names
// them with the same pieces (same vocabulary), else the probe text encoded
// with its own tokenizer.
std::vector<int> tokens_for_checkpoint(const Snapshot& snap, const Analysis& a, std::string* note) {
  const tokenizer::Tokenizer& tok = *g_compare.model->tok;
  bool same = int64_t(snap.probe_pieces.size()) == a.T;
  for (size_t i = 0; same && i < a.tokens.size(); ++i)
    same = a.tokens[i] >= 0 && a.tokens[i] < g_compare.model->ck.config.vocab_size &&
           tok.id_to_token(a.tokens[i]) == snap.probe_pieces[i];
  if (same) {
    note->clear();
    return a.tokens;
  }
  std::vector<int> ids = g_compare.model->encode(snap.probe_text, size_t(a.T));
  *note = "the second model's tokenizer differs: text re-encoded (" + std::to_string(ids.size()) + " tokens vs " +
          std::to_string(a.T) + ")";
  return ids;
}

void start_analysis(const Snapshot& snap, const std::shared_ptr<const Analysis>& a) {
  AnalysisRequest req;
  req.tokens = tokens_for_checkpoint(snap, *a, &g_compare.token_note);
  req.inference = a->inference;
  req.spec = a->spec;
  req.token_map_limit = a->layers.empty() || a->layers[0].token_full.empty() ? 0 : int(a->T);
  req.max_cells = std::max(1, a->n_cells);
  g_compare.matched = a.get();
  auto model = g_compare.model;
  g_compare.analyzing = background_workers().submit([model, req]() -> std::shared_ptr<const Analysis> {
    return std::make_shared<const Analysis>(analyze(*model->ck.model, req));
  });
}

}  // namespace

void ReleaseCompare() {
  g_compare.left.reset();  // GL textures: now, while the context exists
  g_compare.right.reset();
}

void JoinCompareWorkers() {
  background_workers().wait_idle();
  g_compare = CompareState{};
}

void CompareLoad(UiState& ui, const std::string& path) {
  g_compare.analyzing = {};  // results of the previous checkpoint, if still coming, are dropped
  g_compare.loading = {};
  g_compare.model.reset();
  g_compare.analysis.reset();
  g_compare.matched = nullptr;
  g_compare.error.clear();
  g_compare.path = path;
  if (path.empty()) return;
  g_compare.loading = background_workers().submit([path] { return open_with_tokenizer(path); });
  ui.info("loading " + path + " for Compare");
}

bool CompareReady() { return g_compare.analysis && !g_compare.analyzing.valid(); }

void DrawCompare(UiState& ui) {
  // Poll the workers even when the window is hidden.
  if (is_ready(g_compare.loading)) {
    try {
      g_compare.model = g_compare.loading.get();
      ui.info("Compare: loaded " + g_compare.path);
    } catch (const std::exception& e) {
      g_compare.error = std::string("cannot load ") + g_compare.path + ": " + e.what();
      ui.error(g_compare.error);
    }
  }
  if (is_ready(g_compare.analyzing)) {
    try {
      g_compare.analysis = g_compare.analyzing.get();
      g_compare.error.clear();
    } catch (const std::exception& e) {
      g_compare.error = std::string("analysis of the checkpoint failed: ") + e.what();
      ui.error(g_compare.error);
    }
  }
  std::shared_ptr<const Analysis> live = ui.snap ? ui.snap->analysis : nullptr;
  if (g_compare.model && live && !g_compare.analyzing.valid() && g_compare.matched != live.get()) {
    // Re-analyse when the text or the settings changed (the checkpoint's weights do not).
    const Analysis* o = g_compare.analysis.get();
    bool same_request = o && o->spec.top_k == live->spec.top_k && o->spec.block_size == live->spec.block_size &&
                        o->inference == live->inference && g_compare.token_note.empty() && o->tokens == live->tokens;
    if (same_request) {
      g_compare.matched = live.get();
    } else {
      try {
        start_analysis(*ui.snap, live);
      } catch (const std::exception& e) {
        g_compare.matched = live.get();  // retry when the probe or the settings change
        g_compare.error = std::string("cannot start the analysis: ") + e.what();
        ui.error(g_compare.error);
      }
    }
  }

  if (!ui.show_compare) return;
  PlaceNextWindow("Compare");
  if (!ImGui::Begin("Compare", &ui.show_compare, ImGuiWindowFlags_NoScrollWithMouse)) {
    ImGui::End();
    return;
  }
  static std::string path_edit;
  if (path_edit.empty() && !g_compare.path.empty()) path_edit = g_compare.path;
  ImGui::SetNextItemWidth(std::max(120.0f, ImGui::GetContentRegionAvail().x - 190));
  ImGui::InputTextWithHint("##cmp", "model folder or cached hub id to compare with", &path_edit);
  ImGui::SameLine();
  ImGui::BeginDisabled(path_edit.empty() || g_compare.loading.valid());
  if (ImGui::Button("load")) CompareLoad(ui, path_edit);
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::BeginDisabled(!g_compare.model && !g_compare.loading.valid());
  if (ImGui::Button("clear")) CompareLoad(ui, "");
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::Checkbox("same scale", &g_compare.shared_range);

  if (g_compare.loading.valid()) ImGui::TextDisabled("loading %s ...", g_compare.path.c_str());
  else if (g_compare.analyzing.valid()) ImGui::TextDisabled("analysing the probe with the checkpoint ...");
  if (!g_compare.error.empty()) ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "%s", g_compare.error.c_str());
  if (!g_compare.token_note.empty()) ImGui::TextColored(ImVec4(1, 0.7f, 0.3f, 1), "%s", g_compare.token_note.c_str());
  if (!g_compare.model && !g_compare.loading.valid()) {
    ImGui::TextDisabled("load a model to see it beside the session's on the same text and settings");
    ImGui::End();
    return;
  }

  if (!g_compare.left) g_compare.left = std::make_unique<MapWidget>();
  if (!g_compare.right) g_compare.right = std::make_unique<MapWidget>();
  MapRequest req{ui.layer, ui.head, ui.mean_heads, ui.kind, ui.prefer_tokens};
  std::shared_ptr<const Analysis> right = g_compare.analysis;
  if (right && !right->layers.empty()) req.layer = std::min(req.layer, int(right->layers.size()) - 1);
  g_compare.left->set_image(live, req, ui.scale);
  g_compare.right->set_image(right, req, ui.scale);
  if (g_compare.shared_range && g_compare.left->ready() && g_compare.right->ready()) {
    Range a = g_compare.left->own_range(), b = g_compare.right->own_range();
    Range r{std::min(a.lo, b.lo), std::max(a.hi, b.hi)};
    g_compare.left->set_colors(&r);
    g_compare.right->set_colors(&r);
  } else {
    g_compare.left->set_colors();
    g_compare.right->set_colors();
  }

  const float table_h = 4 * ImGui::GetTextLineHeightWithSpacing();
  ImVec2 avail = ImGui::GetContentRegionAvail();
  float size = std::max(48.0f, std::min((avail.x - 90) * 0.5f - 8, avail.y - table_h - ImGui::GetTextLineHeightWithSpacing()));
  ImGui::BeginGroup();
  ImGui::Text("session model, step %lld", ui.snap ? (long long)ui.snap->step : 0LL);
  g_compare.left->draw("left", ui, size, true);
  ImGui::EndGroup();
  ImGui::SameLine();
  ImGui::BeginGroup();
  std::string title = g_compare.path;
  if (g_compare.model && g_compare.model->ck.state) title += ", step " + std::to_string(g_compare.model->ck.state->step);
  ImGui::TextUnformatted(title.c_str());
  g_compare.right->draw("right", ui, size, true);
  ImGui::EndGroup();
  ImGui::SameLine();
  g_compare.right->draw_colorbar(size);

  if (live && right && ImGui::BeginTable("cmp", 3, ImGuiTableFlags_Borders | ImGuiTableFlags_SizingStretchSame)) {
    ImGui::TableSetupColumn("");
    ImGui::TableSetupColumn("session");
    ImGui::TableSetupColumn("second model");
    ImGui::TableHeadersRow();
    auto row = [](const char* name, double l, double r) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(name);
      ImGui::TableNextColumn();
      ImGui::Text("%.4f", l);
      ImGui::TableNextColumn();
      ImGui::Text("%.4f", r);
    };
    row("mean AttnSparsity", live->mean_sparsity(), right->mean_sparsity());
    row("mean entropy (nats)", live->mean_entropy(), right->mean_entropy());
    ImGui::EndTable();
  }
  ImGui::End();
}

}  // namespace ssalab::views
