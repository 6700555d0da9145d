// A last word on a crash: on SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT the
// process prints what happened, its command line and a backtrace to stderr,
// then dies of the same signal (exit status and core dump as without the
// handler). The CLI and the app install it first thing in main().
#pragma once

namespace ssalab {

// Remembers the command line (formatted now: the handler may not allocate)
// and installs the handler on an alternate stack, so a stack overflow is
// reported too. Safe to call more than once.
void install_crash_handler(int argc, const char* const* argv);

}  // namespace ssalab
