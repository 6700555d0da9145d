// Entry point of the desktop app (Dear ImGui + GLFW + OpenGL 3). The CLI
// (app/cli/main.cpp) calls run_gui() for `ssalab` with no arguments and for
// `ssalab gui ...`.
#pragma once
#include <string>

#include "engine/session/session.h"

namespace ssalab {

struct GuiOptions {
  SessionOptions session;          // what to train/load (the CLI fills it)
  std::string compare_checkpoint;  // optional second model for the Compare view
  std::string demo_dir;            // non-empty: run the scripted demo, write screenshots + frame times here, then exit
  int demo_tokens = 512;           // probe length used by the demo (the second length is 8192)
};

int run_gui(const GuiOptions& opt);  // returns a process exit code

}  // namespace ssalab
