// Thread priorities for the desktop app. On 2 cores the training step, the
// BLAS helper threads and the software rasteriser all want a core; a frame
// that waits behind a training step feels like a frozen window. The app
// therefore runs engine work at a lower priority (a higher nice value) than
// the UI thread and the GL threads, so training takes every cycle the UI
// does not need. Linux only; elsewhere these do nothing and return 0.
#pragma once

namespace ssalab {

constexpr int kBackgroundNice = 10;

// Lowers the calling thread's priority to `nice`. Threads it creates later
// (LibTorch's intra-op pool, for example) inherit it. Returns 1 on success.
int lower_this_thread_priority(int nice = kBackgroundNice);

// Lowers the priority of every thread of the process except the caller: at
// start-up these are library worker pools created before main (OpenBLAS),
// which would otherwise compete with the UI at full priority. Returns how many
// threads were changed.
int lower_other_threads_priority(int nice = kBackgroundNice);

// The calling thread's nice value (tests).
int this_thread_nice();

}  // namespace ssalab
