#!/usr/bin/env bash
# Compile-checks one CUDA source of the extension on its own, with the flags that
# torch's CUDAExtension and setup.py pass to nvcc, without building the package.
#
# usage: scripts/nvcc_check.sh csrc/cuda/foo.cu [extra nvcc flags]
#        extra flags go last: -Xptxas -v (registers, spills), -ptx -o foo.ptx, ...
# env:   STD=c++17 for the C++17 build of older torch (default c++20; torch >= 2.13
#          headers refuse C++17, so pair it with PYTHON=<a venv with torch 2.11>)
#        PYTHON=path/to/python whose torch headers to use (default .venv)
#        ARCH=sm_80 for another GPU architecture (default sm_90)
# The object goes to /tmp/fused_linreg_nvcc/. Runs under a lock shared with the
# other builds on this machine, since it has only two cores.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 csrc/cuda/foo.cu [extra nvcc flags]" >&2
  exit 2
fi
src=$(realpath "$1")
shift

root=$(cd "$(dirname "$0")/.." && pwd)
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
python=${PYTHON:-$root/.venv/bin/python}
std=${STD:-c++20}
arch=${ARCH:-sm_90}
out_dir=/tmp/fused_linreg_nvcc
mkdir -p "$out_dir"

mapfile -t torch_includes < <("$python" -c \
  "from torch.utils.cpp_extension import include_paths; print('\n'.join(include_paths('cuda')))" 2>/dev/null)
python_include=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")

include_flags=(-I"$root/csrc" -I"$python_include")
for dir in "${torch_includes[@]}"; do include_flags+=(-I"$dir"); done

exec flock /tmp/fused_linreg_build.lock "$CUDA_HOME/bin/nvcc" \
  "${include_flags[@]}" \
  -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C -D_GLIBCXX_USE_CXX11_ABI=1 \
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
  -DFUSED_LINREG_WITH_CUDA \
  --expt-relaxed-constexpr -std="$std" -Xcompiler -fPIC \
  -gencode "arch=compute_${arch#sm_},code=$arch" -O3 -lineinfo \
  -c "$src" -o "$out_dir/$(basename "$src" .cu).o" "$@"
