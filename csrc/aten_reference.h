// The differentiable ops and their backward ops as compositions of PyTorch's
// own operators. They serve the mechanisms whose formulas exist only in ATen:
// forward-mode AD (a C++ autograd Function has no tangent formula) and the
// torch.func transforms (functorch refuses C++ autograd Functions and has no
// batching rule for our ops). Values are those of F.linear, F.mse_loss and
// the book's squared loss; the plain eager call never comes here.
#pragma once

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <ATen/ExpandUtils.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mse_loss.h>

#include <tuple>

namespace fused_linreg::aten_reference {

inline void check_reduction(c10::string_view reduction) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_linreg: reduction must be 'none', 'mean' or 'sum', got '", reduction, "'");
}

inline at::Tensor reduce(const at::Tensor& loss, c10::string_view reduction) {
  check_reduction(reduction);
  if (reduction == "sum") return loss.sum();
  return reduction == "mean" ? loss.mean() : loss;
}

inline at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return at::linear(x, weight, bias);
}

// grad_out (..., out) @ weight (out, in).
inline at::Tensor linear_backward_input(const at::Tensor& grad_out, const at::Tensor& weight) {
  return grad_out.matmul(weight);
}

// (grad_out^T @ x, grad_out summed over rows), the rows being every leading index.
inline std::tuple<at::Tensor, at::Tensor> linear_backward_params(const at::Tensor& grad_out, const at::Tensor& x) {
  const at::Tensor g2d = grad_out.reshape_symint({-1, grad_out.sym_size(-1)});
  return {g2d.t().matmul(x.reshape_symint({-1, x.sym_size(-1)})), g2d.sum(0)};
}

// input - target, the target reshaped to input's shape (the book's y.reshape(y_hat.shape)).
inline at::Tensor difference(const at::Tensor& input, const at::Tensor& target) {
  return input.sub(target.reshape_symint(input.sym_sizes()));
}

inline at::Tensor squared_loss(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  const at::Tensor diff = difference(input, target);
  return reduce(diff.mul(diff).div(2), reduction);
}

inline at::Tensor mse_loss(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  check_reduction(reduction);
  const int64_t mode = reduction == "none"  ? at::Reduction::None
                       : reduction == "sum" ? at::Reduction::Sum
                                            : at::Reduction::Mean;
  return at::mse_loss(input, target, mode);
}

// d loss / d input = grad_output * scale * (input - target): scale is 1
// (squared_loss) or 2 (mse_loss), divided by the element count for "mean".
// (A tensor op, not a number: under torch.compile the count may be symbolic.)
inline at::Tensor scale_loss_gradient(const at::Tensor& gradient, double scale, const at::Tensor& input,
                                      c10::string_view reduction) {
  const at::Tensor scaled = gradient.mul(scale);
  return reduction == "mean" ? scaled.div(c10::Scalar(input.sym_numel())) : scaled;
}

inline constexpr double kSquaredLossGradientScale = 1.0;  // d/dd of d^2 / 2
inline constexpr double kMseLossGradientScale = 2.0;      // d/dd of d^2

inline at::Tensor loss_backward(double scale, const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& target, c10::string_view reduction) {
  check_reduction(reduction);
  return scale_loss_gradient(grad_output.mul(difference(input, target)), scale, input, reduction);
}

inline at::Tensor squared_loss_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& target, c10::string_view reduction) {
  return loss_backward(kSquaredLossGradientScale, grad_output, input, target, reduction);
}

inline at::Tensor mse_loss_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
                                    c10::string_view reduction) {
  return loss_backward(kMseLossGradientScale, grad_output, input, target, reduction);
}

}  // namespace fused_linreg::aten_reference
