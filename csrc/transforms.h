// What the ops do under PyTorch's transforms: forward-mode AD (a tangent on an
// input) and torch.func (grad, vjp, jvp, vmap, ...). The differentiable ops
// are then computed by PyTorch's own operators (aten_reference.h); the ops
// that cannot carry a tangent or a batch dimension raise before anything runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <optional>

#include "torch_internals.h"

namespace fused_linreg {

// Whether `test` holds for a tensor argument of any kind (a tensor, an optional
// one, a list); false for the other arguments.
template <typename Test>
bool any_tensor(const at::Tensor& t, Test test) {
  return t.defined() && test(t);
}
template <typename Test>
bool any_tensor(const std::optional<at::Tensor>& t, Test test) {
  return t.has_value() && any_tensor(*t, test);
}
template <typename Test>
bool any_tensor(at::TensorList tensors, Test test) {
  return std::any_of(tensors.begin(), tensors.end(), [&](const at::Tensor& t) { return any_tensor(t, test); });
}
template <typename NotATensor, typename Test>
bool any_tensor(const NotATensor& /*value*/, Test /*test*/) {
  return false;
}

// Whether a differentiable op must be computed by PyTorch's operators: our
// autograd Functions have no tangent formula and functorch refuses them.
template <typename... Args>
bool needs_aten_reference(const Args&... args) {
  return functorch_transform_active() || (any_tensor(args, has_tangent) || ...);
}

// For the ops without a tangent formula or batching rule (the in-place steps
// and linreg_grad): a tangent or a torch.func wrapper on any argument raises,
// so that no tangent or batch dimension is silently dropped.
template <typename... Args>
void check_not_transformed(const char* op, const char* advice, const Args&... args) {
  TORCH_CHECK(!(any_tensor(args, has_tangent) || ...), "fused_linreg.", op,
              " does not support forward-mode AD (an argument carries a tangent): ", advice);
  TORCH_CHECK(!(any_tensor(args, is_functorch_wrapper) || ...), "fused_linreg.", op,
              " does not support torch.func transforms (grad, vjp, jvp, vmap, ...): ", advice);
}

}  // namespace fused_linreg
