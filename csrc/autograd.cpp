// Autograd of the differentiable ops, in C++ (Autograd dispatch key), as
// torchvision registers its ops' autograd: no Python runs between a call and
// the kernel. Each forward calls the op below autograd; each backward calls
// the backward ops through the dispatcher, so compiled graphs see them as
// single nodes. Differentiating a backward op (double backward) raises.
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "op_handles.h"

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
template <typename... Tensors>
bool records(const Tensors&... inputs) {
  return at::GradMode::is_enabled() && (requires_grad(inputs) || ...);
}

// The backward ops (and linreg_grad, which returns gradients as values) are not
// differentiable: their outputs get a node whose backward raises `*Message`.
// Without one, autograd would only warn and silently drop those gradients.
template <const char* const* Message>
struct NotDifferentiable : public torch::autograd::Function<NotDifferentiable<Message>> {
  template <typename Call>
  static variable_list forward(AutogradContext* /*ctx*/, Call call, at::TensorList /*inputs: the graph's edges*/) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call();
  }

  static variable_list backward(AutogradContext* /*ctx*/, const variable_list& /*grads*/) {
    TORCH_CHECK(false, *Message);
  }
};

// ---------------------------------------------------------------------------
// linear: y = x @ weight.T + bias.
// ---------------------------------------------------------------------------

at::Tensor call_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  static const auto op = find_op<LinearSig>(kLinear);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(x, weight, bias);
}

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    // grad_x needs only weight; grad_weight and grad_bias come from one pass over
    // grad_out and x, so x is kept if either is wanted.
    const bool params_need_grad = requires_grad(weight) || requires_grad(bias);
    ctx->save_for_backward({params_need_grad ? x : at::Tensor(), requires_grad(x) ? weight : at::Tensor()});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return call_linear(x, weight, bias);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    static const auto backward_input = find_op<LinearBackwardInputSig>(kLinearBackwardInput);
    static const auto backward_params = find_op<LinearBackwardParamsSig>(kLinearBackwardParams);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_out = grad_outputs[0];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool weight_needs = ctx->needs_input_grad(1);
    const bool bias_needs = has_bias && ctx->needs_input_grad(2);
    at::Tensor grad_x, grad_weight, grad_bias;
    if (!grad_out.defined()) return {grad_x, grad_weight, grad_bias};
    if (ctx->needs_input_grad(0)) grad_x = backward_input.call(grad_out, saved[1]);
    if (weight_needs || bias_needs) {
      std::tie(grad_weight, grad_bias) = backward_params.call(grad_out, saved[0]);
      if (!weight_needs) grad_weight = at::Tensor();
      if (!bias_needs) grad_bias = at::Tensor();
    }
    return {grad_x, grad_weight, grad_bias};
  }
};

at::Tensor linear_autograd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  if (!records(x, weight, bias)) return call_linear(x, weight, bias);
  return LinearFunction::apply(x, weight, bias);
}

// ---------------------------------------------------------------------------
// The losses: d loss / d target = -(d loss / d input), in target's own shape
// (squared_loss reshapes the target to the input's shape).
// ---------------------------------------------------------------------------

struct SquaredLossOps {
  static constexpr const char* const* kForward = &kSquaredLoss;
  static constexpr const char* const* kBackward = &kSquaredLossBackward;
};

struct MseLossOps {
  static constexpr const char* const* kForward = &kMseLoss;
  static constexpr const char* const* kBackward = &kMseLossBackward;
};

template <typename Ops>
at::Tensor call_loss(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  static const auto op = find_op<LossSig>(*Ops::kForward);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(input, target, reduction);
}

template <typename Ops>
class LossFunction : public torch::autograd::Function<LossFunction<Ops>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            c10::string_view reduction) {
    // Both gradients need both tensors (they depend on input - target).
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = std::string(reduction);
    return call_loss<Ops>(input, target, reduction);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    static const auto backward_op = find_op<LossBackwardSig>(*Ops::kBackward);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_output = grad_outputs[0];
    at::Tensor grad_input, grad_target;
    if (grad_output.defined()) {
      grad_input = backward_op.call(grad_output, saved[0], saved[1], ctx->saved_data["reduction"].toStringRef());
      if (ctx->needs_input_grad(1)) grad_target = grad_input.neg().reshape(saved[1].sizes());
      if (!ctx->needs_input_grad(0)) grad_input = at::Tensor();
    }
    return {grad_input, grad_target, at::Tensor()};
  }
};

