// Open model: a path or hub id field, the models in the local Hugging Face
// cache (name, architecture, parameters, size on disk) and the recently
// opened ones. Opening hands the source to the Session, which loads it on its
// worker (progress bar, Cancel); a cached or recent model can also go to
// Compare or join the Paradox panel. The cache listing reads config.json and
// the safetensors headers only, on the background workers.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cstdio>
#include <future>
#include <mutex>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/hub/hub.h"
#include "engine/train/trainer.h"
#include "engine/util/background.h"
#include "engine/util/files.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

constexpr size_t kMaxRecent = 12;

struct CacheRow {
  CachedModel model;
  int64_t parameters = 0;  // 0: unknown
  std::string problem;     // why ssalab cannot open it ("" = it can)
};

struct OpenModelState {
  std::string source;   // the text field
  std::string run_dir;  // the attach field
  std::string pending;      // asked of the session, waiting for its answer
  uint64_t pending_ticket = 0;
  std::string error;    // the last open that failed
  std::vector<std::string> recent;
  bool recent_read = false;
  std::future<std::vector<CacheRow>> listing;
  std::vector<CacheRow> cached;
  bool listed = false;
};
OpenModelState g_open;

std::string recent_path() {
  std::string dir = user_config_dir();
  return dir.empty() ? "" : dir + "/recent_models.json";
}

void read_recent() {
  g_open.recent_read = true;
  const std::string path = recent_path();
  if (path.empty() || !file_exists(path)) return;
  try {
    for (const auto& s : nlohmann::json::parse(read_file(path))) g_open.recent.push_back(s.get<std::string>());
  } catch (const std::exception&) {
    g_open.recent.clear();  // an unreadable list is only a convenience lost
  }
}

void remember(UiState& ui, const std::string& source) {
  g_open.recent.erase(std::remove(g_open.recent.begin(), g_open.recent.end(), source), g_open.recent.end());
  g_open.recent.insert(g_open.recent.begin(), source);
  if (g_open.recent.size() > kMaxRecent) g_open.recent.resize(kMaxRecent);
  const std::string path = ui.persist_settings ? recent_path() : "";
  if (path.empty()) return;
  try {
    write_file_atomic(path, nlohmann::json(g_open.recent).dump(1) + "\n");
  } catch (const std::exception& e) {
    ui.error(std::string("cannot save the recent models list: ") + e.what());
  }
}

std::vector<CacheRow> list_cache() {
  std::vector<CacheRow> rows;
  LoadOptions quiet;  // only the parameter count is read: no plan printed for each listed model
  quiet.on_plan = [](const LoadPlan&) {};
  for (CachedModel& m : list_cached_models()) {
    CacheRow r;
    r.model = std::move(m);
    try {
      r.parameters = plan_checkpoint(r.model.dir, quiet).parameters;
    } catch (const std::exception& e) {
      r.problem = e.what();
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string size_text(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(1ull << 30));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / double(1ull << 20));
  return buf;
}

// The buttons of one row: open here, in Compare, in the Paradox panel.
void row_actions(UiState& ui, const std::string& source, bool can_open) {
  ImGui::PushID(source.c_str());
  ImGui::BeginDisabled(!can_open || !ui.session);
  if (ImGui::SmallButton("open")) OpenModel(ui, source);
  ImGui::SameLine();
  if (ImGui::SmallButton("compare")) {
    CompareLoad(ui, source);
    ui.show_compare = true;
  }
  ImGui::SameLine();
  if (ImGui::SmallButton("paradox")) {
    ParadoxAdd(ui, source);
    ui.show_paradox = true;
  }
  ImGui::EndDisabled();
  ImGui::PopID();
}

// Attach to a run another process trains (a cluster job writing to a shared
// disk, `ssalab train` in a terminal): the session follows its folder.
void draw_attach(UiState& ui, const Snapshot* snap) {
  ImGui::Text("Attach to a training run");
  if (snap && !snap->attached_run.empty()) {
    ImGui::TextWrapped("Following %s: step %lld of %lld; the views show %s.", snap->attached_run.c_str(),
                       (long long)snap->step, (long long)snap->total_steps,
                       snap->attached_checkpoint_step >= 0
                           ? ("its checkpoint of step " + std::to_string(snap->attached_checkpoint_step)).c_str()
                           : "nothing yet (no checkpoint written)");
    if (!snap->attach_problem.empty())
      ImGui::TextColored(ImVec4(1, 0.6f, 0.3f, 1), "latest checkpoint: %s", snap->attach_problem.c_str());
    if (ImGui::Button("detach")) ui.session->detach();
    return;
  }
  ImGui::SetNextItemWidth(-110);
  const bool enter = ImGui::InputTextWithHint("##run", "run folder (metrics.jsonl, checkpoint/)", &g_open.run_dir,
                                              ImGuiInputTextFlags_EnterReturnsTrue);
  ImGui::SameLine();
  ImGui::BeginDisabled(g_open.run_dir.empty() || !ui.session);
  if (ImGui::Button("attach", ImVec2(-1, 0)) || (enter && !g_open.run_dir.empty())) {
    ui.session->attach(g_open.run_dir);
    ui.info("attaching to " + g_open.run_dir);
  }
  ImGui::EndDisabled();
  ImGui::TextDisabled("read-only: the curves follow its metrics.jsonl, the views each new checkpoint");
}

}  // namespace

