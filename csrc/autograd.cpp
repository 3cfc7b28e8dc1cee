// Autograd of the ops, in C++ (Autograd dispatch key), as torchvision
// registers its ops' autograd: no Python runs between a call and the kernel.
// Each forward calls the op below autograd; each backward calls the backward
// ops through the dispatcher, so compiled graphs see them as single nodes. The
// backward ops are differentiable in turn (double backward, Hessians), their
// own backward again made of the ops. A C++ autograd Function has no
// forward-mode formula and functorch refuses it: with a tangent on an input or
// a torch.func transform running, the differentiable ops are computed by
// PyTorch's own operators instead (aten_reference.h), and linreg_grad raises.
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "aten_reference.h"
#include "op_handles.h"
#include "transforms.h"

namespace fused_linreg {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && requires_grad(*t); }
template <typename NotATensor>
bool requires_grad(const NotATensor& /*value*/) {
  return false;
}

// Whether autograd has anything to record: with grad mode off (no_grad) or no
// input that requires grad, the ops are called directly, without a graph node.
template <typename... Args>
bool records(const Args&... inputs) {
  return at::GradMode::is_enabled() && (requires_grad(inputs) || ...);
}

// Calls an op below autograd.
template <typename Signature, typename... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Signature>& op, const Args&... args) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(args...);
}

const c10::TypedOperatorHandle<LinearSig>& linear_op() {
  static const auto op = find_op<LinearSig>(kLinear);
  return op;
}
const c10::TypedOperatorHandle<LinearBackwardInputSig>& linear_backward_input_op() {
  static const auto op = find_op<LinearBackwardInputSig>(kLinearBackwardInput);
  return op;
}
const c10::TypedOperatorHandle<LinearBackwardParamsSig>& linear_backward_params_op() {
  static const auto op = find_op<LinearBackwardParamsSig>(kLinearBackwardParams);
  return op;
}

// ---------------------------------------------------------------------------
// linear: y = x @ weight.T + bias.
// ---------------------------------------------------------------------------

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    // grad_x needs only weight; grad_weight and grad_bias come from one pass over
    // grad_out and x, so x is kept if either is wanted.
    const bool params_need_grad = requires_grad(weight) || requires_grad(bias);
    ctx->save_for_backward({params_need_grad ? x : at::Tensor(), requires_grad(x) ? weight : at::Tensor()});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return call_below_autograd(linear_op(), x, weight, bias);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_out = grad_outputs[0];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool weight_needs = ctx->needs_input_grad(1);
    const bool bias_needs = has_bias && ctx->needs_input_grad(2);
    at::Tensor grad_x, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) grad_x = linear_backward_input_op().call(grad_out, saved[1]);
    if (weight_needs || bias_needs) {
      std::tie(grad_weight, grad_bias) = linear_backward_params_op().call(grad_out, saved[0]);
      if (!weight_needs) grad_weight = at::Tensor();
      if (!bias_needs) grad_bias = at::Tensor();
    }
    return {grad_x, grad_weight, grad_bias};
  }
};

at::Tensor linear_autograd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  if (needs_aten_reference(x, weight, bias)) return aten_reference::linear(x, weight, bias);
  if (!records(x, weight, bias)) return call_below_autograd(linear_op(), x, weight, bias);
  return LinearFunction::apply(x, weight, bias);
}

// grad_x = grad_out @ weight, bilinear: d grad_out = G @ weight.T (linear),
// d weight = grad_out^T @ G (linear_backward_params).
class LinearBackwardInputFunction : public torch::autograd::Function<LinearBackwardInputFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_out, const at::Tensor& weight) {
    ctx->save_for_backward({requires_grad(weight) ? grad_out : at::Tensor(), requires_grad(grad_out) ? weight : at::Tensor()});
    return call_below_autograd(linear_backward_input_op(), grad_out, weight);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad = grad_outputs[0];
    at::Tensor grad_grad_out, grad_weight;
    if (ctx->needs_input_grad(0)) grad_grad_out = linear_op().call(grad, saved[1], std::nullopt);
    if (ctx->needs_input_grad(1)) grad_weight = std::get<0>(linear_backward_params_op().call(saved[0], grad));
    return {grad_grad_out, grad_weight};
  }
};

at::Tensor linear_backward_input_autograd(const at::Tensor& grad_out, const at::Tensor& weight) {
  if (needs_aten_reference(grad_out, weight)) return aten_reference::linear_backward_input(grad_out, weight);
  if (!records(grad_out, weight)) return call_below_autograd(linear_backward_input_op(), grad_out, weight);
  return LinearBackwardInputFunction::apply(grad_out, weight);
}

