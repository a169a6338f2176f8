#!/usr/bin/env bash
# Every GPU measurement of the project in one run (see benchmarks/gpu_suite.py for what and how):
#   bash benchmarks/gpu_suite.sh --out DIR          # full sizes, one CUDA GPU, under 8 minutes on an H200
#   bash benchmarks/gpu_suite.sh --tiny --out DIR   # every part at a tiny size on CPU, seconds
# Writes DIR/gpu_suite.json and DIR/gpu_suite.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python}" benchmarks/gpu_suite.py "$@"
