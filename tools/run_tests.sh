#!/usr/bin/env bash
# Run the whole test suite inside the project environment (make test); extra arguments go
# to pytest (make test-quick passes -m 'not slow').
# Two pytest-xdist workers (EMOTION_ROS_TEST_WORKERS; 0 runs everything in this process),
# each on its own ROS domain (ROS_DOMAIN_ID + worker number) with its own ROS_LOG_DIR
# (test/conftest.py); the tests of one module stay on one worker.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck disable=SC1091
. tools/env.sh
export ROS_LOG_DIR=$root/build/test_ros_log
workers=${EMOTION_ROS_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != 0 ]; then
    parallel=(-n "$workers")
fi
exec python -m pytest test -q -p no:cacheprovider --timeout=900 "${parallel[@]}" "$@"
