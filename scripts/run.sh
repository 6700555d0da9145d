#!/usr/bin/env bash
# Installs what is missing, builds, and opens the app on its built-in default
# (a tiny SSA model training live on the Python docs corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./"${SSALAB_BUILD_DIR:-build}"/ssalab "$@"
