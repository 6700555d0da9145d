// Kernel benchmark: the ssalab kernels (selection, sparse attention forward and
// backward, full-attention statistics, the experimental fused dual stream)
// against LibTorch's dense causal SDPA (cuDNN and flash backends), timed in
// one process on one GPU.  Prints the markdown tables of kernels/README.md and
// writes every number to JSON.
//
//   ssalab_kernel_bench [--shapes A,B,C,D] [--json PATH] [--flex PATH] [--reps N]
//                       [--selections layerL_selected_blocks.npy [--selections-block-size 16]] [--no-dual]
//
// --selections adds, per shape, a config whose selection is a trained model's
// (written by `ssalab analyze`), replayed at the shape (replay_selection in
// engine/metrics/selection_locality.h): trained selections are local, random
// ones are not, and a kernel may gain from the former.
//
// This file is the driver: per shape it runs each kernel's file (listed in
// bench_kernels.h) in a fixed order, then prints the tables and the JSON.
// FlexAttention has no C++ entry point: bench/flex_bench.py times it on the
// same inputs and selection and writes the JSON that --flex merges in.
//
// Before timing a selection config the program checks the selection and our
// forward against a masked dense fp32 reference on a few query rows and exits
// with status 1 if either is off, so a broken build cannot print fast nonsense.
#include <algorithm>
#include <ctime>
#include <fstream>

#include "bench/kernels/bench_kernels.h"

