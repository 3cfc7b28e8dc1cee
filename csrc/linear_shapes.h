// Shape rules of linear (its front, linear.cpp, and the kernels of both devices).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/DimVector.h>
#include <c10/util/accumulate.h>

namespace fused_linreg {

// "Skinny" weights, per device: up to this many output features linear's
// hand-written kernels run; above it the work is a GEMM and goes to the vendor
// BLAS (MKL/oneDNN, cuBLAS), which is at the limit there. On CUDA cuBLAS wins
// sooner (benchmarks/results/gpu-h200-2026-11-27). The fused linreg step takes
// up to kSkinnyMaxOut outputs on both devices. fused_linreg._C exports both
// bounds (SKINNY_MAX_OUT_CPU, SKINNY_MAX_OUT_CUDA) for the Python side.
constexpr int64_t kSkinnyMaxOut = 16;
constexpr int64_t kCudaSkinnyMaxOut = 4;

// On CUDA the forward and input-grad kernels read the weight through the L1
// cache once per row, which stays cheap while the weight fits there beside the
// streamed x; a larger one goes to cuBLAS. (The param-grad kernel reads none.)
constexpr int64_t kCudaMaxOwnKernelWeightBytes = 64 * 1024;

inline int64_t skinny_max_out(const c10::Device& device) {
  return device.is_cuda() ? kCudaSkinnyMaxOut : kSkinnyMaxOut;
}

// Whether linear's forward and input-grad kernels take this weight (else a GEMM).
inline bool own_kernels_take_weight(const at::Tensor& weight) {
  return weight.size(0) <= skinny_max_out(weight.device()) &&
         (!weight.is_cuda() || weight.numel() * weight.element_size() <= kCudaMaxOwnKernelWeightBytes);
}

// (..., features) -> contiguous (rows, features).
inline at::Tensor rows_of(const at::Tensor& t) {
  const int64_t rows = c10::multiply_integers(t.sizes().slice(0, t.dim() - 1));
  return t.contiguous().view({rows, t.size(-1)});
}

// Leading dimensions of `t` followed by `last`.
inline c10::DimVector output_shape(const at::Tensor& t, int64_t last) {
  c10::DimVector shape(t.sizes().begin(), t.sizes().end());
  shape.back() = last;
  return shape;
}

}  // namespace fused_linreg
