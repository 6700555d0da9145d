#!/usr/bin/env bash
# Installs the Debian 12 packages ssalab builds against (idempotent: when all
# are present it only checks and returns), then configures and builds.
#   scripts/setup.sh            install + build (Release, GUI if possible)
#   SSALAB_NO_BUILD=1 scripts/setup.sh   install only
#   SSALAB_BUILD_TARGETS=ssalab scripts/setup.sh   install + build the app only
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config libopenblas0-pthread
      libtorch-dev libsentencepiece-dev sentencepiece
      libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev libstb-dev
      libimgui-dev libglfw3-dev libgl-dev libpcre2-dev libutf8proc-dev zlib1g-dev
      libgloo-dev python3.11-doc)   # python3.11-doc: the default English corpus (~11 MB of .rst text)
# libgloo-dev: the headers of Gloo, which LibTorch's c10d process groups use
# (data-parallel training between processes on CPUs)
# libopenblas0-pthread: without it LibTorch falls back to the reference BLAS (6x slower)
# SSALAB_TEST_PACKAGES=1 (scripts/test.sh): also what the tests need: Catch2,
# Xvfb for the GUI demo test, clang's libFuzzer and sanitizers (scripts/sanitize.sh)
if [ "${SSALAB_TEST_PACKAGES:-0}" = 1 ]; then
  PKGS+=(catch2 xvfb xauth clang libclang-rt-14-dev)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "[setup] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "${SSALAB_NO_BUILD:-0}" = 1 ] && exit 0
BUILD=${SSALAB_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release ${SSALAB_CMAKE_ARGS:-} >/dev/null
# SSALAB_BUILD_TARGETS: only these targets (run.sh: the app alone); default all
cmake --build "$BUILD" -j"$(nproc)" ${SSALAB_BUILD_TARGETS:+--target $SSALAB_BUILD_TARGETS}