namespace ssabench {
namespace {

// ---------------------------------------------------------------- FlexAttention numbers

// flex_bench.py's JSON, its entries keyed by "shape/config".
struct FlexFile {
  json meta;
  std::map<std::string, json> entries;
};

FlexFile read_flex(const std::string& path) {
  FlexFile f;
  if (path.empty()) return f;
  std::ifstream in(path);
  if (!in) {
    std::printf("warning: --flex %s cannot be read; FlexAttention columns stay empty\n", path.c_str());
    return f;
  }
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::exception& e) {
    std::printf("warning: --flex %s is not valid JSON (%s); FlexAttention columns stay empty\n", path.c_str(),
                e.what());
    return f;
  }
  for (const auto& entry : doc.value("rows", json::array()))
    f.entries[entry.value("shape", "") + "/" + entry.value("config", "")] = entry;
  doc.erase("rows");
  f.meta = doc;
  return f;
}

FlexResult merge_flex(const FlexFile& file, const ShapeResult& shape, const SelectionResult& sel) {
  FlexResult r;
  auto it = file.entries.find(std::string(shape.shape.name) + "/" + sel.spec.label());
  if (it == file.entries.end()) return r;
  r.found = true;
  r.raw = it->second;
  r.fwd_ms = number_or_nan(r.raw, "fwd_ms");
  r.fwd_bwd_ms = number_or_nan(r.raw, "fwd_bwd_ms");
  r.same_inputs = r.raw.value("input_checksums", json::array()) == json(shape.input_checksums);
  r.same_selection = r.raw.value("selection_checksum", int64_t(-1)) == sel.selection_checksum;
  return r;
}

// ---------------------------------------------------------------- one shape

ShapeResult run_shape(const ShapeSpec& spec, GpuTimer& timer, const FlexFile& flex, const RecordedSelection* recorded,
                      bool with_dual, bool sparse_only) {
  ShapeResult r;
  r.shape = spec;
  Inputs in = make_inputs(spec);
  r.input_checksums = {bits_checksum(in.q), bits_checksum(in.k), bits_checksum(in.v), bits_checksum(in.dout)};

  DenseSdpa dense(in);
  for (SdpaBackend b : {SdpaBackend::cudnn, SdpaBackend::flash}) {
    if (sparse_only) break;
    r.dense.push_back(dense.time(b, timer));
    const DenseResult& d = r.dense.back();
    print_line(spec.name, std::string("sdpa-") + backend_name(b), "dense", d.fwd_ms, d.fwd_bwd_ms, d.error);
  }

  std::vector<SelectionSpec> configs(std::begin(kSelections), std::end(kSelections));
  if (recorded) configs.push_back({recorded->block_size, int(recorded->K), /*recorded=*/true});
  for (const SelectionSpec& cfg : configs) {
    SelectionResult s;
    s.spec = cfg;
    SelectKernel sel(in, cfg);
    if (cfg.recorded) sel.use_recorded(in, *recorded);
    SparseKernels ours(in, sel);
    sel.run();
    ours.forward();
    sync();
    s.selection_checksum = selection_checksum(sel.blocks);
    s.size = measure_selection(in, sel);
    check_selection(in, sel);
    s.check = check_forward(in, sel, ours);

    bench_sparse(in, sel, ours, dense, r.dense_of(SdpaBackend::cudnn), timer, s);
    if (with_dual && !sparse_only) bench_fused_dual(in, sel, ours, timer, s);
    if (!sparse_only && std::string(spec.name) == kStatsShape && &cfg == &configs[0]) bench_stats(in, sel, timer, s);

    s.flex = merge_flex(flex, r, s);
    r.selections.push_back(std::move(s));
  }
  return r;
}

// ---------------------------------------------------------------- output

// The overview: one row per shape and selection config.
void print_main_table(const std::vector<ShapeResult>& results, bool have_flex) {
  bool flex_mismatch = false;
  std::printf("\n| shape | config | select | sparse fwd | sparse fwd+bwd | TF/s fwd / fwd+bwd | fwd K/V GB (TB/s) "
              "| FlexAttention fwd / fwd+bwd | dual fwd+bwd (x cuDNN) |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const auto& r : results) {
    const DenseResult* cudnn = r.dense_of(SdpaBackend::cudnn);
    for (const auto& s : r.selections) {
      std::string flex = "-";
      if (s.flex.found) {
        flex = fmt_ms(s.flex.fwd_ms) + " / " + fmt_ms(s.flex.fwd_bwd_ms);
        if (!s.flex.same_selection || !s.flex.same_inputs) {
          flex += " *";
          flex_mismatch = true;
        }
      }
      std::string dual = "-";
      if (finite(s.dual_ms) && cudnn)
        dual = strf("%s (%.2fx)", fmt_ms(s.dual_ms).c_str(), s.dual_ms / cudnn->fwd_bwd_ms);
      if (finite(s.dual_streams_ms) && cudnn)
        dual += strf("; 2 streams %s (%.2fx)", fmt_ms(s.dual_streams_ms).c_str(), s.dual_streams_ms / cudnn->fwd_bwd_ms);
      std::printf("| %s | %s | %s | %s | %s | %.0f / %.0f | %.2f (%.1f) | %s | %s |\n", r.shape.name,
                  s.spec.label().c_str(), fmt_ms(s.select_ms).c_str(), fmt_ms(s.fwd_ms).c_str(),
                  fmt_ms(s.fwd_bwd_ms).c_str(), tflops(4, s.size.pairs, r.shape.D, s.fwd_ms),
                  tflops(14, s.size.pairs, r.shape.D, s.fwd_bwd_ms), s.size.fwd_kv_bytes / 1e9,
                  s.size.fwd_kv_bytes / (s.fwd_ms * 1e-3) / 1e12, flex.c_str(), dual.c_str());
    }
  }
  if (!have_flex) std::printf("\nFlexAttention: no --flex file given.\n");
  if (flex_mismatch)
    std::printf("\n* FlexAttention ran on other inputs or another selection than this program (checksums differ).\n");
}

void print_tables(const std::vector<ShapeResult>& results, bool have_flex) {
  print_main_table(results, have_flex);
  print_dense_table(results);
  print_sparse_table(results);
  print_stats_table(results);
  print_fused_table(results);
  std::printf("\nAll times in ms (medians, L2 flushed). TF/s count attended pairs only (fwd 4*pairs*D, fwd+bwd "
              "14*pairs*D). \"fwd K/V GB\": K and V bytes our forward reads for this selection.\n");
}

json to_json(const ShapeResult& r) {
  json shape = {{"name", r.shape.name}, {"batch", kBatch},      {"Hq", r.shape.Hq},
                {"Hkv", r.shape.Hkv},   {"D", r.shape.D},       {"T", r.shape.T},
                {"seed", r.shape.seed}, {"dtype", "bf16"},      {"input_checksums", r.input_checksums}};
  shape["dense_sdpa"] = dense_json(r);
  shape["selections"] = json::array();
  for (const auto& s : r.selections) {
    json j = {{"config", s.spec.label()}, {"block_size", s.spec.block_size}, {"top_k", s.spec.top_k}};
    add_sparse_json(j, r, s);
    add_fused_json(j, r, s);
    if (s.flex.found) {
      j["flex"] = s.flex.raw;
      j["flex"]["same_inputs"] = s.flex.same_inputs;
      j["flex"]["same_selection"] = s.flex.same_selection;
    }
    add_stats_json(j, r, s);
    shape["selections"].push_back(j);
  }
  return shape;
}

// ---------------------------------------------------------------- command line

struct Options {
  std::vector<const ShapeSpec*> shapes;
  std::string json_path = "kernel_bench.json";
  std::string flex_path;
  int reps = 0;  // 0: do_bench's time budget
  std::string selections_path;  // a recorded selection to replay beside the random ones
  int selections_block_size = 16;
  bool with_dual = true;  // the experimental fused dual kernel (slow: 0.1 s a call at C)
  bool sparse_only = false;  // selection and sparse attention only: no dense SDPA, dual stream or statistics
};

const char* kUsage =
    "usage: ssalab_kernel_bench [--shapes A,B,C,D] [--json PATH] [--flex PATH] [--reps N] [--selections FILE] [--no-dual] [--sparse-only]\n"
    "  --shapes  subset of A (16/1 d64 8K), B (32/2 d64 8K), C (32/2 d64 32K), D (16/1 d128 32K)\n"
    "  --json    where to write every number (default kernel_bench.json)\n"
    "  --flex    JSON from kernels/bench/flex_bench.py, merged into the table\n"
    "  --reps    fixed repetitions per measurement (default: a 200 ms budget, at least 5)\n"
    "  --selections FILE  a recorded selection (ssalab analyze's layerL_selected_blocks.npy) replayed\n"
    "            at each shape as one more config; --selections-block-size its block size (16)\n"
    "  --sparse-only  time the selection and the sparse kernels alone (no dense SDPA, dual stream or\n"
    "            statistics): quick A/B runs of a kernel change\n";

Options parse_options(int argc, char** argv) {
  Options o;
  std::string shapes = "A,B,C,D";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--shapes") shapes = value();
    else if (arg == "--json") o.json_path = value();
    else if (arg == "--flex") o.flex_path = value();
    else if (arg == "--reps") o.reps = std::stoi(value());
    else if (arg == "--selections") o.selections_path = value();
    else if (arg == "--selections-block-size") o.selections_block_size = std::stoi(value());
    else if (arg == "--no-dual") o.with_dual = false;
    else if (arg == "--sparse-only") o.sparse_only = true;
    else if (arg == "-h" || arg == "--help") { std::fputs(kUsage, stdout); std::exit(0); }
    else throw std::invalid_argument("unknown argument " + arg);
  }
  size_t start = 0;
  while (start <= shapes.size()) {
    size_t end = std::min(shapes.find(',', start), shapes.size());
    const std::string name = shapes.substr(start, end - start);
    auto it = std::find_if(std::begin(kShapes), std::end(kShapes), [&](const ShapeSpec& s) { return name == s.name; });
    if (it == std::end(kShapes)) throw std::invalid_argument("unknown shape '" + name + "'");
    o.shapes.push_back(&*it);
    start = end + 1;
  }
  return o;
}

