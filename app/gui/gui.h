// Entry point of the desktop app (Dear ImGui + GLFW + OpenGL 3). The CLI
// (app/cli/main.cpp) calls run_gui() for `ssalab` with no arguments and for
// `ssalab gui ...`.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/session/session.h"

namespace ssalab {

struct GuiOptions {
  SessionOptions session;          // what to train/load (the CLI fills it)
  std::string compare_checkpoint;  // optional second model for the Compare view
  std::string demo_dir;            // non-empty: run the scripted demo, write screenshots + frame times here, then exit
  int demo_tokens = 512;           // probe length used by the demo (the second length is 8192)
  // With a model to open (session.checkpoint): the demo inspects it instead
  // of training (app/gui/demo.cpp, the model demo): per length, a probe of
  // random token ids, then a k change and a block-size change.
  std::vector<int> demo_lengths = {8192, 32768};
  std::string paradox_models = "assets/models";  // the Paradox view's full/ moba/ ssa/ models
  // non-empty: random use for random_use_seconds (app/gui/random_use.h), results here, then exit
  std::string random_use_dir;
  double random_use_seconds = 180;
  uint64_t random_use_seed = 1;
};

int run_gui(const GuiOptions& opt);  // returns a process exit code

}  // namespace ssalab
