#!/usr/bin/env bash
# Build and test the kernels on a GPU machine (run from the repo root), then run
# the kernel benchmark.  Logs and JSON go to $OUT (the device tool's output
# folder) or build-kernels/run.
#   bash kernels/bench/run_device.sh                      # tests + engine binding test + benchmark
#   KBENCH_SHAPES=C bash kernels/bench/run_device.sh      # benchmark one shape only
# The benchmark is scripts/gpu_check.sh's kbench stage (flex_bench.py, then the
# C++ program ssalab_kernel_bench); it needs the top-level build and so the
# .gpu-sysroot that gpu_check.sh describes, carried with the call.  Without it
# only the tests run.
set -o pipefail
OUT=${OUT:-$PWD/build-kernels/run}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
{ cmake -S kernels -B build-kernels -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build-kernels -j16; } \
  > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
timeout 180 ./build-kernels/test_kernels 2>&1 | tee "$OUT/test.txt" | grep -E "^\[|FAIL|failed"
timeout 180 ./build-kernels/test_dual 2>&1 | tee "$OUT/test_dual.txt" | grep -E "^\[|FAIL|failed"
if python3 -c 'import torch' 2>/dev/null; then
  { cmake -S kernels/tests/backend -B build-backend -G Ninja \
      -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" &&
    cmake --build build-backend -j16 && timeout 120 ./build-backend/test_backend; } > "$OUT/backend.txt" 2>&1
  echo "engine binding test rc=$?"
  grep -E "^\[|FAIL|failed|what" "$OUT/backend.txt"
  if [ -d .gpu-sysroot ]; then
    OUT="$OUT" bash scripts/gpu_check.sh kbench
  else
    echo "no .gpu-sysroot: kernel benchmark skipped (bash scripts/gpu_check.sh kbench needs it)"
  fi
fi
