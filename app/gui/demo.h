// The scripted demo (`ssalab gui --demo DIR`): drives the real app through a
// fixed sequence, one step per frame so the UI keeps drawing, and leaves in
// DIR what a reviewer (or tests/views/test_gui_demo.cpp) needs:
//   NN_<stage>.png      full-window screenshots at each stage
//   map_*.png           the map exported through the Export code path
//   metrics.csv, layers.csv
//   frame_times.csv     phase, probe tokens, frame, wall ms, main-thread CPU ms
//   summary.json        median / p99 frame time per probe length and phase,
//                       the UI thread's CPU time per part of the frame (each
//                       panel, rendering, the swap), the longest frames of the
//                       whole run with their parts, the time from start-up
//                       to the first drawn frame, the map's pixel
//                       rectangle in every screenshot, stages
// Sequence: wait for the session, train some steps, set a short probe, pin a
// query, show the sparse map at k and at 2k, halve the block size, show the
// dropped mass, export, save a checkpoint and show it in Compare, then an
// 8192-token probe. At each probe length frames are timed while training runs
// ("live") and while it is paused. Wall time per frame includes waiting for a
// core (2 cores shared with training); CPU time is the frame's own cost.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "app/gui/gui.h"
#include "views/ui_state.h"

namespace ssalab {

// What one frame cost the UI thread, poll to swap: wall and CPU ms in all,
// and per part (a panel's Draw function, ImGui's render, the swap).
struct FramePart {
  const char* name;
  double wall_ms, cpu_ms;
};
struct FrameCost {
  double wall_ms = 0, cpu_ms = 0;
  int vertices = 0;  // ImGui's vertex count: software GL transforms them on this thread
  // The UI thread's page faults and involuntary context switches in the frame
  // (getrusage): where a frame's CPU time comes from outside its own work.
  long minor_faults = 0, preempted = 0;
  std::vector<FramePart> parts;
};

class Demo {
 public:
  Demo(const GuiOptions& opt, views::UiState& ui);
  ~Demo();
  // Called once per frame after rendering, before the swap (the back buffer
  // holds this frame). `previous`: what the previous frame cost. Returns true
  // when the demo is over.
  bool after_render(int fb_width, int fb_height, float scale_x, float scale_y, const FrameCost& previous);
  // Start-up (libraries loaded, before main) to the end of the first frame's
  // swap, in ms (the main loop reports it once).
  void first_frame_drawn(double ms_since_start);
  int exit_code() const;
  bool measuring() const;  // timing frames now: the main loop must not idle
  // Where the demo puts the mouse (window coordinates); x < 0: no mouse.
  void mouse(float* x, float* y) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssalab
