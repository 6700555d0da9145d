#!/usr/bin/env bash
# compute-sanitizer over the kernel tests on small shapes (GPU machine):
# memcheck (out-of-bounds and misaligned accesses, leaks), racecheck (shared
# memory hazards), synccheck (barrier misuse) and initcheck (reads of global
# memory nothing wrote). Every case of test_kernels runs selection, transposed
# index, sparse forward, both backward kernels (including the split dK/dV
# path) and statistics with the pooled maps; test_dual runs the experimental
# fused dual-stream kernels on the same shapes.
#   bash kernels/tests/sanitize.sh [build dir holding test_kernels and test_dual]   (exit 0 = all clean)
set -o pipefail
DIR=${1:-build-kernels}
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[ -x "$SAN" ] || { echo "compute-sanitizer not found"; exit 2; }
for b in test_kernels test_dual; do [ -x "$DIR/$b" ] || { echo "no $b in $DIR"; exit 2; }; done
# Substrings of the case names in the tests: G1 batch 2 fp16 d128; G2 bs64;
# G32 with k above the past blocks; G3 split dK/dV items; all-ties with a
# popular block; G16 batch 2; G16 with a 1-token last block at bs128; and
# (test_kernels only) queries at an offset against a longer key cache.
CASES=("T517 " "T300 " "T260 " "T333 bs16 k5" "T256 " "T333 bs16 k8" "T129 ")
CACHE_CASES=("Tk700 " "Tk600 ")
failed=0
for tool in memcheck racecheck synccheck initcheck; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  for run in "${CASES[@]/#/test_kernels:}" "${CACHE_CASES[@]/#/test_kernels:}" "${CASES[@]/#/test_dual:}"; do
    bin=${run%%:*} c=${run#*:}
    log=$(mktemp)
    SECONDS=0
    timeout "${SANITIZE_TIMEOUT:-600}" "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 9 --print-limit 10 "$DIR/$bin" "$c" > "$log" 2>&1
    rc=$?
    summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -1)
    checks=$(grep -E "cases, [0-9]+ failed" "$log" | tail -1)
    printf '%-10s %-12s %-14s rc=%d %4ds  %s | %s\n' "$tool" "$bin" "[$c]" "$rc" "$SECONDS" "${summary:-no summary}" "$checks"
    if [ $rc -ne 0 ]; then
      failed=1
      grep -E "=========" "$log" | head -20
    fi
    rm -f "$log"
  done
done
exit $failed
