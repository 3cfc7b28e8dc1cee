// The per-dtype launchers of the linreg kernels: declared for linreg.cu, defined
// in linreg_kernels.cuh and instantiated once per dtype by linreg_<dtype>.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kernels.h"

namespace fused_linreg::linreg_cuda {

// DeviceKernels<kCUDA>::linreg_grad for one dtype.
template <typename scalar_t>
void launch_linreg_grad(const LinregTensors& t, const at::Tensor& loss, const at::Tensor& grad_weight,
                        const at::Tensor& grad_bias);

// DeviceKernels<kCUDA>::linreg_steps for one dtype.
template <typename scalar_t>
void launch_linreg_steps(const LinregTensors& t, const at::Tensor& indices, int64_t batch_size, const StepArgs& args,
                         const at::Tensor& losses);

}  // namespace fused_linreg::linreg_cuda
