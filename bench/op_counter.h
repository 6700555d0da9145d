// Counts the ATen operators a piece of code dispatches, through the
// RecordFunction hooks the profiler uses: the host-side work of eager
// LibTorch. A training step that the GPU finishes faster than the host can
// launch it costs about its operator count, so this measures SSA's extra host
// work (bench_train --count-ops).
//
// Per call it tells apart:
//   top level   called by our code, not by another operator: each pays the
//               whole dispatcher and autograd path;
//   compute     one that does arithmetic or copies itself: neither a view,
//               an allocation nor metadata, nor made of other such calls
//               (linear is not, the mm it calls is): on the GPU, a launch;
//   backward    autograd nodes run by backward();
//   reads       copies from the GPU to the host (.item(), .to(kCPU)): each
//               waits for the GPU's queue to drain.
// Our own kernels (kernels/) launch outside the dispatcher: not counted.
#pragma once
#include <ATen/record_function.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace ssalab::bench {

struct OpCounts {
  long top_level = 0, compute = 0, backward = 0, reads = 0;
  std::map<std::string, long> compute_by_name;
};

class OpCounter {
 public:
  OpCounter() {
    handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&on_start, &on_end)
                                        .needsInputs(true)  // to tell reads from the GPU
                                        .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  }
  ~OpCounter() { at::removeCallback(handle_); }
  OpCounter(const OpCounter&) = delete;
  OpCounter& operator=(const OpCounter&) = delete;

  // What was counted since the last take(); counting goes on.
  OpCounts take() {
    std::lock_guard<std::mutex> lock(state().mutex);
    OpCounts c = state().counts;
    state().counts = {};
    return c;
  }

 private:
  struct State {
    std::mutex mutex;
    OpCounts counts;
  };
  static State& state() {
    static State s;
    return s;
  }
  // Operators that launch nothing: views, allocations, metadata.
  static bool launches_nothing(const std::string& name) {
    static const std::set<std::string> names = {
        "aten::as_strided", "aten::resolve_conj", "aten::resolve_neg", "aten::view", "aten::_reshape_alias",
        "aten::_unsafe_view", "aten::reshape", "aten::empty", "aten::empty_strided", "aten::empty_like",
        "aten::detach", "aten::detach_", "detach", "detach_", "aten::lift_fresh", "aten::result_type",
        "aten::resize_", "aten::alias", "aten::expand", "aten::transpose", "aten::t", "aten::permute",
        "aten::select", "aten::slice", "aten::narrow", "aten::unsqueeze", "aten::squeeze", "aten::contiguous",
        "aten::to", "aten::_to_copy", "aten::is_nonzero", "aten::_local_scalar_dense", "aten::set_",
        "aten::_has_compatible_shallow_copy_type", "aten::unbind", "aten::split", "aten::chunk",
        "aten::flatten", "aten::unflatten", "aten::view_as", "aten::expand_as", "aten::movedim",
        "aten::split_with_sizes", "aten::numpy_T", "aten::type_as", "aten::item"};
    return names.count(name) > 0;
  }
  // Whether a call starting with these inputs copies a GPU value to the host.
  static bool reads_device(const at::RecordFunction& fn) {
    const std::string name = fn.name();
    const auto in = fn.inputs();
    auto tensor = [&](size_t i) { return in.size() > i && in[i].isTensor() && in[i].toTensor().defined(); };
    auto on_device = [&](size_t i) { return tensor(i) && !in[i].toTensor().is_cpu(); };
    auto on_host = [&](size_t i) { return tensor(i) && in[i].toTensor().is_cpu(); };
    if (name == "aten::_local_scalar_dense") return on_device(0);
    if (name == "aten::copy_") return on_host(0) && on_device(1);
    return false;
  }
  // One entry per open call on this thread (backward runs on the autograd
  // engine's threads): whether it has dispatched a compute operator yet,
  // and whether it reads from the GPU.
  struct OpenCall {
    bool had_compute_child = false, read = false;
  };
  static std::vector<OpenCall>& open_calls() {
    thread_local std::vector<OpenCall> open;
    return open;
  }
  static std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
    auto& open = open_calls();
    open.push_back({false, reads_device(fn)});
    return nullptr;
  }
  static void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
    auto& open = open_calls();
    if (open.empty()) return;  // started before the counter was installed
    const OpenCall call = open.back();
    open.pop_back();
    const std::string name = fn.name();
    std::lock_guard<std::mutex> lock(state().mutex);
    OpCounts& c = state().counts;
    if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION) {
      ++c.backward;
      return;
    }
    // the autograd engine's wrappers around the nodes counted above
    if (name.rfind("autograd::", 0) == 0) return;
    if (open.empty()) ++c.top_level;
    if (call.read) ++c.reads;
    if (!call.had_compute_child && !launches_nothing(name)) {
      ++c.compute;
      ++c.compute_by_name[name];
      if (!open.empty()) open.back().had_compute_child = true;
    }
  }

  at::CallbackHandle handle_;
};

}  // namespace ssalab::bench
