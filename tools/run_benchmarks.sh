#!/usr/bin/env bash
# make bench: run every benchmark and print its tables (numbers go to docs/benchmarks.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck disable=SC1091
. tools/env.sh
python benchmarks/bench_perception.py
python benchmarks/bench_cameras.py
python benchmarks/bench_evaluation.py
if [ -f benchmarks/bench_llava.py ]; then python benchmarks/bench_llava.py; fi
