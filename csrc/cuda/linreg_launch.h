// What linreg.cu (the ops) and linreg_kernels.cuh (the kernels, compiled per
// dtype in linreg_<dtype>.cu) share: the tensors of a call and the per-dtype
// launchers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "checks.h"

namespace fused_linreg::linreg_cuda {

// A call's tensors, contiguous; the in-place ones are the buffers the kernels
// update (working copies when the caller's were not contiguous).
struct LinregTensors {
  at::Tensor X;
  at::Tensor y;
  at::Tensor weight;
  std::optional<at::Tensor> bias;
  std::optional<at::Tensor> weight_momentum;  // nullopt without momentum
  std::optional<at::Tensor> bias_momentum;
};

struct UpdateArgs {
  double lr;
  SgdOptions opt;
  bool is_first_step;
};

// Stores the loss and gradients of all rows of t.X.
template <typename scalar_t>
void launch_linreg_grad(const LinregTensors& t, const at::Tensor& loss, const at::Tensor& grad_weight,
                        const at::Tensor& grad_bias);

// SGD steps over consecutive minibatches of `indices` (undefined: one step over
// all rows of t.X), updating t's parameters and buffers; writes each step's
// loss to `losses`.
template <typename scalar_t>
void launch_linreg_steps(const LinregTensors& t, const at::Tensor& indices, int64_t batch_size,
                         const UpdateArgs& args, const at::Tensor& losses);

}  // namespace fused_linreg::linreg_cuda
