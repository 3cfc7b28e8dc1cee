#!/usr/bin/env bash
# The GPU check, as ONE command for the device machine (bare H100/H200, torch
# 2.11 + CUDA 13, Python 3.12, no network):
#   bash benchmarks/gpu_check.sh
# It builds the extension, runs the CUDA tests, runs compute-sanitizer
# (memcheck, racecheck) over every CUDA op, runs the GPU benchmarks, profiles
# the fused linreg kernels (ncu), and writes
# its logs and results under $OUT (default: benchmarks/results/gpu-check).
# Stages run in order of importance, each under its own time limit, and all of
# them inside BUDGET seconds (default 430): a stage that would start with less
# than 20 s left is skipped, so the summary table (printed last) always comes
# back. STAGES picks stages (default: all; the build always runs and is
# incremental), e.g. STAGES="tests memcheck" for a rerun after a fix.
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

BUDGET="${BUDGET:-430}"
declare -a STAGE_NAMES RESULTS SECONDS_TAKEN
run_stage() {  # run_stage NAME LIMIT_SECONDS COMMAND...  (appends to $OUT/NAME.log)
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  if ((left < 20)); then
    STAGE_NAMES+=("$name") RESULTS+=("skipped (budget spent)") SECONDS_TAKEN+=(0)
    return 1
  fi
  ((limit > left)) && limit=$left
  local start=$SECONDS
  echo "== $name (limit ${limit}s) =="
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  STAGE_NAMES+=("$name")
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

STAGES="${STAGES:-tests memcheck bench profile bench_kernels racecheck}"
wants() { [[ " $STAGES " == *" $1 "* ]]; }
# A hung kernel should fail one test, not the whole stage; the image has xdist.
pytest_flags=(-q -p no:cacheprovider -rfE --tb=short)
"$PY" -c "import pytest_timeout" 2>/dev/null && pytest_flags+=(--timeout=60)
"$PY" -c "import xdist" 2>/dev/null && pytest_flags+=(-n 8)

if run_stage build 300 env FORCE_CUDA=1 "$PY" setup.py build_ext --inplace; then
  mv "$OUT/build.log" build/  # only a failed build's log comes back: the device returns at most 8 files
  wants tests && run_stage tests 170 "$PY" -m pytest tests -m cuda "${pytest_flags[@]}"
  wants memcheck && run_stage memcheck 90 compute-sanitizer --tool memcheck --print-limit 20 --error-exitcode 1 "$PY" benchmarks/cuda_ops_smoke.py
  # The device tool brings back at most 8 files: the benchmark logs hold the
  # tables; CSV, JSON and plots stay on the device.
  wants bench && run_stage bench 150 "$PY" benchmarks/gpu_bench.py --suite step,book,sgd --out "$PWD/build/gpu_bench" &&
    cp build/gpu_bench/gpu_bench.md "$OUT/gpu_bench.md"
  # Hardware counters of the fused step on a large X and of the book-scale epoch.
  wants profile && run_stage profile 60 ncu --clock-control none --kernel-name regex:linreg_ --launch-skip 2 \
    --launch-count 2 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis "$PY" benchmarks/profile_step.py
  wants bench_kernels &&
    run_stage bench_kernels 90 "$PY" benchmarks/gpu_bench.py --suite linear,loss --no-compile --out "$PWD/build/gpu_bench_kernels"
  wants racecheck && run_stage racecheck 90 compute-sanitizer --tool racecheck --print-limit 20 --error-exitcode 1 "$PY" benchmarks/cuda_ops_smoke.py --small
fi

echo | tee -a "$OUT/summary.md"
printf '| stage | result | seconds |\n|---|---|---|\n' | tee -a "$OUT/summary.md"
for i in "${!STAGE_NAMES[@]}"; do
  echo "| ${STAGE_NAMES[$i]} | ${RESULTS[$i]} | ${SECONDS_TAKEN[$i]} |"
done | tee -a "$OUT/summary.md"
echo "total: ${SECONDS}s of a ${BUDGET}s budget" | tee -a "$OUT/summary.md"
