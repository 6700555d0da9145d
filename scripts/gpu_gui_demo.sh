#!/usr/bin/env bash
# The real app on the GPU machine (issue "The app on a GPU workstation", part
# 4): a CUDA + GUI build under Xvfb with Mesa's software OpenGL, the packages
# it lacks unpacked from .deb files (scripts/gpu_gui_debs.sh), then
#   - the model demo on a random-weight 1B model in the released layout (bf16,
#     the Llama 3 tokenizer of tests/fixtures) at 8K and 32K tokens: load,
#     first analysis, k and block-size changes, GPU peak, screenshots, with
#     the Paradox view on three more random 1B models;
#   - the training demo: the app trains a model of the `1b` preset (the
#     released 1B shape, ~1.0B parameters; $TRAIN_PRESET) on the GPU, bf16
#     and the kernels, on the Python docs (their sentencepiece vocabulary of
#     16384 needs more text than the test corpus): frame times while training
#     runs, the probes at 512 and 8192 tokens, save, compare, open, generate.
# Results: $OUT/gui-demo.tgz (summaries, frame times, screenshots, logs).
#
# A device call carries at most 64 MiB with the repository (31.5 MiB), so the
# packages travel in two calls, the second within the machine's idle time
# after the first (what the first unpacks into .gl/root stays there):
#   here:   bash scripts/gpu_gui_debs.sh download && tar cJf .gl/sysroot.tar.xz .gpu-sysroot &&
#           tar cJf .gl/pydoc.tar.xz -C /usr/share/doc/python3.11/html _sources
#   call 1, carry [".gl/part1"]: bash scripts/gpu_gui_demo.sh unpack
#   call 2, carry [".gl/part2", ".gl/sysroot.tar.xz", ".gl/pydoc.tar.xz"]: bash scripts/gpu_gui_demo.sh build
#           (the app, the engine tests and the analysis bench with GUI + CUDA; then the
#           engine's CUDA and metrics tests and the analysis bench at 8K and 32K)
#   call 3, carry [".gl/fallback"]: bash scripts/gpu_gui_demo.sh run    (the demos)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build-gui-gpu/out}
mkdir -p "$OUT"

case "${1:-}" in
  unpack)
    bash scripts/gpu_gui_debs.sh unpack
    exit 0
    ;;
  build | run) ;;
  *)
    echo "usage: $0 unpack | build | run" >&2
    exit 2
    ;;
esac

[ -f .gl/root/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 ] ||
  { echo "libLLVM-15 is not unpacked in .gl/root: run '$0 unpack' carrying .gl/part1 first" >&2; exit 1; }
