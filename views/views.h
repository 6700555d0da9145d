// The panels of the desktop app, one Draw...() function per file in views/.
// The main loop (app/gui/gui_main.cpp) calls BeginFrameState() and then each
// of these once per frame, top to bottom; none of them blocks on the engine.
//
//   DrawMenuBar        views/status_bar.cpp     View menu (panel toggles), layout reset
//   DrawControls       views/controls.cpp       run / method / inference k and block size / save+load
//   DrawTextProbe      views/text_probe.cpp     probe text, its tokens, pin a query
//   DrawAttentionMap   views/attention_map.cpp  the map texture + overlays
//   DrawSelectedBlocks views/selected_blocks.cpp block scores / picks / mass of one query
//   DrawLayerMetrics   views/layer_metrics.cpp  layer x head heatmap of the analysis statistics
//   DrawCurves         views/curves.cpp         training curves from Snapshot::history
//   DrawCompare        views/compare.cpp        a checkpoint beside the live model
//   DrawParadox        views/paradox.cpp        any models side by side (default: the three shipped), one k for all
//   DrawOpenModel      views/open_model.cpp     path / hub id, the local HF cache, recent models; load progress
//   DrawGenerate       views/generate.cpp       prompt, streamed tokens, what the token being generated attends to
//   DrawExport         views/export.cpp         PNG / CSV / JSON export
//   DrawStatusBar      views/status_bar.cpp     run state, pinned query, last message
#pragma once
#include <future>
#include <string>

#include "views/ui_state.h"

namespace ssalab::views {

void DrawMenuBar(UiState& ui);
void DrawControls(UiState& ui);
void DrawTextProbe(UiState& ui);
void DrawAttentionMap(UiState& ui);
void DrawSelectedBlocks(UiState& ui);
void DrawLayerMetrics(UiState& ui);
void DrawCurves(UiState& ui);
void DrawCompare(UiState& ui);
void DrawParadox(UiState& ui);
void DrawOpenModel(UiState& ui);
void DrawGenerate(UiState& ui);
// Asks the session to open `source` (a folder or a cached hub id); the Open
// model panel follows the load and remembers it among the recent models.
// Returns the session's load ticket (Snapshot::loads_done), 0 without a session.
uint64_t OpenModel(UiState& ui, const std::string& source);
// Paradox: adds a model (folder or hub id) as one more column.
void ParadoxAdd(UiState& ui, const std::string& source);
void DrawExport(UiState& ui);
// The device models opened by the views (Open Model, Compare, Paradox) go to:
// "auto", "cpu" or "cuda", as the session's train.device. Call before loading.
void SetModelsDevice(const std::string& device);
// Paradox: load the shipped FullAttn/MoBA/SSA models from dir/{full,moba,ssa}
// (no-op when absent or already loaded).
void ParadoxLoad(const std::string& dir);
// Paradox: removes every column and loads the shipped three from dir again.
// Returns false (nothing done yet) while a column is still loading or
// analysing; call again on a later frame.
bool ParadoxReset(const std::string& dir);
// Whether all Paradox models have analysed the probe.
bool ParadoxReady();
void DrawStatusBar(UiState& ui);

// Releases GL textures held by the panels; call before the GL context goes.
void ShutdownViews();
// Waits for the panels' worker threads (Compare's checkpoint load / analysis);
// may take as long as an analysis.
void JoinViewWorkers();

// Puts every panel back to its default place (View > Reset layout); the
// default also applies to panels the ini file does not know yet.
void ResetLayout();

// Compare: start loading this checkpoint (path may be empty: clears it).
void CompareLoad(UiState& ui, const std::string& path);
// Whether the compare model has finished its analysis of the current probe.
bool CompareReady();

// Export (also used by the scripted demo). Each returns "" or the error text.
// The map as shown, colormapped; encoded and written on a background worker.
std::future<std::string> ExportMapPng(const std::string& path);
std::string ExportMetricsCsv(const UiState& ui, const std::string& path);   // Snapshot::history
std::string ExportMetricsJson(const UiState& ui, const std::string& path);  // history + analysis stats
std::string ExportLayerCsv(const UiState& ui, const std::string& path);     // per layer/head stats
// Saves a rectangle of the framebuffer that was just rendered (y down, ImGui
// coordinates) or the whole framebuffer; called by the main loop after
// rendering. The pixels are read at once; encoding and the (atomic) write run
// on a background worker, whose future says "" or the error.
std::future<std::string> SaveFramebufferPng(const std::string& path, const ScreenRect* rect, int fb_width,
                                            int fb_height, float scale_x, float scale_y);

// Why `spec` cannot run for this session on a probe of T tokens ("" = it can):
// the attention's own check plus the training config's (k blocks must fit in
// seq_len while a sparse method trains). What Controls greys out.
std::string SpecProblem(const Snapshot& snap, const SparseSpec& spec, int64_t T);

// Settings the map uses, for Compare/Export/demo.
struct MapWidgetInfo {
  bool ready = false;
  int n = 0, cell_size = 1;
  long long T = 0;
  int uploads = 0;
};
MapWidgetInfo CurrentMapInfo();

}  // namespace ssalab::views
