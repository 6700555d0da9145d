#!/usr/bin/env bash
# Installs what is missing, builds, and opens the app on its built-in default
# (a tiny SSA model training live on the Python docs corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
# the app alone: no tests, benchmarks or CUDA kernels (the test command builds those)
SSALAB_BUILD_TARGETS=${SSALAB_BUILD_TARGETS:-ssalab} bash scripts/setup.sh
exec ./"${SSALAB_BUILD_DIR:-build}"/ssalab "$@"
