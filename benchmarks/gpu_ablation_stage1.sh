#!/usr/bin/env bash
# Stage 1 of the ablation (benchmarks/bench_ablation.py) on one CUDA GPU: `multicsr generate` at
# w = 0 and w = 0.3 for each GGUF given, float32, greedy, 32 new tokens, the prompt set the CLI picks
# for the model (base-2shot for Gemma, which has no chat template; syncse-pool for SmolLM2).
#
#   bash benchmarks/gpu_ablation_stage1.sh PREMISES OUT NAME=FILE.gguf [NAME=FILE.gguf ...]
#
# writes OUT/NAME-w0.0.parquet, OUT/NAME-w0.3.parquet and OUT/stage1_gpu.json (each run's report,
# wall seconds and the GPU). bench_ablation.py --generated OUT then trains on these corpora
# (input.triplets) instead of generating on the CPU. A model that fails is reported and skipped.
set -uo pipefail
if [ $# -lt 3 ] || [ ! -f "$1" ]; then
  echo "usage: bash benchmarks/gpu_ablation_stage1.sh PREMISES OUT NAME=FILE.gguf [NAME=FILE.gguf ...] (PREMISES must be a file)" >&2
  exit 2
fi
premises=$1 out=$2
shift 2
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD" PYTHONUNBUFFERED=1
mkdir -p "$out"
report="$out/stage1_gpu.json"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "{\"gpu\": \"${gpu:-none}\", \"premises_file\": \"$premises\", \"runs\": [" >"$report"
first=1
for spec in "$@"; do
  name=${spec%%=*} gguf=${spec#*=}
  for omega in 0.0 0.3; do
    started=$(date +%s.%N)
    if json=$("${PYTHON:-python3}" -c 'from multicsr.cli import main; main()' generate --llm "$gguf" --premises "$premises" \
        --out "$out/$name-w$omega.parquet" --omega "$omega" --max-new-tokens 32 --batch-size 128 \
        --workdir "${TMPDIR:-/tmp}/multicsr-gpu-stage1" \
        --set generation.device="${DEVICE:-cuda}" --set generation.dtype=float32); then status=ok; else status=failed; json=null; fi
    wall=$("${PYTHON:-python3}" -c "import time; print(round(time.time() - $started, 1))")
    echo "$name w=$omega: $status in $wall s"
    [ $first = 1 ] || echo "," >>"$report"
    first=0
    echo "{\"llm\": \"$name\", \"omega\": $omega, \"status\": \"$status\", \"wall_s\": $wall, \"report\": $json}" >>"$report"
  done
done
echo "]}" >>"$report"
"${PYTHON:-python3}" -m json.tool "$report" >/dev/null && echo "wrote $report"
