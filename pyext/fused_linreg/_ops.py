"""Fake (meta) kernels and autograd formulas of the ``torch.ops.fused_linreg`` operators.

The schemas and the CPU/CUDA kernels live in C++ (csrc/); this module adds what
torch.compile and autograd need on top of them:

* ``register_fake`` for every operator, so FakeTensor tracing knows the output
  shapes without running a kernel;
* ``register_autograd`` for ``linear``, ``squared_loss`` and ``mse_loss``, whose
  backward formulas call the ``*_backward*`` operators (so compiled graphs see
  them as single nodes);
* an autograd formula for each backward operator, and for ``linreg_grad``, that
  raises: they are not differentiable (double backward is not supported), and
  without a formula autograd would only warn and return wrong (missing) gradients.

(The version counters of the tensors the in-place ops write are bumped by a C++
ADInplaceOrView kernel, csrc/inplace_versions.cpp.)

Importing this module has only these side effects; it exports nothing.
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch
from torch import Tensor

__all__: list[str] = []

_ops = torch.ops.fused_linreg


# ---------------------------------------------------------------------------
# Fake kernels: output metadata only. The checks are those that decide the
# output shape; the C++ kernels validate everything else (dtype, device, ...).
# ---------------------------------------------------------------------------


@torch.library.register_fake("fused_linreg::linear")
def _linear_fake(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    torch._check(x.dim() >= 1, lambda: "fused_linreg.linear: x must have at least 1 dimension")
    torch._check(weight.dim() == 2, lambda: f"fused_linreg.linear: weight must be 2-D, got {weight.dim()}-D")
    torch._check(
        x.shape[-1] == weight.shape[1],
        lambda: f"fused_linreg.linear: x has {x.shape[-1]} features but weight expects {weight.shape[1]}",
    )
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.register_fake("fused_linreg::linear_backward_input")
def _linear_backward_input_fake(grad_out: Tensor, weight: Tensor) -> Tensor:
    torch._check(weight.dim() == 2, lambda: "fused_linreg.linear_backward_input: weight must be 2-D")
    torch._check(
        grad_out.dim() >= 1 and grad_out.shape[-1] == weight.shape[0],
        lambda: "fused_linreg.linear_backward_input: grad_out's last dimension must match weight's first",
    )
    return grad_out.new_empty((*grad_out.shape[:-1], weight.shape[1]))


@torch.library.register_fake("fused_linreg::linear_backward_params")
def _linear_backward_params_fake(grad_out: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    torch._check(
        grad_out.dim() == x.dim() and grad_out.shape[:-1] == x.shape[:-1],
        lambda: "fused_linreg.linear_backward_params: grad_out and x must share their leading dimensions",
    )
    out_features, in_features = grad_out.shape[-1], x.shape[-1]
    return grad_out.new_empty((out_features, in_features)), grad_out.new_empty((out_features,))


def _loss_fake(input: Tensor, reduction: str) -> Tensor:
    """Output of a loss: input's shape for 'none', a 0-dim tensor otherwise."""
    return input.new_empty(input.shape if reduction == "none" else ())


