#!/usr/bin/env bash
# The GPU check, as ONE command for the device machine (bare H100/H200, torch
# 2.11 + CUDA 13, Python 3.12, no network):
#   bash benchmarks/gpu_check.sh
# It builds the extension, runs the CUDA tests, runs compute-sanitizer
# (memcheck, racecheck) over every CUDA op, runs the GPU benchmarks, and writes
# its logs and results under $OUT (default: benchmarks/results/gpu-check).
# Each stage has its own time limit; the last thing printed is a summary
# table. STAGES picks stages (default: all; the build always runs and is
# incremental), so a tight device budget can split the check over two calls
# on a warm machine, e.g. STAGES="tests bench" then STAGES="memcheck racecheck".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-16}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export PATH="$CUDA_HOME/bin:$PATH"
# The device image sets CXX=/opt/gcc/bin/g++, whose extensions carry their own
# C++ runtime and crash when an error message formats a number (seen on an
# H200 there, 2026-11-27); the system compiler links against torch's.
export CC=gcc CXX=g++
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

STAGES="${STAGES:-tests memcheck racecheck bench}"
wants() { [[ " $STAGES " == *" $1 "* ]]; }
# A hung kernel should fail one test, not the whole stage.
timeout_flag=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=60")

if run_stage build 360 env FORCE_CUDA=1 "$PY" setup.py build_ext --inplace; then
  wants tests && run_stage tests 150 "$PY" -m pytest tests -m cuda -q -p no:cacheprovider $timeout_flag
  wants memcheck && run_stage memcheck 80 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" benchmarks/cuda_ops_smoke.py
  wants racecheck && run_stage racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 1 "$PY" benchmarks/cuda_ops_smoke.py --small
  # The device tool brings back at most 8 files: keep the table and JSON, leave the CSV and plots.
  if wants bench && run_stage bench 180 "$PY" benchmarks/gpu_bench.py --out "$PWD/build/gpu_bench"; then
    cp build/gpu_bench/gpu_bench.md build/gpu_bench/gpu_bench.json "$OUT/"
  fi
fi

echo | tee -a "$OUT/summary.md"
printf '| stage | result | seconds |\n|---|---|---|\n' | tee -a "$OUT/summary.md"
for i in "${!STAGES[@]}"; do
  echo "| ${STAGES[$i]} | ${RESULTS[$i]} | ${SECONDS_TAKEN[$i]} |"
done | tee -a "$OUT/summary.md"
[ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
