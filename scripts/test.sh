#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (Catch2 through ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir "${SSALAB_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" "$@"