// (grad_weight, grad_bias) = (grad_out^T @ x, row sum of grad_out), bilinear:
// d grad_out = x @ G_weight.T + G_bias (linear), d x = grad_out @ G_weight.
class LinearBackwardParamsFunction : public torch::autograd::Function<LinearBackwardParamsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_out, const at::Tensor& x) {
    ctx->save_for_backward({requires_grad(x) ? grad_out : at::Tensor(), requires_grad(grad_out) ? x : at::Tensor()});
    auto [grad_weight, grad_bias] = call_below_autograd(linear_backward_params_op(), grad_out, x);
    return {grad_weight, grad_bias};
  }

  // An output that took no part in the loss comes as zeros (materialized grads).
  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_weight = grad_outputs[0];
    const at::Tensor& grad_bias = grad_outputs[1];
    at::Tensor grad_grad_out, grad_x;
    if (ctx->needs_input_grad(0)) grad_grad_out = linear_op().call(saved[1], grad_weight, grad_bias);
    if (ctx->needs_input_grad(1)) grad_x = linear_backward_input_op().call(saved[0], grad_weight);
    return {grad_grad_out, grad_x};
  }
};

std::tuple<at::Tensor, at::Tensor> linear_backward_params_autograd(const at::Tensor& grad_out, const at::Tensor& x) {
  if (needs_aten_reference(grad_out, x)) return aten_reference::linear_backward_params(grad_out, x);
  if (!records(grad_out, x)) return call_below_autograd(linear_backward_params_op(), grad_out, x);
  const variable_list grads = LinearBackwardParamsFunction::apply(grad_out, x);
  return {grads[0], grads[1]};
}

// ---------------------------------------------------------------------------
// The losses: d loss / d target = -(d loss / d input), in target's own shape
// (squared_loss reshapes the target to the input's shape).
// ---------------------------------------------------------------------------

struct SquaredLossOps {
  static constexpr const char* const* kForward = &kSquaredLoss;
  static constexpr const char* const* kBackward = &kSquaredLossBackward;
  static constexpr double kGradientScale = aten_reference::kSquaredLossGradientScale;
  static constexpr auto reference = &aten_reference::squared_loss;
  static constexpr auto reference_backward = &aten_reference::squared_loss_backward;
};

struct MseLossOps {
  static constexpr const char* const* kForward = &kMseLoss;
  static constexpr const char* const* kBackward = &kMseLossBackward;
  static constexpr double kGradientScale = aten_reference::kMseLossGradientScale;
  static constexpr auto reference = &aten_reference::mse_loss;
  static constexpr auto reference_backward = &aten_reference::mse_loss_backward;
};

template <typename Ops>
const c10::TypedOperatorHandle<LossSig>& loss_op() {
  static const auto op = find_op<LossSig>(*Ops::kForward);
  return op;
}

template <typename Ops>
const c10::TypedOperatorHandle<LossBackwardSig>& loss_backward_op() {
  static const auto op = find_op<LossBackwardSig>(*Ops::kBackward);
  return op;
}

template <typename Ops>
class LossFunction : public torch::autograd::Function<LossFunction<Ops>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            c10::string_view reduction) {
    // Both gradients need both tensors (they depend on input - target).
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = std::string(reduction);
    return call_below_autograd(loss_op<Ops>(), input, target, reduction);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    at::Tensor grad_input =
        loss_backward_op<Ops>().call(grad_outputs[0], saved[0], saved[1], ctx->saved_data["reduction"].toStringRef());
    at::Tensor grad_target;
    if (ctx->needs_input_grad(1)) grad_target = grad_input.neg().reshape_symint(saved[1].sym_sizes());
    if (!ctx->needs_input_grad(0)) grad_input = at::Tensor();
    return {grad_input, grad_target, at::Tensor()};
  }
};

template <typename Ops>
at::Tensor loss_autograd(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  if (needs_aten_reference(input, target)) return Ops::reference(input, target, reduction);
  if (!records(input, target)) return call_below_autograd(loss_op<Ops>(), input, target, reduction);
  return LossFunction<Ops>::apply(input, target, reduction);
}

// grad_input = grad_output * c * (input - target), c = kGradientScale (divided
// by the element count for "mean"): linear in grad_output and in input - target.
template <typename Ops>
class LossBackwardFunction : public torch::autograd::Function<LossBackwardFunction<Ops>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                            const at::Tensor& target, c10::string_view reduction) {
    ctx->save_for_backward({grad_output, input, target});
    ctx->saved_data["reduction"] = std::string(reduction);
    return call_below_autograd(loss_backward_op<Ops>(), grad_output, input, target, reduction);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_output = saved[0];
    const at::Tensor& input = saved[1];
    const at::Tensor& target = saved[2];
    const at::Tensor scaled = aten_reference::scale_loss_gradient(grad_outputs[0], Ops::kGradientScale, input,
                                                                  ctx->saved_data["reduction"].toStringRef());
    at::Tensor grad_grad_output, grad_input, grad_target;
    if (ctx->needs_input_grad(0)) {
      grad_grad_output = at::sum_to(scaled.mul(aten_reference::difference(input, target)), grad_output.sym_sizes());
    }
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      const at::Tensor grad_difference = scaled.mul(grad_output);
      if (ctx->needs_input_grad(1)) grad_input = grad_difference;
      if (ctx->needs_input_grad(2)) grad_target = grad_difference.neg().reshape_symint(target.sym_sizes());
    }
    return {grad_grad_output, grad_input, grad_target, at::Tensor()};
  }
};

