// The kernels each device provides, as static members of DeviceKernels<kCPU>
// (defined in csrc/cpu/*.cpp) and DeviceKernels<kCUDA> (csrc/cuda/*.cu). The
// fronts (csrc/<op>.cpp) do everything else, once for both devices: check the
// arguments, make contiguous working copies and the outputs, handle the empty
// and the GEMM cases, and write the in-place results back; each registers the
// same front, instantiated per device, under the CPU and CUDA dispatch keys.
// A kernel gets contiguous tensors on one device (the current one on CUDA),
// picks the dtype and computes.
//
// linear_forward / linear_backward_input / linear_backward_params: for skinny
//   weights (linear_shapes.h), x2d / grad2d of (rows, in) / (rows, out) with
//   rows, in and out >= 1; wider weights are GEMMs in the front.
// squared_difference(_backward): coefficient * (x - t)^2 (0.5: the book's
//   squared_loss, 1: mse_loss) over x and t of one shape with elements; the
//   backward's grad_output has x's shape for Reduction::None, one element
//   otherwise.
// sgd: SgdLists (below); an lr_tensor, when given, is on the params' device and
//   replaces lr (read by the kernel: no host sync); grad_scale and found_inf
//   are one-element tensors there.
// linreg_grad: the loss and gradients over all rows of t.X (n >= 1).
// linreg_steps: SGD steps over consecutive minibatches of batch_size entries of
//   `rows` (row numbers in range; undefined: one step over all rows of t.X),
//   updating t's parameters and buffers in place; each step's loss goes to
//   losses[step].
// gram_rows: adds linreg_gram's sums over the rows of X (n, d) and y2d (n, k), of
//   X's dtype, to gram ((d + k + 1)^2 float64): sum_i w_i a_i a_i^T with
//   a_i = [x_i - x_shift, y_i - y_shift, 1], the float64 sample_weight (n;
//   nullopt: every weight 1), x_shift (d) and y_shift (k); n >= 1.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "sgd_math.h"

namespace fused_linreg {

enum class Reduction { None, Sum, Mean };

// sgd_'s lists, contiguous and non-empty; buffers and is_first_step are empty
// without momentum. The lists may mix dtypes.
struct SgdLists {
  at::TensorList params;
  at::TensorList grads;
  at::TensorList buffers;
  std::vector<bool> is_first_step;
};

// The fused linear-regression ops' tensors, contiguous: X (n, d), y (n, k) or
// (n,), weight (k, d), bias (k); nullopt for an absent bias and, without
// momentum, for the buffers.
struct LinregTensors {
  at::Tensor X;
  at::Tensor y;
  at::Tensor weight;
  std::optional<at::Tensor> bias;
  std::optional<at::Tensor> weight_momentum;
  std::optional<at::Tensor> bias_momentum;
};

struct StepArgs {
  double lr;
  SgdOptions opt;
  bool is_first_step;  // of the first step
};

template <c10::DeviceType kDevice>
struct DeviceKernels;

// Declared once for both devices (comments above).
#define FUSED_LINREG_DEVICE_KERNELS                                                                                 \
  static void linear_forward(const at::Tensor& x2d, const at::Tensor& weight, const std::optional<at::Tensor>& bias, \
                             const at::Tensor& y2d);                                                                \
  static void linear_backward_input(const at::Tensor& grad2d, const at::Tensor& weight, const at::Tensor& grad_x2d); \
  static void linear_backward_params(const at::Tensor& grad2d, const at::Tensor& x2d, const at::Tensor& grad_weight, \
                                     const at::Tensor& grad_bias);                                                  \
  static void squared_difference(const at::Tensor& x, const at::Tensor& t, Reduction reduction, double coefficient,  \
                                 const at::Tensor& out);                                                            \
  static void squared_difference_backward(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& t,  \
                                          Reduction reduction, double coefficient, const at::Tensor& grad_input);   \
  static void sgd(const SgdLists& lists, double lr, const std::optional<at::Tensor>& lr_tensor,                     \
                  const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,                               \
                  const std::optional<at::Tensor>& found_inf);                                                      \
  static void linreg_grad(const LinregTensors& t, const at::Tensor& loss, const at::Tensor& grad_weight,            \
                          const at::Tensor& grad_bias);                                                             \
  static void linreg_steps(const LinregTensors& t, const at::Tensor& rows, int64_t batch_size, const StepArgs& args, \
                           const at::Tensor& losses);                                                      \
  static void gram_rows(const at::Tensor& X, const at::Tensor& y2d, const std::optional<at::Tensor>& sample_weight,     \
                        const at::Tensor& x_shift, const at::Tensor& y_shift, const at::Tensor& gram);

template <>
struct DeviceKernels<c10::kCPU> {
  FUSED_LINREG_DEVICE_KERNELS
};

template <>
struct DeviceKernels<c10::kCUDA> {
  FUSED_LINREG_DEVICE_KERNELS
};

// The CPU kernels are compiled once per CPU capability (the vector
// instructions at::vec::Vectorized may use), as ATen compiles its own: each
// csrc/cpu/*.cpp defines CPU_CAPABILITY::CpuKernels, CPU_CAPABILITY being
// DEFAULT (any x86-64, and every other architecture), AVX2 or AVX512 as
// setup.py builds it. DeviceKernels<kCPU> calls the best one the running CPU
// supports (cpu_capability.cpp).
namespace DEFAULT {
struct CpuKernels {
  FUSED_LINREG_DEVICE_KERNELS
};
}  // namespace DEFAULT
namespace AVX2 {
struct CpuKernels {
  FUSED_LINREG_DEVICE_KERNELS
};
}  // namespace AVX2
namespace AVX512 {
struct CpuKernels {
  FUSED_LINREG_DEVICE_KERNELS
};
}  // namespace AVX512

#undef FUSED_LINREG_DEVICE_KERNELS

}  // namespace fused_linreg