bash scripts/gpu_gui_debs.sh unpack
[ -d .gpu-sysroot ] || tar xJf .gl/sysroot.tar.xz
# shellcheck source=gpu_gui_debs.sh
source scripts/gpu_gui_debs.sh env
SR=$PWD/.gpu-sysroot/usr
export LD_LIBRARY_PATH=$SR/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH
export PKG_CONFIG_PATH=$SR/lib/x86_64-linux-gnu/pkgconfig:$PKG_CONFIG_PATH
CORPUS=$PWD/.gpu-sysroot/corpus/tutorial
DOCS=/tmp/ssalab-pydoc/_sources
[ -d $DOCS ] || { mkdir -p /tmp/ssalab-pydoc && tar xJf .gl/pydoc.tar.xz -C /tmp/ssalab-pydoc; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [ "$1" = build ]; then
  SECONDS=0
  # the README's command for a GPU workstation, without its apt-get (the
  # packages are unpacked here) and with the tests and benchmarks as targets
  SSALAB_NO_PACKAGES=1 SSALAB_CUDA_BUILD_DIR=build-gui-gpu SSALAB_PREFIX_PATH="$SR;$CMAKE_PREFIX_PATH" \
    SSALAB_CMAKE_ARGS=-DSSALAB_UNITY_BUILD=OFF \
    SSALAB_BUILD_TARGETS="ssalab ssalab_load_bench ssalab_analysis_bench test_engine" \
    bash scripts/run_gpu.sh --build-only >"$OUT/build.txt" 2>&1 ||
    { grep -E "error|Error|run_gpu" -A4 "$OUT/build.txt" | head -60; exit 1; }
  grep "run_gpu" "$OUT/build.txt"
  echo "build (GUI + CUDA, scripts/run_gpu.sh --build-only): ${SECONDS}s"
  SECONDS=0
  rc=0
  SSALAB_TEST_CORPUS=$CORPUS timeout 240 ./build-gui-gpu/test_engine "[cuda],[metrics]" >"$OUT/test_engine.txt" 2>&1 || rc=$?
  echo "test_engine [cuda],[metrics] rc=$rc (${SECONDS}s)"
  grep -E "passed|failed|FAILED|with expansion" -A3 "$OUT/test_engine.txt" | tail -40
  [ "${SKIP_BENCH:-0}" = 1 ] ||
    timeout 300 ./build-gui-gpu/ssalab_analysis_bench --device cuda --tokens 8192,32768 2>&1 |
    tee "$OUT/analysis_bench.txt" || echo "analysis bench rc=$?"
  exit 0
fi
[ -x build-gui-gpu/ssalab ] || { echo "no build in build-gui-gpu: run '$0 build' first" >&2; exit 1; }

# random 1B models with the Llama 3 tokenizer (the released vocabulary)
make_model() {
  mkdir -p "$(dirname "$1")"
  ./build-gui-gpu/ssalab_load_bench --make "$1" --preset 1b --dtype bf16 --seed "$2" >/dev/null
  gunzip -c tests/fixtures/tokenizers/llama3/tokenizer.json.gz >"$1/tokenizer.json"
}
SECONDS=0
M=/tmp/ssalab-1b
if [ ! -f $M/paradox/ssa/tokenizer.json ]; then  # kept from an earlier call on the same machine
  make_model $M/model 1
  for i in 1 2 3; do
    method=$(echo "full moba ssa" | cut -d' ' -f$i)
    make_model $M/paradox/$method $((i + 1))
  done
  echo "four random 1B models written: ${SECONDS}s"
fi

# Libraries a bare machine may lack beside the packages above (X11, freetype,
# libxml2 for libLLVM, ...): .gl/fallback/*.deb (gpu_gui_debs.sh download),
# searched last so that the machine's own versions win where it has them.
if [ -d .gl/fallback ] && [ ! -d .gl/fallback-root ]; then
  for deb in .gl/fallback/*.deb; do dpkg-deb -x "$deb" .gl/fallback-root; done
fi
[ -d .gl/fallback-root ] &&
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/.gl/fallback-root/usr/lib/x86_64-linux-gnu:$PWD/.gl/fallback-root/lib/x86_64-linux-gnu
for bin in .gl/root/usr/bin/Xvfb .gl/root/usr/lib/x86_64-linux-gnu/dri/swrast_dri.so build-gui-gpu/ssalab; do
  missing=$(ldd "$bin" 2>/dev/null | grep "not found" | awk '{print $1}' | tr '\n' ' ' || true)
  [ -z "$missing" ] || echo "$bin lacks: $missing"
done
XPID=$(bash scripts/gpu_gui_debs.sh xvfb 99)
trap 'kill $XPID 2>/dev/null || true' EXIT
for _ in $(seq 40); do [ -S /tmp/.X11-unix/X99 ] && break; sleep 0.25; done
[ -S /tmp/.X11-unix/X99 ] || { echo "Xvfb did not start:"; tail -20 /tmp/xvfb-99.log; exit 1; }
export DISPLAY=:99

cmake --build build-gui-gpu -j16 --target ssalab >"$OUT/rebuild.txt" 2>&1 || { tail -20 "$OUT/rebuild.txt"; exit 1; }
SECONDS=0
rc=0
[ "${ONLY_TRAIN:-0}" = 1 ] || ./build-gui-gpu/ssalab gui --model $M/model --demo "$OUT/model-demo" --demo-lengths 8192,32768 \
  --paradox-models $M/paradox --corpus "$CORPUS" --work-dir /tmp/ssalab-work-model >"$OUT/model-demo.log" 2>&1 || rc=$?
echo "model demo rc=$rc (${SECONDS}s)"
tail -3 "$OUT/model-demo.log" 2>/dev/null || true

SECONDS=0
rc=0
./build-gui-gpu/ssalab gui --preset "${TRAIN_PRESET:-1b}" --demo "$OUT/train-demo" --corpus $DOCS \
  --work-dir /tmp/ssalab-work-train \
  >"$OUT/train-demo.log" 2>&1 || rc=$?
echo "training demo rc=$rc (${SECONDS}s)"
tail -3 "$OUT/train-demo.log"

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
for name in ("model-demo", "train-demo"):
    path = os.path.join(out, name, "summary.json")
    if not os.path.exists(path):
        print(name, ": no summary"); continue
    s = json.load(open(path))
    print(f"== {name}: ok={s['ok']} {s.get('error', '')} gpu peak {s.get('gpu_peak_allocated_gb', 0):.2f} GB")
    for a in s["analyses"]:
        print(f"  {a['stage']:<28} T {a['tokens']:>6} k {a['top_k']:>2} bs {a['block_size']:>3} "
              f"{a['seconds']:.3f} s kept q,k {a['on_kept_qk']} kept rows {a.get('from_kept_rows')} losses {a.get('token_losses')} kernels {a['by_gpu_kernels']} autocast {a.get('bf16_autocast')}")
    for T, phases in s["frame_ms"].items():
        for phase, f in phases.items():
            print(f"  frames {T} {phase}: median {f['median_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms ({f['frames']})")
PY
# the saved checkpoint (a 1B model with its optimizer, 11 GB) stays out: gzip took minutes
rm -rf "$OUT/train-demo/checkpoint"
tar czf /tmp/gui-demo.tgz -C "$OUT" --exclude=gui-demo.tgz . && mv /tmp/gui-demo.tgz "$OUT/"