template <typename Ops>
at::Tensor loss_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
                                  c10::string_view reduction) {
  if (needs_aten_reference(grad_output, input, target)) {
    return Ops::reference_backward(grad_output, input, target, reduction);
  }
  if (!records(grad_output, input, target)) {
    return call_below_autograd(loss_backward_op<Ops>(), grad_output, input, target, reduction);
  }
  return LossBackwardFunction<Ops>::apply(grad_output, input, target, reduction);
}

// ---------------------------------------------------------------------------
// linreg_grad returns the loss and its gradients as values: not differentiable.
// Its outputs get a node whose backward raises (without one, autograd would
// only warn and silently drop those gradients).
// ---------------------------------------------------------------------------

constexpr const char* kLinregGradAdvice =
    "it returns the loss and its gradients as plain values; for a differentiable loss use fused_linreg.linear "
    "and fused_linreg.squared_loss";

struct LinregGradNotDifferentiable : public torch::autograd::Function<LinregGradNotDifferentiable> {
  static variable_list forward(AutogradContext* /*ctx*/, const at::Tensor& X, const at::Tensor& y,
                               const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
    static const auto op = find_op<LinregGradSig>(kLinregGrad);
    auto [loss, grad_weight, grad_bias] = call_below_autograd(op, X, y, weight, bias);
    return {loss, grad_weight, grad_bias};
  }

  static variable_list backward(AutogradContext* /*ctx*/, const variable_list& /*grads*/) {
    TORCH_CHECK(false, "fused_linreg.linreg_grad is not differentiable: ", kLinregGradAdvice);
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> linreg_grad_autograd(const at::Tensor& X, const at::Tensor& y,
                                                                     const at::Tensor& weight,
                                                                     const std::optional<at::Tensor>& bias) {
  check_not_transformed("linreg_grad", kLinregGradAdvice, X, y, weight, bias);
  if (!records(X, y, weight, bias)) {
    static const auto op = find_op<LinregGradSig>(kLinregGrad);
    return call_below_autograd(op, X, y, weight, bias);
  }
  const variable_list outputs = LinregGradNotDifferentiable::apply(X, y, weight, bias);
  return {outputs[0], outputs[1], outputs[2]};
}

// linreg_gram's sums feed a linear solve, not a backward pass: not differentiable either.
constexpr const char* kLinregGramAdvice =
    "it returns the sums of the normal equations as plain values (fused_linreg.LinearRegression's solver)";

struct LinregGramNotDifferentiable : public torch::autograd::Function<LinregGramNotDifferentiable> {
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& X, const at::Tensor& y,
                            const std::optional<at::Tensor>& sample_weight, const at::Tensor& x_shift,
                            const at::Tensor& y_shift) {
    static const auto op = find_op<LinregGramSig>(kLinregGram);
    return call_below_autograd(op, X, y, sample_weight, x_shift, y_shift);
  }

  static variable_list backward(AutogradContext* /*ctx*/, const variable_list& /*grads*/) {
    TORCH_CHECK(false, "fused_linreg.linreg_gram is not differentiable: ", kLinregGramAdvice);
  }
};

at::Tensor linreg_gram_autograd(const at::Tensor& X, const at::Tensor& y, const std::optional<at::Tensor>& sample_weight,
                                const at::Tensor& x_shift, const at::Tensor& y_shift) {
  check_not_transformed("linreg_gram", kLinregGramAdvice, X, y, sample_weight, x_shift, y_shift);
  if (!records(X, y, sample_weight, x_shift, y_shift)) {
    static const auto op = find_op<LinregGramSig>(kLinregGram);
    return call_below_autograd(op, X, y, sample_weight, x_shift, y_shift);
  }
  return LinregGramNotDifferentiable::apply(X, y, sample_weight, x_shift, y_shift);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, Autograd, m) {
  m.impl("linear", &linear_autograd);
  m.impl("linear_backward_input", &linear_backward_input_autograd);
  m.impl("linear_backward_params", &linear_backward_params_autograd);
  m.impl("squared_loss", &loss_autograd<SquaredLossOps>);
  m.impl("squared_loss_backward", &loss_backward_autograd<SquaredLossOps>);
  m.impl("mse_loss", &loss_autograd<MseLossOps>);
  m.impl("mse_loss_backward", &loss_backward_autograd<MseLossOps>);
  m.impl("linreg_grad", &linreg_grad_autograd);
  m.impl("linreg_gram", &linreg_gram_autograd);
}

}  // namespace fused_linreg
