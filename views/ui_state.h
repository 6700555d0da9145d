// State shared by the panels of the desktop app.
//
// Every frame the main loop takes one Snapshot from the Session (a pointer
// copy) and hands it, with this UiState, to each Draw...() function. Panels
// never wait on the engine: they read the snapshot, queue commands, and hand
// slow work (checkpoint loading, analyses of a second model) to the app's
// background workers (engine/util/background.h), whose futures they poll.
//
// Cross-panel interaction goes through a few fields here: which layer/head the
// map shows, the pinned query (set by clicking the map or a token, cleared by
// the Unpin buttons, right click or Esc), and the hovered query. Panels write
// `hover_next` while drawing; the main loop moves it to `hovered` at the start
// of the next frame, so drawing order does not matter.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "engine/session/session.h"
#include "views/view_math.h"

namespace ssalab::views {

enum class MapKind { Full, Sparse, Dropped };
const char* to_string(MapKind k);

struct Message {
  double time = 0;  // seconds since start (ImGui::GetTime())
  bool error = false;
  std::string text;
};

// A rectangle of the framebuffer to save as PNG after the frame is rendered.
struct CaptureRequest {
  std::string path;
  bool whole_window = true;
  ScreenRect rect;  // in ImGui (window) coordinates when !whole_window
};

// One point per new analysis: how concentrated attention is over training.
struct AnalysisPoint {
  int64_t step = 0, T = 0;
  double sparsity = 0, entropy = 0;
};

struct UiState {
  Session* session = nullptr;             // null while starting, or when starting failed
  std::shared_ptr<const Snapshot> snap;   // this frame's snapshot (may be null)
  std::string session_problem;            // why there is no session

  // What the attention map shows (also used by Compare and Export).
  int layer = 0, head = 0;
  bool mean_heads = false;
  MapKind kind = MapKind::Full;
  Scale scale = Scale::Log;
  bool prefer_tokens = true;   // token level when the analysis kept token maps
  bool show_grid = true, show_selection = true;
  MapView view;                // zoom / pan, shared by the map and Compare

  // Queries.
  int64_t pinned = -1;         // -1: none
  int64_t hovered = -1;        // from the previous frame
  int64_t hover_next = -1;     // written by panels during this frame
  int64_t focus_query() const { return pinned >= 0 ? pinned : hovered; }

  // Messages for the status line / log.
  std::deque<Message> log;
  void info(const std::string& text);
  void error(const std::string& text);

  // Filled by panels, served by the main loop after rendering.
  std::vector<CaptureRequest> captures;
  ScreenRect curves_rect, map_rect;  // where those were drawn this frame

  // Series gathered by the UI itself.
  std::vector<AnalysisPoint> analysis_history;
  int64_t last_analysis_step = -1;
  const void* last_analysis = nullptr;

  // Frame timing: wall ms from poll to swap, newest last; the main loop appends.
  std::vector<float> frame_ms;

  // Panel visibility (View menu).
  bool show_map = true, show_blocks = true, show_layers = true, show_curves = true, show_controls = true,
       show_probe = true, show_compare = true, show_export = true, show_log = false,
       show_paradox = true, show_open_model = false, show_generate = false;
  // Off in the scripted demo: it leaves the user's settings (recent models) alone.
  bool persist_settings = true;
};

// Call once per frame before drawing: takes the snapshot, rolls the hover,
// records new analyses and engine errors.
void BeginFrameState(UiState& ui);

}  // namespace ssalab::views
