"""Functional API: ``linear``, ``squared_loss``, ``mse_loss`` and the multi-tensor ``sgd_``.

Each function gives a ``torch.ops.fused_linreg`` operator the argument conventions of
its PyTorch counterpart (``F.linear``, ``F.mse_loss``, ``torch.optim``'s functional
``sgd``); the work is done by the C++/CUDA kernels.

The common case (plain tensors of one dtype, arguments the op takes as they are)
goes through a fast C++ entry in ``fused_linreg._C`` that calls the op through the
dispatcher; it returns ``NotImplemented`` for everything else, which then takes the
general path here (``torch.ops``), which is also the path torch.compile traces.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, MutableSequence

import torch
from torch import Tensor

from . import _C  # type: ignore[attr-defined]
from ._checks import dense_tensors, flag, number, optional_tensor, tensor, tensor_list, type_name

__all__ = ["linear", "squared_loss", "mse_loss", "sgd_"]

_ops = torch.ops.fused_linreg
_REDUCTIONS = ("none", "mean", "sum")


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias``, with the semantics of ``torch.nn.functional.linear``.

    Args:
        x: input of shape ``(*, in_features)``.
        weight: ``(out_features, in_features)``, or ``(in_features,)`` for a single
            output feature whose dimension is then dropped (as ``F.linear`` does).
        bias: ``(out_features,)``, or any shape that broadcasts to the output; optional.

    Returns:
        ``(*, out_features)``, or ``(*)`` for a 1-D ``weight``.
    """
    out = NotImplemented if torch.compiler.is_dynamo_compiling() else _C.linear(x, weight, bias)
    return _linear_general(x, weight, bias) if out is NotImplemented else out


