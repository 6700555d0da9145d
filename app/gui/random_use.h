// The app under random use (`ssalab gui --random-use DIR`): for a set time
// the real app gets random input — pointer moves, clicks, drags, wheel turns,
// key presses and typed text, aimed mostly inside the open panels so that
// buttons, sliders and text boxes are hit — while training runs, and every
// second or two something a user would do through a panel: load and unload
// models (Open model, Compare, Paradox), change k, block size, method or the
// probe, pause and resume, save, export, close and reopen panels, including
// settings the engine must refuse and paths that do not exist.
//
// It checks what a long session must hold: no crash (the process ends with
// 0; the crash handler prints a backtrace otherwise), no hang (no frame over
// a second; a UI thread stuck for 30 s is aborted with its backtrace) and
// steady memory (resident size sampled twice a second). Results in DIR:
//   summary.json   actions by kind, frames, longest frames with the actions
//                  before them, resident memory (start, peak, per third)
//   actions.csv    every action with its time
//   rss.csv        resident memory over time
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "app/gui/demo.h"  // FrameCost
#include "views/ui_state.h"

struct ImGuiIO;

namespace ssalab {

class RandomUse {
 public:
  // `models_dir`: the shipped models (assets/models), absolute.
  RandomUse(const GuiOptions& opt, views::UiState& ui, std::string models_dir);
  ~RandomUse();
  // Once per frame after the backends' NewFrame and before ImGui::NewFrame:
  // sets this frame's synthetic pointer, buttons, keys and text.
  void input(ImGuiIO& io, float window_w, float window_h);
  // Once per frame after rendering, with the previous frame's cost. Returns
  // true when the time is up (summary written).
  bool after_frame(const FrameCost& previous);
  int exit_code() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssalab
