#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (Catch2 through ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
SSALAB_TEST_PACKAGES=1 bash scripts/setup.sh
ctest --test-dir "${SSALAB_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" "$@"
# the engine's parsers and ops under AddressSanitizer + UBSan, and each fuzz
# target on 20,000 inputs from a fixed seed (SSALAB_NO_SANITIZE=1 skips it)
[ "${SSALAB_NO_SANITIZE:-0}" = 1 ] || FUZZ_RUNS=${FUZZ_RUNS:-20000} bash scripts/sanitize.sh