std::string now() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", std::localtime(&t));
  return buf;
}

}  // namespace
}  // namespace ssabench

int main(int argc, char** argv) {
  using namespace ssabench;
  Options opts;
  try {
    opts = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n%s", e.what(), kUsage);
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "ssalab_kernel_bench: no CUDA device\n");
    return 2;
  }
  try {
    int device = 0;
    cudaDeviceProp prop{};
    cuda_ok(cudaGetDevice(&device), "cudaGetDevice");
    cuda_ok(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const std::string date = now();
    std::printf("# %s (L2 %d MB)  LibTorch %s  %s  bf16, batch %d; medians, L2 flushed (%lld MB)%s\n", prop.name,
                prop.l2CacheSize >> 20, TORCH_VERSION, date.c_str(), kBatch, (long long)(kL2FlushBytes >> 20),
                opts.reps > 0 ? strf(", %d reps", opts.reps).c_str() : "");
    const FlexFile flex = read_flex(opts.flex_path);
    GpuTimer timer(opts.reps);
    std::vector<ShapeResult> results;
    RecordedSelection recorded;
    if (!opts.selections_path.empty()) {
      recorded = read_recorded_selection(opts.selections_path, opts.selections_block_size);
      std::printf("# recorded selection %s: %lld groups x %lld rows x k %lld at block %d, replayed at each shape\n",
                  recorded.path.c_str(), (long long)recorded.groups, (long long)recorded.T, (long long)recorded.K,
                  recorded.block_size);
    }
    for (const ShapeSpec* s : opts.shapes)
      results.push_back(run_shape(*s, timer, flex, opts.selections_path.empty() ? nullptr : &recorded, opts.with_dual,
                                opts.sparse_only));
    print_tables(results, !opts.flex_path.empty());

    json report = {{"device", prop.name},
                   {"libtorch", TORCH_VERSION},
                   {"date", date},
                   {"timing", {{"method", "triton.testing.do_bench: median of reps, each after zeroing the L2 flush "
                                          "buffer, CUDA events around the op only"},
                               {"warmup_ms", kWarmupMs},
                               {"budget_ms", kBudgetMs},
                               {"stats_budget_ms", kStatsBudgetMs},
                               {"min_reps", kMinReps},
                               {"fixed_reps", opts.reps},
                               {"l2_flush_bytes", kL2FlushBytes}}},
                   {"flex_file", opts.flex_path},
                   {"flex_run", flex.meta},
                   {"shapes", json::array()}};
    for (const auto& r : results) report["shapes"].push_back(to_json(r));
    std::ofstream out(opts.json_path);
    out << report.dump(1) << "\n";
    if (!out) throw std::runtime_error("cannot write " + opts.json_path);
    std::printf("wrote %s\n", opts.json_path.c_str());
  } catch (const CheckFailure& e) {
    std::printf("CHECK FAILED: %s\nno timings reported\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
  return 0;
}
