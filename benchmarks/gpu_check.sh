#!/usr/bin/env bash
# The GPU check, as ONE command for the device machine (bare H100/H200, torch
# 2.11 + CUDA 13, Python 3.12, no network):
#   bash benchmarks/gpu_check.sh
# It builds the extension, runs the CUDA tests, runs compute-sanitizer
# (memcheck, racecheck) over every CUDA op, runs the GPU benchmarks, and writes
# its logs and results under $OUT (default: benchmarks/results/gpu-check).
# Each stage has its own time limit so the whole stays under 8 minutes; the
# last thing printed is a summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-16}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export PATH="$CUDA_HOME/bin:$PATH"
export PYTHONPATH="$PWD/pyext${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"

declare -a STAGES RESULTS SECONDS_TAKEN
run_stage() {  # run_stage NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s) =="
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  STAGES+=("$name")
  RESULTS+=("$([ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc)")")
  SECONDS_TAKEN+=("$((SECONDS - start))")
  return $rc
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  lscpu | grep -E "Model name|^CPU\(s\)"
} 2>&1 | sed 's/^/    /' > "$OUT/summary.md"
cat "$OUT/summary.md"

if run_stage build 240 env FORCE_CUDA=1 "$PY" setup.py build_ext --inplace; then
  run_stage tests 180 "$PY" -m pytest tests -m cuda -q -p no:cacheprovider
  run_stage memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" benchmarks/cuda_ops_smoke.py
  run_stage racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 1 "$PY" benchmarks/cuda_ops_smoke.py --small
  run_stage bench 150 "$PY" benchmarks/gpu_bench.py --out "$OUT"
fi

echo | tee -a "$OUT/summary.md"
printf '| stage | result | seconds |\n|---|---|---|\n' | tee -a "$OUT/summary.md"
for i in "${!STAGES[@]}"; do
  echo "| ${STAGES[$i]} | ${RESULTS[$i]} | ${SECONDS_TAKEN[$i]} |"
done | tee -a "$OUT/summary.md"
[ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
