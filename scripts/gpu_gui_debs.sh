#!/usr/bin/env bash
# The Debian packages the GPU machine lacks to build and run the app's GUI
# (issue "The app on a GPU workstation", part 4): GLFW, Dear ImGui and the
# OpenGL headers to build it; Xvfb and Mesa's software OpenGL (llvmpipe) to
# run it without a display. The GPU machine has dpkg-deb but no package
# access, so the .deb files are downloaded here and unpacked there.
#
# Unpacked they are over 150 MB (libLLVM alone is 100 MB), and a device call
# carries at most 64 MiB with the repository (about 33 MB) in it, so the .deb
# files travel in two parts, one call each, and what a call unpacks stays on
# the machine while it is warm (ignored paths are kept between calls that
# follow within its idle time):
#
#   here:   bash scripts/gpu_gui_debs.sh download     .gl/part1 (libLLVM), .gl/part2 (the rest)
#   call 1: carry [".gl/part1"]:  bash scripts/gpu_gui_debs.sh unpack
#   call 2: carry [".gl/part2"]:  bash scripts/gpu_gui_debs.sh unpack
#   call 3: carry [".gpu-sysroot"]: source scripts/gpu_gui_debs.sh env; build and run
#
# `unpack` extracts every .deb under .gl/part*/ into .gl/root. `env` (sourced)
# exports what the build and Xvfb need: the library, pkg-config and CMake
# paths, Mesa's driver folder, and XKB's data and compiler for Xvfb.
# `selftest` (here) unpacks into a scratch root, starts the unpacked Xvfb and
# checks from /proc/PID/maps that the X server and a GL client run on the
# unpacked files, not on this machine's.
[ "${BASH_SOURCE[0]}" = "$0" ] && set -euo pipefail  # not when sourced for `env`
GL=${GL_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.gl}

# libLLVM (with libz3, which it links) alone; everything else in part 2.
PART1=(libllvm15 libz3-4)
PART2=(xvfb libxfont2 libfontenc1 libxkbfile1 x11-xkb-utils xkb-data libpixman-1-0 libunwind8
       libgl1-mesa-dri libglapi-mesa libglx-mesa0 libgl1 libglx0 libopengl0 libglvnd0 libgbm1 libdrm2
       libdrm-amdgpu1 libdrm-intel1 libdrm-nouveau2 libdrm-radeon1 libpciaccess0 libsensors5 libxshmfence1
       libxxf86vm1 libx11-xcb1 libxcb-dri2-0 libxcb-dri3-0 libxcb-glx0 libxcb-present0 libxcb-randr0
       libxcb-sync1 libxcb-xfixes0 libxcb-shm0 libelf1 libedit2 libbsd0 libmd0 libwayland-server0
       libglfw3 libglfw3-dev libimgui-dev libgl-dev libglx-dev libopengl-dev libegl1 libegl-dev
       mesa-common-dev libx11-dev libxcb1-dev libxau-dev libxdmcp-dev x11proto-dev xorg-sgml-doctools)

# What a bare machine may lack for those (gpu_gui_demo.sh unpacks them apart
# and searches them last); part of the third call's carry.
FALLBACK=(libfreetype6 libpng16-16 libbrotli1 libxml2 libicu72 libaudit1 libcap-ng0 libgcrypt20 libgpg-error0
          libselinux1 libsystemd0 liblz4-1 libzstd1 liblzma5 libcap2 libbz2-1.0 libx11-6 libxau6 libxdmcp6
          libxext6 libxfixes3 libxcb1 libexpat1 libffi8 libtinfo6)

download() {
  apt-get update -qq >/dev/null 2>&1 || true
  rm -rf "$GL/fallback" && mkdir -p "$GL/fallback"
  (cd "$GL/fallback" && apt-get download "${FALLBACK[@]}" >/dev/null)
  echo "$GL/fallback: $(ls "$GL/fallback" | wc -l) packages, $(du -sh "$GL/fallback" | cut -f1)"
  for part in 1 2; do
    local dir="$GL/part$part"
    rm -rf "$dir" && mkdir -p "$dir"
    local -n pkgs="PART$part"
    (cd "$dir" && apt-get download "${pkgs[@]}" >/dev/null)
    echo "$dir: $(ls "$dir" | wc -l) packages, $(du -sh "$dir" | cut -f1)"
  done
}