template <typename Ops>
at::Tensor loss_autograd(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  if (!records(input, target)) return call_loss<Ops>(input, target, reduction);
  return LossFunction<Ops>::apply(input, target, reduction);
}

// ---------------------------------------------------------------------------
// Not differentiable: the backward ops and linreg_grad.
// ---------------------------------------------------------------------------

template <typename Signature>
struct BelowAutograd;

// Calls `name` below autograd; with something to record, its outputs get a node
// whose backward raises.
template <typename Return, typename... Args>
struct BelowAutograd<Return(Args...)> {
  template <const char* const* Name, const char* const* Message>
  static Return call(Args... args) {
    static const auto op = find_op<Return(Args...)>(*Name);
    if (!records(args...)) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return op.call(args...);
    }
    return unpack<Return>(NotDifferentiable<Message>::apply(
        [&] { return pack(op.call(args...)); }, at::TensorList(tensors_of(args...))));
  }

 private:
  static variable_list tensors_of(Args... args) {
    variable_list tensors;
    (append_tensor(tensors, args), ...);
    return tensors;
  }
  static void append_tensor(variable_list& tensors, const at::Tensor& t) { tensors.push_back(t); }
  static void append_tensor(variable_list& tensors, const std::optional<at::Tensor>& t) {
    if (t.has_value()) tensors.push_back(*t);
  }
  template <typename T>
  static void append_tensor(variable_list& /*tensors*/, const T& /*not_a_tensor*/) {}

  static variable_list pack(const at::Tensor& t) { return {t}; }
  template <typename... Ts>
  static variable_list pack(const std::tuple<Ts...>& ts) {
    return std::apply([](const auto&... t) { return variable_list{t...}; }, ts);
  }
  template <typename R>
  static R unpack(const variable_list& outputs) {
    if constexpr (std::is_same_v<R, at::Tensor>) {
      return outputs[0];
    } else {
      return unpack_tuple<R>(outputs, std::make_index_sequence<std::tuple_size_v<R>>());
    }
  }
  template <typename R, size_t... I>
  static R unpack_tuple(const variable_list& outputs, std::index_sequence<I...>) {
    return R(outputs[I]...);
  }
};

constexpr const char* kDoubleBackward =
    "fused_linreg: double backward is not supported (a gradient computed by a fused_linreg operator was "
    "differentiated, e.g. with create_graph=True); use torch.nn.functional for that";
constexpr const char* kLinregGradNotDifferentiable =
    "fused_linreg: linreg_grad is not differentiable: it returns the loss and its gradients as plain values "
    "(fused_linreg.linreg_grad computes them under torch.no_grad()); for a differentiable loss use "
    "fused_linreg.linear and fused_linreg.squared_loss";


}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, Autograd, m) {
  m.impl("linear", &linear_autograd);
  m.impl("squared_loss", &loss_autograd<SquaredLossOps>);
  m.impl("mse_loss", &loss_autograd<MseLossOps>);
  m.impl("linear_backward_input",
         &BelowAutograd<LinearBackwardInputSig>::call<&kLinearBackwardInput, &kDoubleBackward>);
  m.impl("linear_backward_params",
         &BelowAutograd<LinearBackwardParamsSig>::call<&kLinearBackwardParams, &kDoubleBackward>);
  m.impl("squared_loss_backward",
         &BelowAutograd<LossBackwardSig>::call<&kSquaredLossBackward, &kDoubleBackward>);
  m.impl("mse_loss_backward", &BelowAutograd<LossBackwardSig>::call<&kMseLossBackward, &kDoubleBackward>);
  m.impl("linreg_grad", &BelowAutograd<LinregGradSig>::call<&kLinregGrad, &kLinregGradNotDifferentiable>);
}

}  // namespace fused_linreg