def _linear_general(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    tensor("linear", "x", x)
    tensor("linear", "weight", weight)
    dense_tensors("linear", x=x, weight=weight, bias=bias)
    if weight.dim() == 1:
        # F.linear computes x @ weight here: one output feature, without its dimension.
        out = _ops.linear.default(x, weight.unsqueeze(0)).squeeze(-1)
        return out if bias is None else out + bias.expand_as(out)
    if bias is None or (bias.dim() == 1 and (bias.shape[0] != 1 or weight.shape[0] == 1)):
        return _ops.linear.default(x, weight, bias)  # the op names a bias of the wrong length
    # F.linear also accepts a bias that broadcasts to the output (e.g. a scalar, or
    # one element for several outputs); expand_as raises torch's own error when it does not.
    out = _ops.linear.default(x, weight)
    return out + bias.expand_as(out)


def _check_loss_args(op: str, input: object, target: object, reduction: object) -> None:
    tensor(op, "input", input)
    tensor(op, "target", target)
    if not isinstance(reduction, str):
        raise TypeError(f"fused_linreg.{op}: reduction must be a str, got {type_name(reduction)}")
    # Same exception type and wording as torch.nn.functional's losses.
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")


def _promote(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Casts input and target to their common dtype, as torch's elementwise losses do.

    Non-floating pairs are passed through unchanged so that the kernel raises its
    clear "floating point only" error."""
    dtype = torch.promote_types(input.dtype, target.dtype)
    if not dtype.is_floating_point:
        return input, target
    return input.to(dtype), target.to(dtype)


def squared_loss(input: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """The book's squared loss ``(input - target.reshape(input.shape)) ** 2 / 2``.

    Args:
        input: predictions, any shape ``S``.
        target: any shape with the same number of elements as ``input`` (it is
            reshaped to ``S``; a different element count raises).
        reduction: ``"none"`` (default, shape ``S``), ``"sum"`` or ``"mean"`` (0-dim).

    Returns:
        The loss: shape ``S`` for ``"none"``, a 0-dim tensor otherwise.
    """
    out = NotImplemented if torch.compiler.is_dynamo_compiling() else _C.squared_loss(input, target, reduction)
    return _squared_loss_general(input, target, reduction) if out is NotImplemented else out


def _squared_loss_general(input: Tensor, target: Tensor, reduction: str) -> Tensor:
    _check_loss_args("squared_loss", input, target, reduction)
    input, target = _promote(input, target)
    return _ops.squared_loss.default(input, target, reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``(input - target) ** 2`` reduced, with the semantics of ``torch.nn.functional.mse_loss``.

    Args:
        input: predictions, any shape.
        target: same shape as ``input``; a different but broadcastable shape warns
            exactly like ``F.mse_loss`` and both are broadcast to their common shape ``S``.
        reduction: ``"mean"`` (default), ``"sum"`` (0-dim results) or ``"none"`` (shape ``S``).

    Returns:
        The loss: shape ``S`` for ``"none"``, a 0-dim tensor otherwise.
    """
    out = NotImplemented if torch.compiler.is_dynamo_compiling() else _C.mse_loss(input, target, reduction)
    return _mse_loss_general(input, target, reduction) if out is NotImplemented else out


def _mse_loss_general(input: Tensor, target: Tensor, reduction: str) -> Tensor:
    _check_loss_args("mse_loss", input, target, reduction)
    if target.size() != input.size():
        # Dynamo cannot trace warnings.warn (a fullgraph compile would fail), so
        # compiled code broadcasts without the warning.
        if not torch.compiler.is_dynamo_compiling():
            warnings.warn(
                f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
                "This will likely lead to incorrect results due to broadcasting. "
                "Please ensure they have the same size.",
                stacklevel=3,
            )
        input, target = torch.broadcast_tensors(input, target)
    input, target = _promote(input, target)
    return _ops.mse_loss.default(input, target, reduction)


def _step_was_skipped(found_inf: Tensor | None) -> bool:
    # Reads found_inf on the host: the only device sync sgd_ ever makes.
    return found_inf is not None and found_inf.item() != 0


def sgd_(
    params: Iterable[Tensor],
    grads: Iterable[Tensor],
    momentum_buffers: MutableSequence[Tensor | None],
    *,
    lr: float | Tensor,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """``torch.optim.SGD``'s update of every parameter in place, in one kernel launch.

    Per parameter ``p`` with gradient ``g`` (``g / grad_scale`` when given, also
    written back into ``grads``): ``g = -g`` if ``maximize``; ``g += weight_decay * p``;
    with momentum, ``buf = g`` on the parameter's first step, else
    ``buf = momentum * buf + (1 - dampening) * g``, and ``g = g + momentum * buf`` if
    ``nesterov`` else ``buf``; finally ``p -= lr * g``. When ``found_inf`` is nonzero
    nothing at all changes (params, grads, buffers, and the ``momentum_buffers`` list).

    Args:
        params: tensors to update, all on one device (any iterable, e.g. ``model.parameters()``).
        grads: one gradient per parameter, same shape, dtype and device; a None entry (a
            parameter that has no gradient yet) raises TypeError.
        momentum_buffers: aligned with ``params`` (ignored when ``momentum`` is 0). A
            ``None`` entry means "no buffer yet": the first-step rule applies, and the
            new buffer is stored into the list in place.
        lr: learning rate, a float or a one-element tensor (read on the device, no sync;
            so on CUDA a tensor lr's value is not checked, while a negative or non-finite
            float lr, or CPU tensor lr, raises).
        weight_decay, momentum, dampening, nesterov, maximize: as in ``torch.optim.SGD``.
        grad_scale: optional one-element tensor that the gradients are divided by.
        found_inf: optional one-element tensor; nonzero skips the whole step.

    Non-finite ``lr``, ``momentum`` or ``weight_decay`` raise, and so does a tensor that is
    written (a parameter, a momentum buffer, a grad when ``grad_scale`` is given) sharing
    memory with any other tensor argument: the kernel's parallel in-place writes would
    corrupt it. When ``found_inf`` is
    given and some buffer is still ``None``, it is read on the host once after the
    kernel (a device sync) to know whether to store the new buffers.
    """
    args = (params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize, grad_scale,
            found_inf)
    if torch.compiler.is_dynamo_compiling() or _C.sgd_(*args) is NotImplemented:
        _sgd_general(*args)


def _sgd_general(
    params: Iterable[Tensor],
    grads: Iterable[Tensor],
    momentum_buffers: MutableSequence[Tensor | None],
    lr: float | Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> None:
    params = tensor_list("sgd_", "params", params)
    grads = tensor_list("sgd_", "grads", grads, missing="params[{i}] has no gradient: call backward() first")
    if not isinstance(lr, Tensor):
        lr = number("sgd_", "lr", lr)
    weight_decay, momentum, dampening = (number("sgd_", name, value) for name, value in
                                         (("weight_decay", weight_decay), ("momentum", momentum),
                                          ("dampening", dampening)))
    nesterov, maximize = flag("sgd_", "nesterov", nesterov), flag("sgd_", "maximize", maximize)
    optional_tensor("sgd_", "grad_scale", grad_scale)
    optional_tensor("sgd_", "found_inf", found_inf)
    if len(params) == 0:
        # Nothing to update, and with no tensor argument the dispatcher could not pick a kernel.
        return
    for i, g in enumerate(grads):
        if g.layout != torch.strided:
            raise RuntimeError(
                f"fused_linreg.sgd_: grads[{i}] must be dense, got layout {g.layout} (sparse gradients are not supported)"
            )
    if momentum != 0.0:
        if not isinstance(momentum_buffers, MutableSequence):
            raise TypeError("fused_linreg.sgd_: momentum_buffers must be a list (new buffers are stored into it), "
                            f"got {type_name(momentum_buffers)}")
        if len(momentum_buffers) != len(params):
            raise ValueError(
                f"fused_linreg.sgd_: momentum_buffers has {len(momentum_buffers)} entries but params has {len(params)}"
            )
        for i, buf in enumerate(momentum_buffers):
            optional_tensor("sgd_", f"momentum_buffers[{i}]", buf)
        is_first_step = [buf is None for buf in momentum_buffers]
        # The kernel never reads a first-step buffer (it sets buf = g), so empty is enough.
        buffers = [torch.empty_like(p) if buf is None else buf for p, buf in zip(params, momentum_buffers)]
    else:
        is_first_step, buffers = [], []

    op = _ops.sgd_.tensor_lr if isinstance(lr, Tensor) else _ops.sgd_.default
    # An optimizer update is not part of any graph; params are usually leaves that
    # require grad, which in-place updates are only allowed on under no_grad.
    with torch.no_grad():
        op(
            params,
            grads,
            buffers,
            is_first_step,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            grad_scale=grad_scale,
            found_inf=found_inf,
        )

    if any(is_first_step) and not _step_was_skipped(found_inf):
        for i, first in enumerate(is_first_step):
            if first:
                momentum_buffers[i] = buffers[i]