namespace {
// Where opened models go: the session's device (train.device), set once at
// start-up, so that Compare and Paradox analyse beside the session's model.
std::mutex g_models_device_mutex;
std::string g_models_device = "auto";
}  // namespace

void SetModelsDevice(const std::string& device) {
  std::lock_guard<std::mutex> lock(g_models_device_mutex);
  g_models_device = device;
}

std::shared_ptr<OpenedModel> open_with_tokenizer(const std::string& source) {
  // One load at a time: each load's memory check must see what the previous
  // one took (four 1B models at once would all pass it, then not fit).
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  auto om = std::make_shared<OpenedModel>();
  LoadOptions lo;
  {
    std::lock_guard<std::mutex> device_lock(g_models_device_mutex);
    lo.device = resolve_device(g_models_device);
  }
  om->ck = load_checkpoint(source, lo);
  try {
    om->tok = tokenizer::load_tokenizer(om->ck.dir);
  } catch (const tokenizer::TokenizerError& e) {
    throw Error(source + ": the probe is text, so the model's tokenizer is needed (" + e.what() + ")");
  }
  return om;
}

std::vector<int> OpenedModel::encode(const std::string& text, size_t limit) const {
  const bool ours = ck.tokenizer_json.empty();
  std::vector<int32_t> encoded = tok->encode(text, /*add_special_tokens=*/!ours);
  std::vector<int> ids(encoded.begin(), encoded.begin() + std::min(encoded.size(), limit));
  for (int id : ids)
    if (id >= ck.config.vocab_size)
      throw Error("token id " + std::to_string(id) + " is outside the model's vocabulary (" +
                  std::to_string(ck.config.vocab_size) + ")");
  return ids;
}

uint64_t OpenModel(UiState& ui, const std::string& source) {
  if (!ui.session || source.empty()) return 0;
  g_open.pending = source;
  g_open.error.clear();
  g_open.pending_ticket = ui.session->load(source);
  ui.info("opening " + source);
  return g_open.pending_ticket;
}

void JoinOpenModelWorkers() {
  if (g_open.listing.valid()) g_open.listing.wait();
  g_open = OpenModelState{};
}