unpack() {
  local root=${1:-$GL/root} n=0
  mkdir -p "$root"
  for deb in "$GL"/part*/*.deb; do
    [ -e "$deb" ] || continue
    dpkg-deb -x "$deb" "$root"
    n=$((n + 1))
  done
  # pkg-config files point into the root rather than /usr
  find "$root" -name "*.pc" -exec sed -i "s#^prefix=/usr#prefix=\${pcfiledir}/../../..#" {} +
  echo "unpacked $n packages into $root ($(du -sh "$root" | cut -f1))"
}

# Exports for a root made by unpack (sourced: `source scripts/gpu_gui_debs.sh env [ROOT]`).
env_for() {
  local root=${1:-$GL/root}
  local lib=$root/usr/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
  export PKG_CONFIG_PATH=$lib/pkgconfig:$root/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}
  export CMAKE_PREFIX_PATH=$root/usr${CMAKE_PREFIX_PATH:+;$CMAKE_PREFIX_PATH}
  export LIBGL_DRIVERS_PATH=$lib/dri            # Mesa's swrast_dri.so (llvmpipe)
  export __EGL_VENDOR_LIBRARY_DIRS=$root/usr/share/glvnd/egl_vendor.d
  export LIBGL_ALWAYS_SOFTWARE=1
  export PATH=$root/usr/bin:$PATH                # Xvfb and xkbcomp
}

# Starts the unpacked Xvfb on display $1 and prints its pid.
start_xvfb() {
  local display=$1 root=${2:-$GL/root}
  # Xvfb compiles its keymap (from -xkbdir) with the xkbcomp at its
  # compiled-in path, /usr/bin/xkbcomp, and has no option to move it: on a
  # machine without one, the unpacked xkbcomp is linked there (the GPU
  # machine runs as root; nothing else there uses the name)
  if [ ! -e /usr/bin/xkbcomp ] && [ -w /usr/bin ]; then
    ln -s "$root/usr/bin/xkbcomp" /usr/bin/xkbcomp && echo "linked /usr/bin/xkbcomp to the unpacked one" >&2
  fi
  "$root/usr/bin/Xvfb" ":$display" -screen 0 1600x1000x24 -nolisten tcp -xkbdir "$root/usr/share/X11/xkb" \
    >/tmp/xvfb-$display.log 2>&1 &
  echo $!
}

selftest() {
  local root
  root=$(mktemp -d)
  [ -d "$GL/part1" ] && [ -d "$GL/part2" ] || download
  unpack "$root" >/dev/null
  env_for "$root"
  local display=97 pid
  pid=$(start_xvfb $display "$root")
  sleep 2
  kill -0 "$pid" 2>/dev/null || { echo "selftest: Xvfb did not start:"; cat /tmp/xvfb-$display.log; exit 1; }
  grep -q "$root" "/proc/$pid/exe" 2>/dev/null || readlink "/proc/$pid/exe" | grep -q "$root" ||
    { echo "selftest: the X server is not the unpacked one"; kill "$pid"; exit 1; }
  local app=${SSALAB_APP:-$GL/../build/ssalab}
  local ok=1
  if [ -x "$app" ]; then
    DISPLAY=:$display timeout 60 "$app" gui --demo /tmp/gui-debs-selftest >/tmp/gui-debs-selftest.log 2>&1 &
    local tpid=$!
    sleep 15
    local apid
    apid=$(pgrep -P "$tpid" | head -1)  # the app, under timeout
    local maps=/proc/$apid/maps
    for lib in swrast_dri.so libLLVM-15.so libGLX_mesa.so.0 libglfw.so.3; do
      if grep -q "$root.*$lib" "$maps" 2>/dev/null; then echo "  $lib from the unpacked root"; else echo "  $lib NOT from the root"; ok=0; fi
    done
    kill "$tpid" 2>/dev/null || true
  else
    echo "selftest: $app not built; only Xvfb checked"
  fi
  kill "$pid" 2>/dev/null || true
  rm -rf "$root"
  [ $ok = 1 ] && echo "selftest: ok" || { echo "selftest: failed"; exit 1; }
}

case "${1:-}" in
  download) download ;;
  unpack) unpack "${2:-}" ;;
  env) env_for "${2:-}" ;;
  xvfb) start_xvfb "${2:-99}" "${3:-}" ;;
  selftest) selftest ;;
  *) echo "usage: $0 download | unpack [ROOT] | env [ROOT] (sourced) | xvfb DISPLAY [ROOT] | selftest" >&2
     [ "${BASH_SOURCE[0]}" = "$0" ] && exit 2 ;;
esac
