// `ssalab train --nproc N`: starts N copies of this program on this machine as
// the ranks of one data-parallel run, with the environment torchrun would
// give them, and watches them: when one fails, the others (which then fail
// their next collective) get a grace period to end, then are stopped.
#pragma once
#include <string>
#include <vector>

namespace ssalab::cli {

// `args`: this program's command line without --nproc. Returns 0 when every
// rank succeeded, else the first failure's exit status (128 + signal for a
// rank that was killed).
int launch_local_ranks(int nproc, const std::vector<std::string>& args);

// argv without the --nproc option and its value.
std::vector<std::string> without_nproc(int argc, char** argv);

}  // namespace ssalab::cli
