#!/usr/bin/env bash
# Run the whole test suite inside the project environment (make test).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck disable=SC1091
. tools/env.sh
export ROS_LOG_DIR=$root/build/test_ros_log
exec python -m pytest test -q -p no:cacheprovider --timeout=900 "$@"