void DrawOpenModel(UiState& ui) {
  if (!g_open.recent_read) read_recent();
  if (is_ready(g_open.listing)) {
    try {
      g_open.cached = g_open.listing.get();
    } catch (const std::exception& e) {
      ui.error(std::string("cannot list the HF cache: ") + e.what());
    }
  }
  const Snapshot* snap = ui.snap.get();
  // The session answers a pending open by a new model source or an error.
  if (!g_open.pending.empty() && snap && snap->loads_done >= g_open.pending_ticket) {
    if (snap->model_source == g_open.pending) {
      remember(ui, g_open.pending);
      g_open.pending.clear();
    } else {
      g_open.error = snap->error.empty() ? "the model did not open" : snap->error;
      g_open.pending.clear();
    }
  }
  if (!ui.show_open_model) return;
  PlaceNextWindow("Open model");
  if (!ImGui::Begin("Open model", &ui.show_open_model)) {
    ImGui::End();
    return;
  }
  if (!g_open.listed) {
    g_open.listed = true;
    g_open.listing = background_workers().submit(list_cache);
  }

  if (snap) {
    ImGui::TextWrapped("Open now: %s", snap->model_source.empty() ? "a fresh model (train it with Controls)"
                                                                   : snap->model_summary.c_str());
    if (!snap->tokenizer_info.empty()) ImGui::TextDisabled("tokenizer: %s", snap->tokenizer_info.c_str());
    if (!snap->trainable) ImGui::TextDisabled("open for inspection: analysis and inference settings, no training");
  }
  ImGui::SetNextItemWidth(-110);
  const bool enter = ImGui::InputTextWithHint("##source", "model folder or hub id (org/name), from the local cache",
                                              &g_open.source, ImGuiInputTextFlags_EnterReturnsTrue);
  ImGui::SameLine();
  const bool loading = snap && !snap->loading.empty();
  ImGui::BeginDisabled(g_open.source.empty() || loading || !ui.session);
  if (ImGui::Button("open", ImVec2(-1, 0)) || (enter && !g_open.source.empty())) OpenModel(ui, g_open.source);
  ImGui::EndDisabled();
  ImGui::TextDisabled("nothing is downloaded: hub ids are looked up in %s", hf_hub_cache_dir().c_str());

  if (loading) {
    char label[64];
    std::snprintf(label, sizeof label, "%.0f%%", 100 * std::max(0.0, snap->load_progress));
    ImGui::ProgressBar(float(std::max(0.0, snap->load_progress)), ImVec2(-80, 0), label);
    ImGui::SameLine();
    if (ImGui::Button("cancel", ImVec2(-1, 0))) ui.session->cancel_load();
    ImGui::TextWrapped("%s", snap->status.c_str());
  }
  if (!g_open.error.empty()) ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "%s", g_open.error.c_str());

  ImGui::Separator();
  draw_attach(ui, snap);

  ImGui::Separator();
  ImGui::Text("In the local HF cache");
  ImGui::SameLine();
  ImGui::BeginDisabled(g_open.listing.valid());
  if (ImGui::SmallButton("refresh")) g_open.listing = background_workers().submit(list_cache);
  ImGui::EndDisabled();
  if (g_open.listing.valid()) ImGui::TextDisabled("reading the cache ...");
  else if (g_open.cached.empty()) ImGui::TextDisabled("no models with a config.json in the cache");
  else if (ImGui::BeginTable("cached", 5, ImGuiTableFlags_Borders | ImGuiTableFlags_SizingStretchProp)) {
    for (const char* h : {"model", "architecture", "parameters", "on disk", ""}) ImGui::TableSetupColumn(h);
    ImGui::TableHeadersRow();
    for (const CacheRow& r : g_open.cached) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(r.model.hub_id.c_str());
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(r.model.architecture.empty() ? "?" : r.model.architecture.c_str());
      ImGui::TableNextColumn();
      if (r.parameters > 0) ImGui::Text("%.1fM", double(r.parameters) / 1e6);
      else ImGui::TextDisabled("-");
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(size_text(r.model.bytes_on_disk).c_str());
      ImGui::TableNextColumn();
      if (r.problem.empty()) {
        row_actions(ui, r.model.hub_id, !loading);
      } else {
        ImGui::TextDisabled("cannot open");
        if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", r.problem.c_str());
      }
    }
    ImGui::EndTable();
  }

  ImGui::Separator();
  ImGui::Text("Recent");
  if (g_open.recent.empty()) ImGui::TextDisabled("models opened here are listed here");
  for (const std::string& source : g_open.recent) {
    row_actions(ui, source, !loading);
    ImGui::SameLine();
    ImGui::TextUnformatted(source.c_str());
  }
  ImGui::End();
}

}  // namespace ssalab::views