@torch.library.register_fake("fused_linreg::squared_loss")
def _squared_loss_fake(input: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    torch._check(
        input.numel() == target.numel(),
        lambda: f"fused_linreg.squared_loss: target has {target.numel()} elements but input has {input.numel()}",
    )
    return _loss_fake(input, reduction)


@torch.library.register_fake("fused_linreg::mse_loss")
def _mse_loss_fake(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    torch._check(
        input.shape == target.shape,
        lambda: f"fused_linreg.mse_loss: target has shape {tuple(target.shape)} but input has {tuple(input.shape)}",
    )
    return _loss_fake(input, reduction)


@torch.library.register_fake("fused_linreg::squared_loss_backward")
def _squared_loss_backward_fake(grad_output: Tensor, input: Tensor, target: Tensor, reduction: str) -> Tensor:
    return input.new_empty(input.shape)


@torch.library.register_fake("fused_linreg::mse_loss_backward")
def _mse_loss_backward_fake(grad_output: Tensor, input: Tensor, target: Tensor, reduction: str) -> Tensor:
    return input.new_empty(input.shape)


# sgd_ only mutates its arguments; both overloads return nothing.
@torch.library.register_fake("fused_linreg::sgd_")
def _sgd_fake(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    is_first_step: list[bool],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    return None


@torch.library.register_fake("fused_linreg::sgd_.tensor_lr")
def _sgd_tensor_lr_fake(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    is_first_step: list[bool],
    *,
    lr: Tensor,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    return None


# ---------------------------------------------------------------------------
# The fused linear-regression ops: X (n, d), y (n,) or (n, k), weight (k, d),
# bias (k,). The update ops write weight, bias and the momentum buffers in place
# (their versions are bumped in C++) and return only losses.
# ---------------------------------------------------------------------------


def _check_linreg_shapes(X: Tensor, weight: Tensor, op: str) -> None:
    torch._check(X.dim() == 2, lambda: f"fused_linreg.{op}: X must be 2-D (n, d), got {X.dim()}-D")
    torch._check(
        weight.dim() == 2 and weight.shape[1] == X.shape[1],
        lambda: f"fused_linreg.{op}: weight must have shape (k, {X.shape[1]}), got {tuple(weight.shape)}",
    )


@torch.library.register_fake("fused_linreg::linreg_grad")
def _linreg_grad_fake(X: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    _check_linreg_shapes(X, weight, "linreg_grad")
    return X.new_empty(()), X.new_empty(weight.shape), X.new_empty((weight.shape[0],))


@torch.library.register_fake("fused_linreg::linreg_step_")
def _linreg_step_fake(
    X: Tensor,
    y: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    weight_momentum: Tensor | None,
    bias_momentum: Tensor | None,
    is_first_step: bool,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> Tensor:
    _check_linreg_shapes(X, weight, "linreg_step_")
    return X.new_empty(())


@torch.library.register_fake("fused_linreg::linreg_epoch_")
def _linreg_epoch_fake(
    X: Tensor,
    y: Tensor,
    indices: Tensor,
    batch_size: int,
    weight: Tensor,
    bias: Tensor | None,
    weight_momentum: Tensor | None,
    bias_momentum: Tensor | None,
    is_first_step: bool,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> Tensor:
    _check_linreg_shapes(X, weight, "linreg_epoch_")
    torch._check(batch_size >= 1, lambda: f"fused_linreg.linreg_epoch_: batch_size must be >= 1, got {batch_size}")
    torch._check(indices.dim() == 1, lambda: "fused_linreg.linreg_epoch_: indices must be 1-D")
    # One loss per minibatch; the last one may be short.
    return X.new_empty(((indices.shape[0] + batch_size - 1) // batch_size,))


# ---------------------------------------------------------------------------
# Autograd of linear: y = x @ weight.T + bias.
# ---------------------------------------------------------------------------


def _linear_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, weight, _bias = inputs
    # grad_x needs only weight; grad_weight and grad_bias come from one pass over
    # grad_out and x (the op computes both), so x is kept if either is wanted.
    # (needs_input_grad[1:] is weight's, bias's if it was passed, and False.)
    ctx.save_for_backward(
        x if any(ctx.needs_input_grad[1:]) else None,
        weight if ctx.needs_input_grad[0] else None,
    )


def _linear_backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    x, weight = ctx.saved_tensors
    # The dispatcher drops a bias=None argument (it equals the default), so
    # needs_input_grad then has only two entries and no bias gradient is due.
    needs = ctx.needs_input_grad
    x_needs, weight_needs, bias_needs = needs[0], needs[1], len(needs) > 2 and needs[2]
    grad_x = _ops.linear_backward_input.default(grad_out, weight) if x_needs else None
    grad_weight = grad_bias = None
    if weight_needs or bias_needs:
        grad_weight, grad_bias = _ops.linear_backward_params.default(grad_out, x)
    return grad_x, (grad_weight if weight_needs else None), (grad_bias if bias_needs else None)


torch.library.register_autograd("fused_linreg::linear", _linear_backward, setup_context=_linear_setup_context)


# ---------------------------------------------------------------------------
# Autograd of the losses. d loss / d target = -(d loss / d input), in target's
# own shape (squared_loss reshapes the target to the input's shape).
# ---------------------------------------------------------------------------


def _loss_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    input, target, reduction = inputs
    ctx.reduction = reduction
    ctx.target_shape = target.shape
    # Both gradients need both tensors (they depend on input - target).
    ctx.save_for_backward(input, target)


def _make_loss_backward(backward_op: Any) -> Any:
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        input, target = ctx.saved_tensors
        # (needs_input_grad may lack reduction's entry: a default argument is dropped.)
        input_needs, target_needs = ctx.needs_input_grad[:2]
        grad_input = backward_op(grad_output, input, target, ctx.reduction)
        grad_target = grad_input.neg().reshape(ctx.target_shape) if target_needs else None
        return (grad_input if input_needs else None), grad_target, None

    return backward


torch.library.register_autograd(
    "fused_linreg::squared_loss",
    _make_loss_backward(_ops.squared_loss_backward.default),
    setup_context=_loss_setup_context,
)
torch.library.register_autograd(
    "fused_linreg::mse_loss",
    _make_loss_backward(_ops.mse_loss_backward.default),
    setup_context=_loss_setup_context,
)


# ---------------------------------------------------------------------------
# Backward operators: differentiating them (double backward) is not supported.
# ---------------------------------------------------------------------------


def _no_double_backward(ctx: Any, *grads: Tensor) -> NoReturn:
    raise RuntimeError(
        "fused_linreg: double backward is not supported (a gradient computed by a fused_linreg "
        "operator was differentiated, e.g. with create_graph=True); use torch.nn.functional for that"
    )


for _name in ("linear_backward_input", "linear_backward_params", "squared_loss_backward", "mse_loss_backward"):
    torch.library.register_autograd(f"fused_linreg::{_name}", _no_double_backward)
del _name


def _linreg_grad_not_differentiable(ctx: Any, *grads: Tensor | None) -> NoReturn:
    raise RuntimeError(
        "fused_linreg: linreg_grad is not differentiable: it returns the loss and its gradients "
        "as plain values (fused_linreg.linreg_grad computes them under torch.no_grad()); for a "
        "differentiable loss use fused_linreg.linear and fused_linreg.squared_loss"
    )


# linreg_grad computes gradients itself; without a formula, backpropagating through
# its outputs would only warn and silently give no gradients. (The in-place ops
# linreg_step_ and linreg_epoch_ cannot have one: torch.library rejects autograd
# formulas for mutating operators.)
torch.library.register_autograd("fused_linreg::linreg_grad", _linreg_grad_not_differentiable)
