#!/usr/bin/env bash
# Build, test and benchmark the kernels on a GPU machine (run from the repo root).
# Logs and JSON go to $OUT (the device tool's output folder) or build-kernels/run.
#   bash kernels/bench/run_device.sh            # tests + engine binding test + full bench
#   BENCH_ARGS="--shapes C --no-flex" bash kernels/bench/run_device.sh
set -o pipefail
OUT=${OUT:-$PWD/build-kernels/run}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
{ cmake -S kernels -B build-kernels -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build-kernels -j16; } \
  > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
timeout 180 ./build-kernels/test_kernels 2>&1 | tee "$OUT/test.txt" | grep -E "^\[|FAIL|failed"
if python3 -c 'import torch' 2>/dev/null; then
  { cmake -S kernels/tests/backend -B build-backend -G Ninja \
      -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" &&
    cmake --build build-backend -j16 && timeout 120 ./build-backend/test_backend; } > "$OUT/backend.txt" 2>&1
  echo "engine binding test rc=$?"
  grep -E "^\[|FAIL|failed|what" "$OUT/backend.txt"
  PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-330}" python3 kernels/bench/bench.py --json "$OUT/bench.json" \
    ${BENCH_ARGS:-} 2>&1 | grep -v Warning | tee "$OUT/bench.txt"
fi
