#!/usr/bin/env bash
# make demo: replay the sample bag into the node graph and report alerts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck disable=SC1091
. tools/env.sh
exec python -m emotion_ros.ros.demo "$@"
