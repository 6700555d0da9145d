#!/usr/bin/env bash
# The app on a GPU workstation: builds it with the GUI and the CUDA kernels
# against the CUDA LibTorch the machine already has (an installed PyTorch,
# found through torch.utils.cmake_prefix_path, or $LIBTORCH_DIR), everything
# else from Debian packages, and opens it. Without an NVIDIA GPU, nvcc or a
# CUDA LibTorch it says which is missing and runs the CPU build (scripts/run.sh).
#   bash scripts/run_gpu.sh [app arguments]
#   bash scripts/run_gpu.sh --check     # only say which build it would make, and why
#   bash scripts/run_gpu.sh --build-only   # the CUDA build without opening it (fails without one)
# For a machine without package access whose libraries are unpacked elsewhere
# (scripts/gpu_gui_demo.sh on the GPU machine): SSALAB_NO_PACKAGES=1 skips
# apt-get, SSALAB_PREFIX_PATH adds ';'-separated CMake prefixes,
# SSALAB_CUDA_BUILD_DIR (build-cuda), SSALAB_BUILD_TARGETS (ssalab) and
# SSALAB_CMAKE_ARGS (more -D options) shape the build.
set -euo pipefail
cd "$(dirname "$0")/.."

why_not=""
torch_prefix=""
if [ -n "${LIBTORCH_DIR:-}" ]; then
  torch_prefix=$LIBTORCH_DIR
  [ -f "$LIBTORCH_DIR/lib/libtorch_cuda.so" ] || why_not="LIBTORCH_DIR=$LIBTORCH_DIR has no lib/libtorch_cuda.so (not a CUDA LibTorch)"
elif command -v python3 >/dev/null && torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null); then
  python3 -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null ||
    why_not="the installed PyTorch ($torch_prefix) is built without CUDA"
else
  why_not="no CUDA LibTorch: neither LIBTORCH_DIR nor a PyTorch importable by python3"
fi
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$why_not" ] && [ -z "$nvcc" ]; then why_not="no nvcc (the CUDA toolkit) to build the kernels"; fi
if [ -z "$why_not" ] && ! nvidia-smi -L >/dev/null 2>&1; then why_not="no NVIDIA GPU (nvidia-smi lists none)"; fi

if [ -n "$why_not" ]; then
  echo "[run_gpu] CPU build: $why_not" >&2
  [ "${1:-}" = --check ] && exit 0
  [ "${1:-}" = --build-only ] && { echo "[run_gpu] --build-only asks for the CUDA build: none made" >&2; exit 1; }
  exec bash scripts/run.sh "$@"
fi
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
[ "$arch" = 90 ] && arch=90a  # Hopper: the wgmma paths
echo "[run_gpu] CUDA build: LibTorch $torch_prefix, nvcc $nvcc, GPU sm_$arch" >&2
[ "${1:-}" = --check ] && exit 0
# Debian packages (their CPU LibTorch is not the one used)
[ "${SSALAB_NO_PACKAGES:-0}" = 1 ] || SSALAB_NO_BUILD=1 bash scripts/setup.sh
build=${SSALAB_CUDA_BUILD_DIR:-build-cuda}
# shellcheck disable=SC2086  # SSALAB_CMAKE_ARGS and SSALAB_BUILD_TARGETS are lists
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix${SSALAB_PREFIX_PATH:+;$SSALAB_PREFIX_PATH}" \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch" -DSSALAB_CUDA=ON -DSSALAB_GUI=ON \
  ${SSALAB_CMAKE_ARGS:-} >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target ${SSALAB_BUILD_TARGETS:-ssalab}
[ "${1:-}" = --build-only ] && exit 0
exec "./$build/ssalab" "$@"
