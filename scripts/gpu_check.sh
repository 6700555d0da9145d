#!/usr/bin/env bash
# On the GPU machine (the device tool): build the whole project against the
# machine's CUDA LibTorch with the kernels bound into the engine, run every
# test (ctest, with the engine binding test kernel_backend), the kernel tests
# (test_kernels; test_dual for the experimental fused kernels), and the
# training benchmark of the `small` preset at 8K context. Needs .gpu-sysroot,
# carried with the call:
#   ../shared/tools/gpu-sysroot .gpu-sysroot nlohmann-json3-dev libcli11-dev libstb-dev \
#     libstb0 libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 zlib1g-dev libprotobuf-lite32
#   cp -r /usr/share/doc/python3.11/html/_sources/tutorial .gpu-sysroot/corpus/
#   cp -r /usr/share/doc/python3.11/html/_sources .gpu-sysroot/corpus/full   # the training corpus (12 MB)
# (libprotobuf-lite32: libsentencepiece needs it; without it every test that
# trains or loads a sentencepiece tokenizer aborts.)
#   bash scripts/gpu_check.sh [build|test|bench|all]
#   bash scripts/gpu_check.sh load1b   # 1B load time, peak memory, 2K-token scoring on CUDA
#   bash scripts/gpu_check.sh decode   # the decode kernel: its tests, benchmark (its arguments in
#                                      # $DECODE_BENCH_ARGS; --bf16-pooling adds the table of bf16
#                                      # pooled keys), compute-sanitizer (with bf16 pooled keys too)
#   bash scripts/gpu_check.sh analysis # the app's analysis on a 1B model at 8K and 32K tokens
#   bash scripts/gpu_check.sh trainprof # the small preset's training step at 8K, then full and ssa under nsys
#   bash scripts/gpu_check.sh kbench   # kernel benchmark (not part of all); builds only its
#                                      # targets, so it also runs on a fresh machine
#   KBENCH_SHAPES=C bash scripts/gpu_check.sh kbench
#   KBENCH_FLEX=0 KBENCH_ARGS=--no-dual bash scripts/gpu_check.sh kbench   # our kernels and cuDNN only
#   bash scripts/gpu_check.sh perf     # one call for the open kernel issues (12, 16), about 6 minutes:
#                                      # the decode and selection tests, the decode benchmark, the kernel
#                                      # benchmark on random and recorded selections (no Flex, no dual),
#                                      # and ncu's view of the decode kernels at 128K x 32 and 8K x 1;
#                                      # compute-sanitizer on the selection's fp16-range cases
#   bash scripts/gpu_check.sh train1b  # ssa/full training step of a 4-layer 1B-shaped stack at 8K and 32K,
#                                      # and of the small preset at 8K (issue 12 part 3)
#   bash scripts/gpu_check.sh trainsel # a larger model's selection (issue 12 part 2): trains the small preset
#                                      # with SSA (needs .gpu-sysroot/corpus/full, below), records a layer's
#                                      # selection, times C and D replaying it (about 6 minutes)
#   bash scripts/gpu_check.sh select   # the selection's tests (both slot paths, nsa-chunked), memcheck, and
#                                      # the sparse kernels at C and D (about 2 minutes on a warm build)
#   bash scripts/gpu_check.sh queued   # selab of the working tree's select.cu against .ab/select_main.cu (with
#                                      # ncu), then hostbound, in one call: about 9 minutes
#   bash scripts/gpu_check.sh selwide  # the selection's wide kernel forced on (SSA_SELECT_WIDE=1) against
#                                      # select_kernel (=0), at 8 and 4 warps: tests on each, memcheck, A-D timed
#   SELECT_AB_BASE=.ab/select_head.cu bash scripts/gpu_check.sh selab # a change to kernels/select.cu against
#                                      # older copies (carry .ab): tests, memcheck, A-D timed on each, twice
#                                      # (SELAB_WIDE_TESTS=0: tests with the defaults only; SELECT_AB_SHAPES=C,D;
#                                      # SELAB_NCU=1 adds ncu's view of the new wide kernel at C)
#   bash scripts/gpu_check.sh hostbound # the engine's CUDA and training tests, then the small preset's 8K step:
#                                      # its ATen operators counted per method, its phases timed (host queues,
#                                      # GPU finishes), timed at batch 1, 2, 4 (full, ssa), and the 1B-shaped
#                                      # stack at batch 1, 2: whether its time is the GPU's or the launches'
#   bash scripts/gpu_check.sh selwg    # the selection's mma.sync path (SSA_SELECT_WGMMA=0; wgmma is the default
#                                      # on Hopper): kernel tests, memcheck at d128, A-D with and without
#   bash scripts/gpu_check.sh ncusplit # where a C bs16 training step's sparse kernels spend their time (ncu:
#                                      # selection, forward, dQ, dK/dV; about 3 minutes)
#   bash scripts/gpu_check.sh decodeprof # issue 16: the backend tests, the decode benchmark with the attention
#                                      # step on the tensor cores and on the scalar kernel, compute-sanitizer,
#                                      # and ncu on the three kernels at 128K x 32 (about 4 minutes)
#   bash scripts/gpu_check.sh decodenext # the decode switches SSA_DECODE_RADIX and SSA_DECODE_NORMALISE forced:
#                                      # backend tests, benchmark off and on, compute-sanitizer (about 2 minutes)
#   bash scripts/gpu_check.sh decodeauto # the decode kernel's shape-chosen paths (radix select, normaliser
#                                      # launch, L2 hints) against all off: backend tests, benchmark 8K-128K
#                                      # twice each way, memcheck (about 2 minutes on a fresh machine)
#   bash scripts/gpu_check.sh decodel2 # SSA_DECODE_L2HINT=1 (L2 eviction hints on the selection's streams)
#                                      # against off: backend tests, benchmark 8K-128K twice each way, memcheck
#   bash scripts/gpu_check.sh decodestalls # where the decode kernels' warps wait at 128K x 32: ncu's full and
#                                      # per-instruction views of the three kernels (d64) and of attend at d128
#   DECODE_AB_BASE=.ab/decode.cu bash scripts/gpu_check.sh decodeab # a change to kernels/decode.cu against
#                                      # an older copy (carry .ab): tests, the benchmark of both in one call,
#                                      # kernel durations and ncu's per-instruction view of the three kernels
#                                      # (DECODE_AB_NCU=0: tests and benchmarks only, about 2 minutes)
#   bash scripts/gpu_check.sh fwdtiles # the sparse forward's query tiles (issue 12 part 2), about 5 minutes:
#                                      # kernel and backend tests, memcheck on the smooth-q cases, the kernel
#                                      # benchmark on random and recorded selections (no Flex, no dual)
set -o pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
OUT=${OUT:-$PWD/build-gpu/out}
mkdir -p "$OUT"
TORCH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
SR=$PWD/.gpu-sysroot/usr
export LD_LIBRARY_PATH=$SR/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PKG_CONFIG_PATH=$SR/lib/x86_64-linux-gnu/pkgconfig
export SSALAB_TEST_CORPUS=$PWD/.gpu-sysroot/corpus/tutorial
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# file by file: 16 cores keep many small units busy, and the CUDA-bound
# engine files have not been built as units yet
configure() {
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH;$SR" \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DSSALAB_GUI=OFF -DSSALAB_CUDA=ON -DSSALAB_KERNEL_TESTS=ON \
    -DSSALAB_UNITY_BUILD=OFF \
    > "$OUT/configure.txt" 2>&1 || { tail -30 "$OUT/configure.txt"; exit 1; }
}
# A stage's targets (configured first on a fresh machine); stops with the first
# errors if one fails. SECONDS counts from the start of the build.
build_targets() {
  local stage=$1
  shift
  [ -f build-gpu/build.ninja ] || configure
  SECONDS=0
  cmake --build build-gpu -j16 --target "$@" > "$OUT/${stage}_build.txt" 2>&1 ||
    { grep -E "error|Error" -A4 "$OUT/${stage}_build.txt" | head -80; exit 1; }
  echo "$stage build: ${SECONDS}s"
}
# The kernel benchmark without Flex or the dual kernel, on random selections and
# the shipped model's recorded one (KBENCH_SELECTIONS= for random only); prints
# the table whose header starts with $1
kernel_bench_recorded() {
  local selections=${KBENCH_SELECTIONS-bench/inputs/ssa-shipped-layer2-selected-blocks.npy}
  timeout 240 ./build-gpu/ssalab_kernel_bench --no-dual ${selections:+--selections "$selections"} ${KBENCH_ARGS:-} \
    --json "$OUT/kernel_bench.json" > "$OUT/kernel_bench.txt" 2>&1
  echo "ssalab_kernel_bench rc=$? (${SECONDS}s)"; sed -n "/^| shape | config | $1/,/^\$/p" "$OUT/kernel_bench.txt"
}
# The engine binding's tests (test_kernel_backend: every decode case against the reference backend, and
# the A/B switches of decode.cu against each other), with a line of summary.
run_backend_tests() {
  timeout 200 ./build-gpu/kernels/test_kernel_backend > "$OUT/kernel_backend.txt" 2>&1
  echo "test_kernel_backend rc=$? (${SECONDS}s)"; grep -E "FAIL|failed|passed|differ" "$OUT/kernel_backend.txt" | tail -5
}
# The decode benchmark (8K and 128K, batch 1 and 32, with the bf16 pooled keys' table) with an A/B switch of
# decode.cu off and on: VAR=0 and VAR=1, into $OUT/decode_NAME0.txt and decode_NAME1.txt.
decode_bench_ab() {
  local var=$1 name=$2 value
  for value in 0 1; do
    decode_bench_env "$name$value" "$var=$value"
    grep -E "^\| (1B|16q)" "$OUT/decode_$name$value.txt" | cut -c1-150
  done
}
# The decode benchmark with some environment settings ("VAR=value ..."), into $OUT/decode_NAME.txt;
# DECODE_CONTEXTS picks the contexts (8K and 128K unless set).
decode_bench_env() {
  local name=$1
  shift
  env "$@" timeout 200 ./build-gpu/ssalab_decode_bench --contexts "${DECODE_CONTEXTS:-8192,131072}" --batches 1,32 \
    --iters 20 --bf16-pooling --no-model > "$OUT/decode_$name.txt" 2>&1
  echo "decode bench $* rc=$? (${SECONDS}s)"
}
# compute-sanitizer's TOOL on the decode kernels at 40K x 1 (20 chunks at block 16, the nsa-chunked rows
# two sides) with some environment settings ("VAR=value ..."), into $OUT/decode_NAME_TOOL.txt
decode_sanitize() {
  local name=$1 tool=$2
  shift 2
  env "$@" timeout 150 compute-sanitizer --tool "$tool" --kernel-name kns=decode_ ./build-gpu/ssalab_decode_bench \
    --contexts 40000 --batches 1 --iters 1 --no-model --bf16-pooling > "$OUT/decode_${name}_$tool.txt" 2>&1
  echo "$tool rc=$? (${SECONDS}s): $(grep SUMMARY "$OUT/decode_${name}_$tool.txt")"
}
# The decode stage's outputs (decode_*.txt, the backend tests, the GPU's name) packed into $OUT/NAME.tar.gz:
# the device returns 8 files a call
pack_decode_outputs() {
  tar -czf "$OUT/$1.tar.gz" -C "$OUT" $(cd "$OUT" && ls decode_*.txt kernel_backend.txt gpu.txt) &&
    (cd "$OUT" && rm -f decode_*.txt)
}
# ncu's full report of the first launch of each decode kernel at 128K x 32 (bf16 pooled keys; d64 block 16
# runs first): by default the scores (mangled name Lb1E: the bf16-key variant), pick and attend kernels,
# into $OUT/ncu_<prefix>_<kernel>.txt; with a second argument `sass`, also each kernel's per-instruction
# view (ncu_<prefix>_<kernel>_sass.csv); further arguments replace the kernels profiled ("NAME REGEX" each,
# the regex over mangled names).
profile_decode_kernels() {
  local prefix=$1 sass=${2:-} run
  shift $(($# < 2 ? $# : 2))
  local runs=("$@")
  ((${#runs[@]})) || runs=("scores regex:decode_scores.*Lb1E" "pick regex:decode_pick" "attend regex:decode_attend_mma")
  for run in "${runs[@]}"; do
    set -- $run
    timeout 150 ncu --set full --import-source no --kernel-name-base mangled --kernel-name "$2" --launch-count 1 \
      -o "/tmp/ncu_${prefix}_$1" -f ./build-gpu/ssalab_decode_bench --contexts 131072 --batches 32 --iters 1 \
      --no-model --bf16-pooling > /dev/null 2>&1
    echo "ncu $1 rc=$? (${SECONDS}s)"
    ncu --import "/tmp/ncu_${prefix}_$1.ncu-rep" --page details > "$OUT/ncu_${prefix}_$1.txt" 2>&1
    [ "$sass" = sass ] && ncu --import "/tmp/ncu_${prefix}_$1.ncu-rep" --page source --print-source sass --csv \
      > "$OUT/ncu_${prefix}_$1_sass.csv" 2>&1
    grep -E "Duration|DRAM Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy" \
      "$OUT/ncu_${prefix}_$1.txt" | head -8
  done
}
# test_kernels once per "NAME [VAR=VALUE ...]" argument, under those variables, into test_kernels_NAME.txt
kernel_tests_under() {
  local cfg name
  for cfg in "$@"; do
    set -- $cfg
    name=$1
    shift
    env "$@" timeout 100 ./build-gpu/kernels/test_kernels > "$OUT/test_kernels_$name.txt" 2>&1
    echo "test_kernels $name rc=$? (${SECONDS}s)"; grep -E "FAIL|failed checks" "$OUT/test_kernels_$name.txt" | tail -4
  done
}
# ncu's view of the wide selection kernel at C (8 warps): speed of light, warp states, occupancy, then the
# instruction mix by opcode and the SASS with executed counts per instruction (about 2 minutes)
profile_select_wide() {
  local bench=${1:-./build-gpu/ssalab_kernel_bench}
  SSA_SELECT_WIDE=1 timeout 90 ncu --kernel-name regex:select_wide_kernel --launch-count 1 --section SpeedOfLight \
    --section WarpStateStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
    --section InstructionStats --section SchedulerStats "$bench" --shapes C --reps 1 \
    --sparse-only > "$OUT/ncu_select_wide_C.txt" 2>&1
  echo "ncu select C rc=$? (${SECONDS}s)"
  grep -E "Duration|Throughput|Pipe|Registers|Achieved Occupancy|Theoretical Occ|Issue Slots|Eligible|Stall" \
    "$OUT/ncu_select_wide_C.txt" | head -30
  # the instruction mix by opcode (the InstructionStats section's body) and the SASS with executed counts
  # per instruction: which instructions 1.0 ms at C would have to lose
  SSA_SELECT_WIDE=1 timeout 90 ncu --kernel-name regex:select_wide_kernel --launch-count 1 --section InstructionStats \
    --section SourceCounters --import-source no -f -o /tmp/ncu_select_wide_C "$bench" --shapes C \
    --reps 1 --sparse-only > "$OUT/ncu_select_wide_C_mix.txt" 2>&1
  echo "ncu mix rc=$? (${SECONDS}s)"
  timeout 60 ncu -i /tmp/ncu_select_wide_C.ncu-rep --page details --print-details all --section InstructionStats \
    >> "$OUT/ncu_select_wide_C_mix.txt" 2>&1
  timeout 60 ncu -i /tmp/ncu_select_wide_C.ncu-rep --page source --csv --print-source sass \
    > "$OUT/ncu_select_wide_C_sass.csv" 2>&1
  echo "ncu sass rc=$? ($(wc -l < "$OUT/ncu_select_wide_C_sass.csv") lines, ${SECONDS}s)"
}
if [ "$STAGE" = build ] || [ "$STAGE" = all ]; then
  configure
  SECONDS=0
  # -k 0: one broken target does not stop the others (their tests still run)
  cmake --build build-gpu -j16 -- -k 0 > "$OUT/build.txt" 2>&1 ||
    { grep -E "error|Error" -A4 "$OUT/build.txt" | head -80; echo "build FAILED (${SECONDS}s)"; [ "$STAGE" = build ] && exit 1; }
  echo "build: ${SECONDS}s"
fi
if [ "$STAGE" = test ] || [ "$STAGE" = all ]; then
  SECONDS=0
  (cd build-gpu && ctest -j8 --output-on-failure --timeout 400) > "$OUT/ctest.txt" 2>&1
  echo "ctest rc=$? (${SECONDS}s)"; grep -E "tests passed|FAILED|Failed|\*\*\*" "$OUT/ctest.txt" | head -30
  for t in test_kernels test_dual; do
    timeout 180 ./build-gpu/kernels/$t > "$OUT/$t.txt" 2>&1
    echo "$t rc=$?"; grep -E "FAIL|failed|passed" "$OUT/$t.txt" | tail -5
  done
  # the selection's wide kernel is chosen by shape (d64, 256+ blocks): forced on, it runs every case
  SSA_SELECT_WIDE=1 timeout 180 ./build-gpu/kernels/test_kernels > "$OUT/test_kernels_wide.txt" 2>&1
  echo "test_kernels (SSA_SELECT_WIDE=1) rc=$?"; grep -E "FAIL|failed|passed" "$OUT/test_kernels_wide.txt" | tail -5
fi
if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  echo "== training throughput, small preset, 8K context, batch 1 (bf16 autocast, CUDA kernels)"
  timeout 300 ./build-gpu/ssalab_bench small 5 8192 1 2>&1 | tee "$OUT/bench_small_8k.txt"
fi
if [ "$STAGE" = trainprof ]; then
  # issue 12 part 3: where an SSA training step spends its time beyond FullAttn's
  # (small preset, 8K, batch 1): the bench, then each method alone under nsys
  build_targets trainprof ssalab_bench
  timeout 200 ./build-gpu/ssalab_bench small 5 8192 1 2>&1 | tee "$OUT/bench_small_8k.txt"
  NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [ -n "$NSYS" ]; then
    for m in full ssa; do
      timeout 200 "$NSYS" profile --force-overwrite true -o /tmp/trainprof_$m ./build-gpu/ssalab_bench small 3 8192 1 $m \
        > "$OUT/trainprof_$m.log" 2>&1
      timeout 120 "$NSYS" stats --report cuda_gpu_kern_sum --format csv /tmp/trainprof_$m.nsys-rep \
        > "$OUT/trainprof_${m}_kernels.csv" 2>&1
      echo "$m: $(wc -l < "$OUT/trainprof_${m}_kernels.csv") kernel rows"
    done
  else
    echo "no nsys on this machine"
  fi
fi
if [ "$STAGE" = load1b ]; then
  # issue 10's numbers on the GPU: a random-weight 1B model in the released
  # layout (bf16), its load time and peak memory, and 2K tokens scored full
  # and sparse, in the stored dtype on the GPU
  build_targets load1b ssalab_load_bench
  M=${LOAD1B_DIR:-/tmp/ssa1b-random}
  [ -f "$M/config.json" ] || ./build-gpu/ssalab_load_bench --make "$M" --preset 1b
  timeout 300 ./build-gpu/ssalab_load_bench "$M" --device cuda --tokens 2048 --json "$OUT/load-1b-cuda.json" 2>&1 |
    tee "$OUT/load-1b-cuda.txt"
  echo "load bench rc=${PIPESTATUS[0]}"
fi
if [ "$STAGE" = decode ] || [ "$STAGE" = analysis ]; then
  # issue 16's decode kernel (its tests, the benchmark, compute-sanitizer on
  # its kernels) or issue 11's analysis at scale (1B, bf16, 8K and 32K tokens);
  # only their targets are built, so this runs on a fresh machine in about a minute
  targets=(test_kernel_backend ssalab_decode_bench)
  [ "$STAGE" = analysis ] && targets=(ssalab_analysis_bench)
  build_targets "$STAGE" "${targets[@]}"
  if [ "$STAGE" = decode ]; then
    run_backend_tests
    timeout 240 ./build-gpu/ssalab_decode_bench ${DECODE_BENCH_ARGS:-} 2>&1 | tee "$OUT/decode_bench.txt"
    for tool in memcheck racecheck; do
      timeout 200 compute-sanitizer --tool $tool --kernel-name kns=decode_ ./build-gpu/ssalab_decode_bench \
        --contexts 8192 --batches 1,4 --iters 1 --no-model --bf16-pooling > "$OUT/decode_$tool.txt" 2>&1
      echo "$tool rc=$?: $(grep SUMMARY "$OUT/decode_$tool.txt")"
    done
  else
    timeout 400 ./build-gpu/ssalab_analysis_bench --device cuda --tokens 8192,32768 2>&1 | tee "$OUT/analysis_bench.txt"
  fi
fi
if [ "$STAGE" = kbench ]; then
  # FlexAttention first (Python, the selection through the C API library), then
  # the C++ benchmark, which checks our forward, times everything else and
  # merges the Flex numbers into its table (kernels/README.md).
  build_targets kbench ssalab_kernel_bench ssalab_kernels_c
  SHAPES=${KBENCH_SHAPES:-A,B,C,D}
  FLEX=()
  if [ "${KBENCH_FLEX:-1}" != 0 ]; then
    PYTHONUNBUFFERED=1 timeout 330 python3 kernels/bench/flex_bench.py --lib build-gpu/kernels/libssalab_kernels_c.so \
      --shapes "$SHAPES" --profile C --json "$OUT/flex.json" 2>&1 | grep -v Warning | tee "$OUT/flex.txt"
    echo "flex_bench rc=${PIPESTATUS[0]}"
    FLEX=(--flex "$OUT/flex.json")
  fi
  # beside the random selections, a trained model's, replayed at each shape
  # (bench/inputs/README.md); KBENCH_SELECTIONS= (empty) leaves it out
  SELECTIONS=${KBENCH_SELECTIONS-bench/inputs/ssa-shipped-layer2-selected-blocks.npy}
  timeout 300 ./build-gpu/ssalab_kernel_bench --shapes "$SHAPES" "${FLEX[@]}" ${KBENCH_ARGS:-} \
    ${SELECTIONS:+--selections "$SELECTIONS"} --json "$OUT/kernel_bench.json" 2>&1 | tee "$OUT/kernel_bench.txt"
  echo "ssalab_kernel_bench rc=${PIPESTATUS[0]}"
fi
if [ "$STAGE" = perf ]; then
  build_targets perf test_kernel_backend test_kernels ssalab_decode_bench ssalab_kernel_bench
  run_backend_tests
  timeout 180 ./build-gpu/kernels/test_kernels > "$OUT/test_kernels.txt" 2>&1
  echo "test_kernels rc=$?"; grep -E "FAIL|failed|passed" "$OUT/test_kernels.txt" | tail -5
  # the selection's fp16 scaling (padded scale rows, both range cases) under memcheck
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/kernels/test_kernels q-sd \
    > "$OUT/sanitize_select.txt" 2>&1
  echo "compute-sanitizer test_kernels q-sd rc=$?"; grep -E "ERROR SUMMARY|failed checks" "$OUT/sanitize_select.txt"
  timeout 200 ./build-gpu/ssalab_decode_bench --no-model 2>&1 | tee "$OUT/decode_bench.txt" | grep -E "^\| 1B|^\| 16q" | head -40
  kernel_bench_recorded "select | sparse fwd |"
  for cfg in "131072 32" "8192 1"; do
    set -- $cfg
    timeout 120 ncu --kernel-name regex:decode_ --launch-count 3 --section SpeedOfLight --section WarpStateStats \
      --section Occupancy --section LaunchStats ./build-gpu/ssalab_decode_bench --contexts $1 --batches $2 --iters 1 \
      --no-model > "$OUT/ncu_decode_$1_$2.txt" 2>&1
    echo "ncu $1 x $2 rc=$? (${SECONDS}s)"
  done
fi
if [ "$STAGE" = fwdtiles ]; then
  build_targets fwdtiles test_kernel_backend test_kernels ssalab_kernel_bench
  timeout 180 ./build-gpu/kernels/test_kernels > "$OUT/test_kernels.txt" 2>&1
  echo "test_kernels rc=$?"; grep -E "FAIL|failed checks" "$OUT/test_kernels.txt" | tail -8
  grep -E "^\[|query tile" "$OUT/test_kernels.txt" | grep -B1 "query tile" | grep -E "smooth|default run" | head -12
  run_backend_tests
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/kernels/test_kernels smooth-q \
    > "$OUT/sanitize_fwdtiles.txt" 2>&1
  echo "compute-sanitizer test_kernels smooth-q rc=$?"; grep -E "ERROR SUMMARY|failed checks" "$OUT/sanitize_fwdtiles.txt"
  kernel_bench_recorded "select | fwd |"
  sed -n '/^| shape | config | select | sparse fwd |/,/^$/p' "$OUT/kernel_bench.txt"
  if [ "${NCU_SELECT:-0}" = 1 ]; then  # where the selection's time goes at C (bs16 k16, the first launch)
    timeout 200 ncu --kernel-name regex:select_kernel --launch-count 1 --section SpeedOfLight \
      --section WarpStateStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
      --section MemoryWorkloadAnalysis --section InstructionStats ./build-gpu/ssalab_kernel_bench --shapes C \
      --reps 1 --no-dual > "$OUT/ncu_select_C.txt" 2>&1
    echo "ncu select C rc=$? (${SECONDS}s)"
    grep -E "Duration|Throughput|Pipe|Stall|Registers|Achieved Occupancy|Issue Slots|L2 Hit" "$OUT/ncu_select_C.txt" | head -40
  fi
fi
if [ "$STAGE" = train1b ]; then
  # issue 12 part 3: the ssa/full training step of a 1B-shaped layer stack (the 1b preset's layer
  # shape, 4 layers; bf16 autocast, CUDA kernels) at 8K and 32K, then the small preset at 8K
  build_targets train1b ssalab_bench
  for seq in 8192 32768; do
    timeout 240 ./build-gpu/ssalab_bench 1b 3 $seq 1 full,ssa --layers 4 2>&1 | tee "$OUT/bench_1b4l_$seq.txt"
    echo "rc=$? (${SECONDS}s)"
  done
  timeout 150 ./build-gpu/ssalab_bench small 10 8192 1 2>&1 | tee "$OUT/bench_small_8k.txt"
fi
if [ "$STAGE" = trainsel ]; then
  # issue 12 part 2: a larger trained model's selection for the kernel benchmark. Trains the small
  # preset (27.9M, 8 heads / 1 KV head, d64) with SSA on the Python docs (.gpu-sysroot/corpus/full),
  # records its layer-4 selection on 16,000 bytes of the tutorial (full inference, top-k), prints
  # the selection locality, and times the sparse kernels at C and D replaying it (about 6 minutes)
  build_targets trainsel ssalab ssalab_kernel_bench
  RUN=${TRAINSEL_RUN:-/tmp/trainsel}
  timeout 420 ./build-gpu/ssalab train --preset small --method ssa --corpus "$PWD/.gpu-sysroot/corpus/full" \
    --out "$RUN" --cache /tmp/trainsel-cache --set train.steps=${TRAINSEL_STEPS:-1000} --set train.seq_len=2048 \
    --set train.batch_size=8 --set train.eval_every=250 --quiet > "$OUT/trainsel_train.txt" 2>&1
  echo "train rc=$? (${SECONDS}s)"; tail -8 "$OUT/trainsel_train.txt"
  cat .gpu-sysroot/corpus/tutorial/*.txt | head -c 16000 > /tmp/trainsel.txt
  timeout 120 ./build-gpu/ssalab analyze "$RUN/checkpoint" --text-file /tmp/trainsel.txt --no-png --device cuda \
    --out /tmp/trainsel-analyze > "$OUT/trainsel_analyze.txt" 2>&1
  echo "analyze rc=$? (${SECONDS}s)"; grep -E "^mean|^selections" "$OUT/trainsel_analyze.txt"
  cp /tmp/trainsel-analyze/layer4_selected_blocks.npy "$OUT/ssa-small-trained-layer4-selected-blocks.npy"
  cp "$RUN/summary.json" "$OUT/trainsel_summary.json"
  timeout 200 ./build-gpu/ssalab_kernel_bench --shapes C,D --sparse-only --no-dual \
    --selections "$OUT/ssa-small-trained-layer4-selected-blocks.npy" > "$OUT/trainsel_kbench.txt" 2>&1
  echo "kbench rc=$? (${SECONDS}s)"; grep -E "^[CD]  " "$OUT/trainsel_kbench.txt" | cut -c1-150
fi
if [ "$STAGE" = select ]; then
  # the selection (issue 12 part 1): kernel tests (both slot paths), the backend's nsa-chunked
  # checks, memcheck on the k-32 case, and the sparse kernels at C and D, recorded selection included
  build_targets select test_kernels ssalab_kernel_bench test_kernel_backend
  timeout 120 ./build-gpu/kernels/test_kernels > "$OUT/test_kernels.txt" 2>&1
  echo "test_kernels rc=$? (${SECONDS}s)"; grep -E "FAIL|failed checks" "$OUT/test_kernels.txt" | tail -4
  timeout 120 ./build-gpu/kernels/test_kernel_backend > "$OUT/test_kernel_backend.txt" 2>&1
  echo "test_kernel_backend rc=$? (${SECONDS}s)"; grep -E "FAIL|nsa-chunked T|failed|passed" "$OUT/test_kernel_backend.txt" | tail -8
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/kernels/test_kernels "k32" \
    > "$OUT/sanitize_select_k32.txt" 2>&1
  echo "compute-sanitizer k32 rc=$? (${SECONDS}s)"; grep -E "ERROR SUMMARY|failed checks" "$OUT/sanitize_select_k32.txt"
  timeout 100 ./build-gpu/ssalab_kernel_bench --shapes C,D --sparse-only \
    --selections bench/inputs/ssa-shipped-layer2-selected-blocks.npy --json "$OUT/kb_select.json" > "$OUT/kb_select.txt" 2>&1
  echo "bench rc=$? (${SECONDS}s)"; grep -E "^[CD]  (select|sparse)" "$OUT/kb_select.txt" | cut -c1-150
fi
if [ "$STAGE" = selwide ]; then
  # the selection's wide kernel (64 blocks a chunk, one m64n64k16 wgmma per k-step and term; issue 12 part 1)
  # forced on at 8 and 4 warps a CTA: kernel tests on each (the wide kernel's rows must equal the register-slot
  # path's, which is select_kernel's), memcheck on the cache cases, A-D timed against select_kernel
  # (SSA_SELECT_WIDE=0), 4 warps at C and D; SELWIDE_NCU=1 adds ncu's view at C (about 5 minutes)
  build_targets selwide test_kernels ssalab_kernel_bench
  # SELWIDE_TESTS_DEFAULT_ONLY=1: tests at the default warp count only; SELWIDE_QUICK=1: that, and C and D
  # timed only (about 3 minutes on a fresh machine)
  selwide_tests=("wide SSA_SELECT_WIDE=1" "wide_w4 SSA_SELECT_WIDE=1 SSA_SELECT_WIDE_WARPS=4")
  selwide_benches=("narrow A,B,C,D SSA_SELECT_WIDE=0" "wide A,B,C,D SSA_SELECT_WIDE=1"
    "auto A,B,C,D" "wide_w4 C,D SSA_SELECT_WIDE=1 SSA_SELECT_WIDE_WARPS=4")
  [ "${SELWIDE_QUICK:-0}" = 1 ] && selwide_benches=("narrow C,D SSA_SELECT_WIDE=0" "wide C,D SSA_SELECT_WIDE=1")
  [ "${SELWIDE_QUICK:-0}" = 1 ] || [ "${SELWIDE_TESTS_DEFAULT_ONLY:-0}" = 1 ] && selwide_tests=("${selwide_tests[0]}")
  kernel_tests_under "${selwide_tests[@]}"
  for cfg in "${selwide_benches[@]}"; do
    set -- $cfg
    name=$1 shapes=$2
    shift 2
    env "$@" timeout 100 ./build-gpu/ssalab_kernel_bench --shapes "$shapes" --sparse-only \
      --json "$OUT/kb_$name.json" > "$OUT/kb_$name.txt" 2>&1
    echo "bench $name rc=$? (${SECONDS}s)"; grep -E "^[ABCD]  select" "$OUT/kb_$name.txt" | cut -c1-60
  done
  SSA_SELECT_WIDE=1 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/kernels/test_kernels Tk \
    > "$OUT/sanitize_selwide_Tk.txt" 2>&1
  echo "memcheck Tk rc=$? (${SECONDS}s)"; grep -E "ERROR SUMMARY|failed checks" "$OUT/sanitize_selwide_Tk.txt"
  [ "${SELWIDE_NCU:-0}" = 1 ] && profile_select_wide
  tar -czf "$OUT/selwide.tar.gz" -C "$OUT" $(cd "$OUT" && ls test_kernels_*.txt sanitize_selwide_*.txt kb_*.txt kb_*.json \
    ncu_select_wide_C.txt ncu_select_wide_C_mix.txt ncu_select_wide_C_sass.csv gpu.txt selwide_build.txt 2>/dev/null)
fi
# queued: what the twelfth and thirteenth sessions left for the next call, in one call (a machine start is
# scarce): on the branch wip/select-desc-redux, its select.cu against main's (`git show
# main:kernels/select.cu > .ab/select_main.cu`; carry .gpu-sysroot and .ab) with ncu's view of the wide
# kernel, then hostbound with its engine tests (about 10 minutes on a fresh machine: run it under
# `timeout 560` in a 590 s call and copy $OUT's *.txt and *.tar.gz back, so a cut tail, the 1B-shaped
# stack's timings, loses only itself)
if [ "$STAGE" = queued ]; then
  [ -f .ab/select_main.cu ] || { echo "queued: .ab/select_main.cu is missing (git show main:kernels/select.cu)"; exit 1; }
  SELECT_AB_BASE=.ab/select_main.cu SELAB_NCU=1 SELECT_AB_SHAPES=${SELECT_AB_SHAPES:-A,B,C,D} \
    OUT="$OUT" bash scripts/gpu_check.sh selab
  OUT="$OUT" bash scripts/gpu_check.sh hostbound
  tar -czf "$OUT/hostbound.tar.gz" -C "$OUT" $(cd "$OUT" && ls test_engine_cuda_train.txt ops_small_8k.txt phases_small_8k.txt bench_small_8k_b*.txt bench_1b4l_8k_b*.txt hostbound_build.txt 2>/dev/null)
fi
if [ "$STAGE" = selab ]; then  # a change to kernels/select.cu against older copies (SELECT_AB_BASE: files
  # in a carried folder, e.g. `git show HEAD:kernels/select.cu > .ab/select_head.cu`): the kernel tests with
  # the defaults and with the wide kernel forced on, memcheck on the cache cases, then A-D timed on the new
  # file and each baseline in turn, twice each (about 4 minutes on a fresh machine)
  base=${SELECT_AB_BASE:?SELECT_AB_BASE names the baseline select.cu files}
  build_targets selab test_kernels ssalab_kernel_bench
  # SELAB_WIDE_TESTS=0: the defaults only (about 75 s less)
  selab_tests=("default")
  [ "${SELAB_WIDE_TESTS:-1}" = 1 ] && selab_tests+=("wide SSA_SELECT_WIDE=1")
  kernel_tests_under "${selab_tests[@]}"
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/kernels/test_kernels Tk \
    > "$OUT/sanitize_selab_Tk.txt" 2>&1
  echo "memcheck Tk rc=$? (${SECONDS}s)"; grep -E "ERROR SUMMARY|failed checks" "$OUT/sanitize_selab_Tk.txt"
  mkdir -p /tmp/selab
  cp ./build-gpu/ssalab_kernel_bench /tmp/selab/new
  cp kernels/select.cu /tmp/select_new.cu
  sides=new
  for file in $base; do
    side=$(basename "$file" .cu)
    cp "$file" kernels/select.cu
    build_targets "selab_$side" ssalab_kernel_bench
    cp ./build-gpu/ssalab_kernel_bench "/tmp/selab/$side"
    sides="$sides $side"
  done
  cp /tmp/select_new.cu kernels/select.cu
  for run in 1 2; do
    for side in $sides; do
      timeout 100 "/tmp/selab/$side" --shapes ${SELECT_AB_SHAPES:-A,B,C,D} --sparse-only > "$OUT/kb_selab_${side}_$run.txt" 2>&1
      echo "bench $side run $run rc=$? (${SECONDS}s)"; grep -E "^[ABCD]  select" "$OUT/kb_selab_${side}_$run.txt" | cut -c1-60
    done
  done
  [ "${SELAB_NCU:-0}" = 1 ] && profile_select_wide /tmp/selab/new  # (the new file's; about 2 minutes)
  tar -czf "$OUT/selab.tar.gz" -C "$OUT" $(cd "$OUT" && ls test_kernels_*.txt sanitize_selab_Tk.txt kb_selab_*.txt gpu.txt \
    selab*_build.txt ncu_select_wide_C* 2>/dev/null)
fi
if [ "$STAGE" = hostbound ]; then  # issue 12 part 3: is the small preset's 8K step bound by launching its
  # kernels (LibTorch eager, about 40 ms for 28M parameters) rather than by the GPU? If so, its time grows
  # little with the batch, and ssa/full counts SSA's extra host work (select, index, sparse, alignment
  # loss) more than its kernels; the 1B-shaped stack as the GPU-bound contrast (about 6 minutes on a fresh
  # machine with the tests, 3 without)
  # HOSTBOUND_TESTS=0: no engine tests. By default the engine's CUDA and training tests first: the
  # training step's CUDA path (select_and_dual, one alignment loss, one read a micro-step)
  if [ "${HOSTBOUND_TESTS:-1}" = 1 ]; then
    build_targets hostbound ssalab_bench test_engine
    timeout 240 ./build-gpu/test_engine "[cuda],[train],[model]" > "$OUT/test_engine_cuda_train.txt" 2>&1
    echo "test_engine [cuda],[train],[model] rc=$? (${SECONDS}s)"; tail -3 "$OUT/test_engine_cuda_train.txt"
  else
    build_targets hostbound ssalab_bench
  fi
  # the ATen operators of one step, per method (ssalab_bench --count-ops): SSA's extra host work counted
  timeout 120 ./build-gpu/ssalab_bench small 1 8192 1 full,moba,ssa --count-ops 2>&1 | tee "$OUT/ops_small_8k.txt"
  echo "ops small rc=$? (${SECONDS}s)"
  # each phase's time to queue and then to finish on the GPU (a sync at each phase's end)
  timeout 120 ./build-gpu/ssalab_bench small 3 8192 1 full,ssa --phases 2>&1 | tee "$OUT/phases_small_8k.txt"
  echo "phases small rc=$? (${SECONDS}s)"
  for batch in 1 2 4; do
    timeout 150 ./build-gpu/ssalab_bench small 5 8192 $batch full,ssa 2>&1 | tee "$OUT/bench_small_8k_b$batch.txt"
    echo "small b$batch rc=$? (${SECONDS}s)"
  done
  for batch in 1 2; do
    timeout 150 ./build-gpu/ssalab_bench 1b 3 8192 $batch full,ssa --layers 4 2>&1 | tee "$OUT/bench_1b4l_8k_b$batch.txt"
    echo "1b4l b$batch rc=$? (${SECONDS}s)"
  done
fi
if [ "$STAGE" = selwg ]; then  # the selection's mma.sync path (SSA_SELECT_WGMMA=0; wgmma is the default on
  # Hopper at d64 and d128): kernel tests and memcheck on it, and A-D timed with and without it
  build_targets selwg test_kernels ssalab_kernel_bench
  SSA_SELECT_WGMMA=0 timeout 100 ./build-gpu/kernels/test_kernels > "$OUT/test_kernels_mma_sync.txt" 2>&1
  echo "test_kernels mma.sync rc=$? (${SECONDS}s)"; grep -E "FAIL|failed checks" "$OUT/test_kernels_mma_sync.txt" | tail -6
  SSA_SELECT_WGMMA=0 timeout 90 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/kernels/test_kernels "d128 B1 Hq32" \
    > "$OUT/sanitize_mma_sync_d128.txt" 2>&1
  echo "compute-sanitizer mma.sync d128 rc=$? (${SECONDS}s)"; grep -E "ERROR SUMMARY|failed checks" "$OUT/sanitize_mma_sync_d128.txt"
  for w in 0 1; do
    SSA_SELECT_WGMMA=$w timeout 80 ./build-gpu/ssalab_kernel_bench --shapes A,B,C,D --sparse-only \
      --selections bench/inputs/ssa-shipped-layer2-selected-blocks.npy > "$OUT/kb_selwg_$w.txt" 2>&1
    echo "bench wgmma=$w rc=$? (${SECONDS}s)"; grep -E "^[ABCD]  select" "$OUT/kb_selwg_$w.txt" | cut -c1-80
  done
fi
if [ "$STAGE" = ncusplit ]; then
  build_targets ncusplit ssalab_kernel_bench
  # one ncu run per kernel: a shared --launch-count would spend itself on the
  # first kernel's warm-up launches
  for kernel in select_kernel sparse_fwd_kernel sparse_dq_kernel sparse_dkv_kernel dkv_reduce_kernel; do
    timeout 120 ncu --kernel-name regex:"$kernel" --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats \
      --section WarpStateStats --section MemoryWorkloadAnalysis \
      ./build-gpu/ssalab_kernel_bench --shapes C --reps 1 --sparse-only > "$OUT/ncu_split_C_$kernel.txt" 2>&1
    echo "ncu $kernel rc=$? (${SECONDS}s)"
    grep -E "^  [a-z_ ]*<|^  [a-z_]+_kernel|Duration|SM Busy|Memory Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|L2 Cache Throughput|Stall|Warp Cycles Per Issued|Issue Slots Busy" \
      "$OUT/ncu_split_C_$kernel.txt" | head -24
  done
fi
if [ "$STAGE" = decodeprof ]; then
  build_targets decodeprof test_kernel_backend ssalab_decode_bench
  run_backend_tests
  # the attention step on the tensor cores (decode_attend_mma, the default) against the scalar kernel
  decode_bench_ab SSA_DECODE_ATTEND_MMA mma
  for tool in memcheck racecheck synccheck; do
    timeout 200 compute-sanitizer --tool $tool --kernel-name kns=decode_ ./build-gpu/ssalab_decode_bench \
      --contexts 8192 --batches 1,4 --iters 1 --no-model --bf16-pooling > "$OUT/decode_$tool.txt" 2>&1
    echo "$tool rc=$?: $(grep SUMMARY "$OUT/decode_$tool.txt")"
  done
  # where the time goes at 128K x 32, bf16 pooled keys
  profile_decode_kernels decode
fi
if [ "$STAGE" = decodenext ]; then
  # the decode kernel's two switches forced each way, whatever the shape would choose: SSA_DECODE_RADIX
  # (the picks by select_by_radix or by warp 0's merge of the candidate lists) and SSA_DECODE_NORMALISE
  # (each group's normalisers combined once by decode_normalise or in every decode_pick CTA): the backend
  # tests (each switch on against off, bit for bit), the decode benchmark of each off and on and of both
  # on, compute-sanitizer with both on
  build_targets decodenext test_kernel_backend ssalab_decode_bench
  run_backend_tests
  decode_bench_ab SSA_DECODE_RADIX radix
  decode_bench_ab SSA_DECODE_NORMALISE normalise
  SSA_DECODE_NORMALISE=1 decode_bench_ab SSA_DECODE_RADIX both
  for tool in memcheck synccheck racecheck; do
    decode_sanitize next $tool SSA_DECODE_RADIX=1 SSA_DECODE_NORMALISE=1
  done
fi
if [ "$STAGE" = decodeauto ]; then
  # the decode kernel's shape-chosen paths (select_by_radix up to 32 chunks a group, decode_normalise where
  # decode_pick would re-read 8 MB of partials, L2 hints at d128) against all three forced off (the kernel
  # of 2026-12-07's start): the backend tests, then the benchmark at 8K to 128K, each way twice, packed into
  # decodeauto.tar.gz; memcheck on the default path at 40K (about 3 minutes)
  build_targets decodeauto test_kernel_backend ssalab_decode_bench
  run_backend_tests
  export DECODE_CONTEXTS=8192,32768,65536,131072
  all_off="SSA_DECODE_RADIX=0 SSA_DECODE_NORMALISE=0 SSA_DECODE_L2HINT=0"
  decode_bench_env off $all_off
  decode_bench_env auto
  decode_bench_env off2 $all_off
  decode_bench_env auto2
  decode_sanitize auto memcheck
  pack_decode_outputs decodeauto
fi
if [ "$STAGE" = decodel2 ]; then
  # SSA_DECODE_L2HINT=1 (decode_scores reads the pooled keys with L2 evict-first and writes the logits
  # with evict-last, decode_pick reads them evict-first) against off: the backend tests (on against off,
  # bit for bit), the benchmark at 8K to 128K twice each way, memcheck with it on, packed into
  # decodel2.tar.gz (about 2 minutes warm)
  build_targets decodel2 test_kernel_backend ssalab_decode_bench
  run_backend_tests
  export DECODE_CONTEXTS=8192,32768,65536,131072
  decode_bench_env l2hint0 SSA_DECODE_L2HINT=0
  decode_bench_env l2hint1 SSA_DECODE_L2HINT=1
  decode_bench_env l2hint0b SSA_DECODE_L2HINT=0
  decode_bench_env l2hint1b SSA_DECODE_L2HINT=1
  decode_sanitize l2hint memcheck SSA_DECODE_L2HINT=1
  pack_decode_outputs decodel2
fi
if [ "$STAGE" = decodestalls ]; then
  # where the decode kernels' warps wait at 128K x 32 (issue 16): ncu's full view and per-instruction stall
  # samples of the scoring, ranking and attend kernels (d64 block 16) and of the attend kernel at d128,
  # packed into one file, decodestalls.tar.gz (about 3 minutes)
  build_targets decodestalls ssalab_decode_bench
  profile_decode_kernels stalls sass "scores regex:decode_scores.*Lb1E" "pick regex:decode_pick" \
    "attend regex:decode_attend_mma" "attend_d128 regex:decode_attend_mma.*Li128E"
  tar -czf "$OUT/decodestalls.tar.gz" -C "$OUT" $(cd "$OUT" && ls ncu_stalls_*) && rm -f "$OUT"/ncu_stalls_*
fi
if [ "$STAGE" = decodeab ]; then
  # A/B of a change to kernels/decode.cu within one call: the checkout's kernel (its backend tests, the
  # decode benchmark, each kernel's time at 128K x 32 without cache flushes between kernels, ncu's
  # per-instruction view of the scores, pick and attend kernels), then the benchmark again on the kernel in
  # each file of $DECODE_AB_BASE (older decode.cu files, e.g. `git show HEAD:kernels/decode.cu`, in a
  # carried folder)
  base=${DECODE_AB_BASE:?DECODE_AB_BASE names the baseline decode.cu}
  bench_args="--contexts ${DECODE_AB_CONTEXTS:-8192,131072} --batches 1,32 --iters 20 --bf16-pooling --no-model"
  build_targets decodeab test_kernel_backend ssalab_decode_bench
  run_backend_tests
  timeout 200 ./build-gpu/ssalab_decode_bench $bench_args > "$OUT/decode_ab_new.txt" 2>&1
  echo "bench new rc=$? (${SECONDS}s)"
  # (DECODE_AB_NCU=0 skips the ncu runs below)
  [ "${DECODE_AB_NCU:-1}" = 0 ] || {
  # kernel durations in the order a step runs them (no flush between kernels: the pick reads logits the
  # scores left in L2, as in the pipeline); bf16 pooled keys at 128K x 32, block 16
  timeout 150 ncu --cache-control none --clock-control none --metrics gpu__time_duration.sum \
    --kernel-name regex:decode_ --csv ./build-gpu/ssalab_decode_bench --contexts 131072 --batches 32 --iters 1 \
    --no-model --bf16-pooling > "$OUT/ncu_decode_durations.csv" 2>&1
  echo "ncu durations rc=$? (${SECONDS}s)"
  profile_decode_kernels ab sass
  }
  cp kernels/decode.cu /tmp/decode_new.cu
  sides=new
  for file in $base; do  # each baseline in turn (several: a list)
    side=$(basename "$file" .cu)
    cp "$file" kernels/decode.cu
    build_targets "decodeab_$side" ssalab_decode_bench
    timeout 200 ./build-gpu/ssalab_decode_bench $bench_args > "$OUT/decode_ab_$side.txt" 2>&1
    echo "bench $side rc=$? (${SECONDS}s)"
    sides="$side $sides"
  done
  cp /tmp/decode_new.cu kernels/decode.cu
  # the bf16-pooled tables side by side
  for side in $sides; do echo "## $side"; grep -A30 "^## Pooled keys in bf16" "$OUT/decode_ab_$side.txt" |
    grep -E "^\| " | cut -d'|' -f2-5,7-9; done
fi
