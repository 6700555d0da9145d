#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build (clang) of the engine,
# its tests and the fuzz targets in build-asan/; runs the tests that need no
# sentencepiece (it is dlopen()ed with RTLD_DEEPBIND, which ASan refuses, see
# engine/data/corpus.cpp), then every fuzz target from its seeds.
#   scripts/sanitize.sh              build, tests, each fuzz target 20 s
#   FUZZ_RUNS=20000 scripts/sanitize.sh   the same inputs every time (the test command, CI)
#   FUZZ_SECONDS=600 scripts/sanitize.sh fuzz    longer fuzzing only
# Fuzz results (executions, coverage, findings) land in build-asan/fuzz-*.txt;
# a crash leaves its input in build-asan/fuzz-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
BUILD=${SSALAB_ASAN_DIR:-build-asan}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_odr_violation=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# -O1 with line tables only: ASan's reports name file and line, and debug
# info for LibTorch's templates would double the compile time
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -gline-tables-only" \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DSSALAB_FUZZ=ON -DSSALAB_GUI=OFF -DSSALAB_KERNELS=OFF \
  >/dev/null
targets="fuzz_safetensors fuzz_model_config fuzz_checkpoint_folder fuzz_tokenizer fuzz_trainer_state fuzz_token_cache
  fuzz_metrics_log"
[ "$STAGE" = fuzz ] || targets="$targets test_engine test_data test_tokenizer"
cmake --build "$BUILD" -j"$(nproc)" --target $targets

if [ "$STAGE" != fuzz ]; then
  echo "[sanitize] tests under ASan + UBSan"
  # the ops, models, HF loading, metrics and the crash handler; [sentencepiece]
  # marks the tests among them that load a sentencepiece tokenizer
  tags=""
  for t in attention nsa hf model golden grad metrics metricslog npy mmap crash spec rule; do
    tags="$tags${tags:+,}[$t]~[sentencepiece]"
  done
  "$BUILD"/test_engine "$tags"
  "$BUILD"/test_data "[safetensors],[utf8],[cache]"
  "$BUILD"/test_tokenizer "~[load]"
fi

# FUZZ_RUNS (the test command sets it): a fixed number of inputs from a fixed
# seed, the same every run, so CI fails only when the code changes; without
# it, FUZZ_SECONDS of exploration
if [ -n "${FUZZ_RUNS:-}" ]; then budget="-runs=$FUZZ_RUNS -seed=1"; what="$FUZZ_RUNS inputs (seed 1)"
else budget="-max_total_time=$FUZZ_SECONDS"; what="$FUZZ_SECONDS s"; fi
echo "[sanitize] fuzzing each target: $what"
mkdir -p "$BUILD/fuzz-artifacts"
status=0
for t in safetensors model_config checkpoint_folder tokenizer trainer_state token_cache metrics_log; do
  work="$BUILD/fuzz-corpus/$t"  # grows; the committed seeds stay as they are
  mkdir -p "$work"
  SECONDS=0
  if ! "$BUILD/fuzz_$t" "$work" "fuzz/corpus/$t" $budget -rss_limit_mb=2048 \
       -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 -artifact_prefix="$BUILD/fuzz-artifacts/$t-" \
       > "$BUILD/fuzz-$t.txt" 2>&1; then
    echo "[sanitize] fuzz_$t FOUND A PROBLEM:"; tail -40 "$BUILD/fuzz-$t.txt"; status=1
  fi
  runs=$(grep -o "stat::number_of_executed_units: [0-9]*" "$BUILD/fuzz-$t.txt" | awk '{print $2}')
  cov=$(grep -o "cov: [0-9]*" "$BUILD/fuzz-$t.txt" | tail -1 | awk '{print $2}')
  echo "[sanitize] fuzz_$t: ${runs:-?} executions in ${SECONDS} s, coverage ${cov:-?} edges"
done
exit $status
