// The squared losses: the book's squared_loss, 0.5 * (x - t)^2, and
// F.mse_loss, (x - t)^2, with reductions none / sum / mean, and their backward
// ops. One front for both devices (checks, target reshaped to input's shape,
// contiguous inputs, the outputs and the empty case); the kernels are in
// cpu/loss.cpp and cuda/loss.cu.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cmath>
#include <string_view>

#include "checks.h"
#include "kernels.h"

namespace fused_linreg {
namespace {

Reduction parse_reduction(c10::string_view reduction, const char* op) {
  const std::string_view name(reduction.data(), reduction.size());
  if (name == "none") return Reduction::None;
  if (name == "sum") return Reduction::Sum;
  if (name == "mean") return Reduction::Mean;
  TORCH_CHECK(false, "fused_linreg.", op, ": reduction must be 'none', 'sum' or 'mean', got '", name, "'");
}

// squared_loss accepts any target with input's element count (the book reshapes
// it); mse_loss wants identical shapes (its Python wrapper broadcasts first).
void check_loss_args(const at::Tensor& input, const at::Tensor& target, const char* op, bool same_shape) {
  check_float_tensor(input, op, "input");
  check_float_tensor(target, op, "target");
  check_same_dtype_device(target, input, op, "target", "input");
  if (same_shape) {
    TORCH_CHECK(input.sizes() == target.sizes(), "fused_linreg.", op, ": target has shape ", target.sizes(),
                " but input has shape ", input.sizes());
  } else {
    TORCH_CHECK(input.numel() == target.numel(), "fused_linreg.", op, ": target has ", target.numel(),
                " elements (shape ", target.sizes(), ") but input has ", input.numel(), " (shape ", input.sizes(),
                ")");
  }
}

void check_loss_backward_args(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
                              Reduction reduction, const char* op, bool same_shape) {
  check_loss_args(input, target, op, same_shape);
  check_float_tensor(grad_output, op, "grad_output");
  check_same_dtype_device(grad_output, input, op, "grad_output", "input");
  if (reduction == Reduction::None) {
    TORCH_CHECK(grad_output.sizes() == input.sizes(), "fused_linreg.", op, ": grad_output has shape ",
                grad_output.sizes(), " but input has shape ", input.sizes());
  } else {
    TORCH_CHECK(grad_output.numel() == 1, "fused_linreg.", op,
                ": grad_output must have one element for a sum or mean reduction, got shape ", grad_output.sizes());
  }
}

template <c10::DeviceType kDevice>
at::Tensor squared_difference(const at::Tensor& input, const at::Tensor& target, Reduction reduction,
                              double coefficient) {
  const c10::OptionalDeviceGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.reshape(input.sizes()).contiguous();
  if (x.numel() == 0 && reduction != Reduction::None) {
    // The sum of nothing is 0 and its mean 0 / 0 = NaN, as in torch.
    return at::full({}, reduction == Reduction::Sum ? 0.0 : std::nan(""), x.options());
  }
  at::Tensor out = reduction == Reduction::None ? at::empty_like(x) : at::empty({}, x.options());
  if (x.numel() > 0) DeviceKernels<kDevice>::squared_difference(x, t, reduction, coefficient, out);
  return out;
}

template <c10::DeviceType kDevice>
at::Tensor squared_difference_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& target, Reduction reduction, double coefficient) {
  const c10::OptionalDeviceGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor t = target.reshape(input.sizes()).contiguous();
  // A sum or mean has one grad_output value: any layout of it will do.
  const at::Tensor g = reduction == Reduction::None ? grad_output.contiguous() : grad_output.reshape({1});
  at::Tensor grad_input = at::empty_like(x);
  if (x.numel() > 0) DeviceKernels<kDevice>::squared_difference_backward(g, x, t, reduction, coefficient, grad_input);
  return grad_input;
}

// What tells the two losses apart: 0.5 * (x - t)^2 against (x - t)^2, and whether
// the target may have another shape with as many elements.
struct Loss {
  const char* name;
  const char* backward_name;
  double coefficient;
  bool same_shape;
};

constexpr Loss kSquaredLossOp{"squared_loss", "squared_loss_backward", 0.5, false};
constexpr Loss kMseLossOp{"mse_loss", "mse_loss_backward", 1.0, true};

template <c10::DeviceType kDevice, const Loss& kLoss>
at::Tensor loss(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  const Reduction r = parse_reduction(reduction, kLoss.name);
  check_loss_args(input, target, kLoss.name, kLoss.same_shape);
  return squared_difference<kDevice>(input, target, r, kLoss.coefficient);
}

template <c10::DeviceType kDevice, const Loss& kLoss>
at::Tensor loss_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
                         c10::string_view reduction) {
  const Reduction r = parse_reduction(reduction, kLoss.backward_name);
  check_loss_backward_args(grad_output, input, target, r, kLoss.backward_name, kLoss.same_shape);
  return squared_difference_backward<kDevice>(grad_output, input, target, r, kLoss.coefficient);
}

template <c10::DeviceType kDevice>
void register_losses(torch::Library& m) {
  m.impl("squared_loss", &loss<kDevice, kSquaredLossOp>);
  m.impl("squared_loss_backward", &loss_backward<kDevice, kSquaredLossOp>);
  m.impl("mse_loss", &loss<kDevice, kMseLossOp>);
  m.impl("mse_loss_backward", &loss_backward<kDevice, kMseLossOp>);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CPU, m) { register_losses<c10::kCPU>(m); }

#ifdef FUSED_LINREG_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_linreg, CUDA, m) { register_losses<c10::kCUDA>(m); }
#endif

}  // namespace fused_linreg
