"""Fake (meta) kernels of the ``torch.ops.fused_linreg`` operators.

The schemas, the CPU/CUDA kernels and autograd (csrc/autograd.cpp) live in C++;
this module adds ``register_fake`` for every operator, so FakeTensor tracing
(torch.compile) knows the output shapes without running a kernel.

Importing this module has only these side effects; it exports nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []


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


def _loss_backward_fake(grad_output: Tensor, input: Tensor, target: Tensor, reduction: str) -> Tensor:
    return input.new_empty(input.shape)


def _update_fake(*args: object, **kwargs: object) -> None:
    """sgd_ and sgd_.tensor_lr only mutate their arguments and return nothing."""


for _name, _fake in (("squared_loss_backward", _loss_backward_fake), ("mse_loss_backward", _loss_backward_fake),
                     ("sgd_", _update_fake), ("sgd_.tensor_lr", _update_fake)):
    torch.library.register_fake(f"fused_linreg::{_name}", _fake)


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


@torch.library.register_fake("fused_linreg::linreg_gram")
def _linreg_gram_fake(X: Tensor, y: Tensor, sample_weight: Tensor | None, x_shift: Tensor, y_shift: Tensor) -> Tensor:
    torch._check(X.dim() == 2, lambda: f"fused_linreg.linreg_gram: X must be 2-D (n, d), got {X.dim()}-D")
    torch._check(y.dim() in (1, 2), lambda: f"fused_linreg.linreg_gram: y must be 1-D or 2-D, got {y.dim()}-D")
    size = X.shape[1] + (1 if y.dim() == 1 else y.shape[1]) + 1
    return X.new_empty((size, size), dtype=torch.float64)
