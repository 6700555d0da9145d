#!/usr/bin/env bash
# Times a newcomer's first minutes: from `bash scripts/run.sh` in a fresh
# clone to the app's first drawn frame (the app prints "first frame drawn"),
# packages, configure and build included. Closes the app once it has drawn.
#   scripts/time_to_window.sh CLONE_DIR [LOG]
# For a fresh machine, remove the packages first (see README, "Measured").
# Needs an X display: $DISPLAY, or an Xvfb already installed.
set -euo pipefail
clone=${1:?usage: time_to_window.sh CLONE_DIR [LOG]}
log=${2:-/tmp/time_to_window.log}
if [ -z "${DISPLAY:-}" ]; then
  command -v Xvfb >/dev/null || { echo "no DISPLAY and no Xvfb" >&2; exit 1; }
  Xvfb :97 -screen 0 1600x1000x24 >/dev/null 2>&1 &
  xvfb_pid=$!
  trap 'kill $xvfb_pid 2>/dev/null || true' EXIT
  export DISPLAY=:97
  sleep 1
fi
start=$(date +%s.%N)
stamp() { awk -v now="$(date +%s.%N)" -v t0="$start" -v line="$*" 'BEGIN { printf "%7.1f s  %s\n", now - t0, line }'; }
cd "$clone"
# every line of run.sh's output, stamped; stop at the first frame
( bash scripts/run.sh 2>&1 ) | while IFS= read -r line; do
  stamp "$line"
  if [[ $line == *"first frame drawn"* ]]; then
    pkill -INT -x ssalab || true
    break
  fi
done | tee "$log" | grep -E "installing|\[1/|Linking CXX executable ssalab$|first frame" || true
