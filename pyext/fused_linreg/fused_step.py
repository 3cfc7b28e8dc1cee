"""The whole training step of linear regression, fused: ``linreg_step_``, ``linreg_grad``, ``linreg_epoch_``.

The model is ``X @ weight.T + bias`` and the loss the book's (*Dive into Deep
Learning* ch. 3) mean squared loss over the minibatch,
``loss = (1/n) * sum_i 0.5 * ||x_i @ weight.T + bias - y_i||^2`` (the book's
``squared_loss(...).sum() / batch_size``). Each call reads every row of ``X`` once:
forward, loss and both gradients come out of one pass, and the update functions
then apply ``torch.optim.SGD``'s update to ``[weight, bias]`` (one parameter group:
``weight_decay`` applies to both). Reductions run in a fixed order, so results are
bitwise identical run to run and for any thread count.

Shapes: ``X`` is ``(n, d)``, ``y`` is ``(n, k)`` or, when ``k == 1``, ``(n,)``;
``weight`` is ``(k, d)`` and ``bias`` ``(k,)`` or None. All share one dtype
(float64, float32, or float16/bfloat16 computed in float32) and one device.
Few outputs (``k <= 16``, the regression-head case) is the case the kernels are
tuned for. On the CPU one pass serves any ``k`` (each row costs ``4 * d * k``
flops, so past a few outputs the step is bound by them rather than by reading
``X``; the README's benchmarks say how it compares there). On CUDA, ``k > 16`` or rows too long for the fused
kernel run as composed matmuls (the same results, without the one-pass saving).

Momentum buffers persist in a ``state`` dict that the caller keeps between calls,
under the keys ``"weight_momentum_buffer"`` and ``"bias_momentum_buffer"``.

As in ``functional``, plain tensors and arguments of the expected Python types
go through a fast C++ entry (``fused_linreg._C``) that does what the code here
does; it returns ``NotImplemented`` for anything else, which then takes the
general path here (also the one torch.compile traces).
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from torch import Tensor

from . import _C  # type: ignore[attr-defined]
from ._checks import flag, number, optional_tensor, tensor, type_name
from .functional import sgd_

__all__ = ["linreg_step_", "linreg_grad", "linreg_epoch_"]

_ops = torch.ops.fused_linreg

WEIGHT_BUFFER = "weight_momentum_buffer"
BIAS_BUFFER = "bias_momentum_buffer"


def _check_data(op: str, X: object, y: object, weight: object, bias: object) -> None:
    tensor(op, "X", X)
    tensor(op, "y", y)
    tensor(op, "weight", weight)
    optional_tensor(op, "bias", bias)


def _checked_hyperparameters(op: str, state: object, lr: object, **hyper: object) -> dict[str, Any]:
    """lr, momentum, dampening, weight_decay as floats and nesterov, maximize as bools, or TypeError."""
    if state is not None and not isinstance(state, MutableMapping):
        raise TypeError(f"fused_linreg.{op}: state must be a dict (kept between calls) or None, got {type_name(state)}")
    checked: dict[str, Any] = {"lr": number(op, "lr", lr)}
    for name, value in hyper.items():
        checked[name] = flag(op, name, value) if name in ("nesterov", "maximize") else number(op, name, value)
    return checked


def _joins_late(bias: Tensor | None, momentum: float, state: MutableMapping[str, Tensor] | None) -> bool:
    """A bias without a momentum buffer while the weight has one: it joined after the first step."""
    return (bias is not None and momentum != 0.0 and state is not None and WEIGHT_BUFFER in state
            and BIAS_BUFFER not in state)


def _late_bias_step(X: Tensor, y: Tensor, weight: Tensor, bias: Tensor, state: MutableMapping[str, Tensor],
                    hyper: dict[str, Any]) -> Tensor:
    """One step in which the bias gets torch.optim's first-step rule (``buf = grad``) and the weight
    the ordinary one: the gradients in one pass, then ``sgd_`` with a buffer only for the weight."""
    loss, grad_weight, grad_bias = linreg_grad(X, y, weight, bias)
    buffers: list[Tensor | None] = [state[WEIGHT_BUFFER], None]
    with torch.no_grad():
        sgd_([weight, bias], [grad_weight, grad_bias], buffers, **hyper)
    state[BIAS_BUFFER] = buffers[1]  # type: ignore[assignment]
    return loss


def _momentum_buffers(
    weight: Tensor, bias: Tensor | None, momentum: float, state: MutableMapping[str, Tensor] | None
) -> tuple[Tensor | None, Tensor | None, bool]:
    """The op's ``(weight_momentum, bias_momentum, is_first_step)`` arguments.

    Buffers are looked up in ``state``, or allocated uninitialised on the first step
    (the kernel then sets ``buf = grad`` without reading them). A momentum that is 0
    needs none, and an invalid one (negative, non-finite) is left to the op to reject.
    """
    if not (momentum > 0.0 and math.isfinite(momentum)):
        return None, None, False
    if state is None:
        raise ValueError(
            "fused_linreg: momentum != 0 needs a state dict (state={}) that keeps the momentum "
            "buffers between steps; pass the same dict to every call"
        )
    if WEIGHT_BUFFER not in state:
        return torch.empty_like(weight), (None if bias is None else torch.empty_like(bias)), True
    return state[WEIGHT_BUFFER], state.get(BIAS_BUFFER), False


def _store_new_buffers(
    state: MutableMapping[str, Tensor] | None,
    weight_buffer: Tensor | None,
    bias_buffer: Tensor | None,
    is_first_step: bool,
) -> None:
    """After a successful first step, keeps the buffers it initialised in ``state``."""
    if not is_first_step or state is None or weight_buffer is None:
        return
    state[WEIGHT_BUFFER] = weight_buffer
    if bias_buffer is not None:
        state[BIAS_BUFFER] = bias_buffer


def _with_momentum_state(call: Callable[[Tensor | None, Tensor | None, bool], Tensor], weight: Tensor,
                         bias: Tensor | None, momentum: float, state: MutableMapping[str, Tensor] | None) -> Tensor:
    """``call(weight_buffer, bias_buffer, is_first_step)`` under no_grad, with the buffers of
    ``state`` (new ones on the first step, kept in ``state`` once the call succeeded)."""
    weight_buffer, bias_buffer, is_first_step = _momentum_buffers(weight, bias, momentum, state)
    with torch.no_grad():
        result = call(weight_buffer, bias_buffer, is_first_step)
    _store_new_buffers(state, weight_buffer, bias_buffer, is_first_step)
    return result


def linreg_grad(X: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The minibatch loss and its gradients in one pass over ``X``, without an update.

    For data-parallel training: all-reduce the gradients across processes (weighted
    by each shard's row count, as they are means), then apply them with
    ``fused_linreg.sgd_``.

    Args:
        X: ``(n, d)`` features, ``n >= 1``.
        y: ``(n, k)`` targets, or ``(n,)`` when ``k == 1``.
        weight: ``(k, d)``.
        bias: ``(k,)``, or None for a model without bias.

    Returns:
        ``(loss, grad_weight, grad_bias)``: the 0-dim loss
        ``(1/n) * sum_i 0.5 * ||x_i @ weight.T + bias - y_i||^2``, its gradient
        ``(k, d)`` with respect to ``weight`` and ``(k,)`` with respect to ``bias``
        (None when ``bias`` is None). They are plain tensors, outside any autograd graph.
    """
    if not torch.compiler.is_dynamo_compiling():
        grads = _C.linreg_grad(X, y, weight, bias)
        if grads is not NotImplemented:
            return grads
    _check_data("linreg_grad", X, y, weight, bias)
    with torch.no_grad():
        loss, grad_weight, grad_bias = _ops.linreg_grad.default(X, y, weight, bias)
    return loss, grad_weight, (None if bias is None else grad_bias)


def linreg_step_(
    X: Tensor,
    y: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    state: MutableMapping[str, Tensor] | None = None,
) -> Tensor:
    """One SGD step of linear regression on a minibatch, in place, in one pass over ``X``.

    Equivalent to the book's loss, ``loss.backward()`` and
    ``torch.optim.SGD([weight, bias], lr=lr, momentum=..., ...).step()``, but fused.
    ``weight`` and ``bias`` are updated in place under ``torch.no_grad()`` (so leaf
    parameters that require grad can be passed, as to an optimizer).

    Args:
        X: ``(n, d)`` features, ``n >= 1``.
        y: ``(n, k)`` targets, or ``(n,)`` when ``k == 1``.
        weight: ``(k, d)``, updated in place.
        bias: ``(k,)`` updated in place, or None.
        lr: learning rate (finite, ``>= 0``).
        momentum, dampening, nesterov, weight_decay, maximize: as in ``torch.optim.SGD``.
        state: a dict kept by the caller between steps; required when ``momentum != 0``
            (ValueError otherwise). The first step stores the new momentum buffers in it
            (``"weight_momentum_buffer"``, ``"bias_momentum_buffer"``), later steps update
            them in place. Nothing is stored when ``momentum`` is 0 or the step raises. A
            bias that joins after the first step gets torch.optim's first-step rule.

    ``weight``, ``bias`` and the momentum buffers are written in place: one that shares
    memory with another of them, or with ``X`` or ``y``, raises (RuntimeError).

    Returns:
        The 0-dim minibatch loss before the update.
    """
    if not torch.compiler.is_dynamo_compiling():
        loss = _C.linreg_step_(X, y, weight, bias, lr, weight_decay, momentum, dampening, nesterov, maximize, state)
        if loss is not NotImplemented:
            return loss
    _check_data("linreg_step_", X, y, weight, bias)
    hyper = _checked_hyperparameters("linreg_step_", state, lr, momentum=momentum, dampening=dampening,
                                     nesterov=nesterov, weight_decay=weight_decay, maximize=maximize)
    if _joins_late(bias, hyper["momentum"], state):
        return _late_bias_step(X, y, weight, bias, state, hyper)  # type: ignore[arg-type]
    return _with_momentum_state(
        lambda weight_buffer, bias_buffer, is_first_step: _ops.linreg_step_.default(
            X, y, weight, bias, weight_buffer, bias_buffer, is_first_step, **hyper),
        weight, bias, hyper["momentum"], state)


def _permutation(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A random permutation of ``0..n-1`` on ``device``, drawn on the generator's device."""
    drawn_on = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=drawn_on).to(device)


def linreg_epoch_(
    X: Tensor,
    y: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    lr: float,
    batch_size: int,
    indices: Tensor | None = None,
    generator: torch.Generator | None = None,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    state: MutableMapping[str, Tensor] | None = None,
) -> Tensor:
    """A whole epoch of minibatch SGD in one call: ``linreg_step_`` on each minibatch in turn.

    Minibatch ``j`` is the rows ``indices[j * batch_size : (j + 1) * batch_size]`` of
    ``X`` and ``y`` (the last one may be short). The result is bitwise identical to
    calling :func:`linreg_step_` on each minibatch with the same ``state``.

    Args:
        X: ``(n, d)`` features.
        y: ``(n, k)`` targets, or ``(n,)`` when ``k == 1``.
        weight: ``(k, d)``, updated in place.
        bias: ``(k,)`` updated in place, or None.
        lr: learning rate (finite, ``>= 0``).
        batch_size: rows per minibatch, ``>= 1``.
        indices: ``(m,)`` int64 row numbers on ``X``'s device, each in ``[0, n)``; rows
            may repeat or be left out. Default: a random permutation of ``0..n-1`` drawn
            from ``generator`` (on the generator's device, then moved to ``X``'s).
        generator: random generator for the default ``indices``.
        momentum, dampening, nesterov, weight_decay, maximize, state: as in
            :func:`linreg_step_`; the epoch's first step is the state's first step
            when ``state`` has no buffers yet. As there, the tensors written in place
            must not share memory with the others (``indices`` included).

    Returns:
        The per-minibatch losses (each before its update), shape ``(ceil(m / batch_size),)``.
    """
    if not torch.compiler.is_dynamo_compiling():
        losses = _C.linreg_epoch_(X, y, weight, bias, indices, generator, batch_size, lr, weight_decay, momentum,
                                  dampening, nesterov, maximize, state)
        if losses is not NotImplemented:
            return losses
    _check_data("linreg_epoch_", X, y, weight, bias)
    hyper = _checked_hyperparameters("linreg_epoch_", state, lr, momentum=momentum, dampening=dampening,
                                     nesterov=nesterov, weight_decay=weight_decay, maximize=maximize)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"fused_linreg.linreg_epoch_: batch_size must be an int, got {type_name(batch_size)}")
    optional_tensor("linreg_epoch_", "indices", indices)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"fused_linreg.linreg_epoch_: generator must be a torch.Generator, got {type_name(generator)}")
    if indices is None:
        indices = _permutation(X.shape[0], generator, X.device)
    first_loss = None
    if _joins_late(bias, hyper["momentum"], state) and batch_size >= 1 and indices.numel() > 0:
        # The late bias's first step alone, then the rest of the epoch as usual.
        first = indices[:batch_size]
        first_loss = _late_bias_step(X[first], y[first], weight, bias, state, hyper)  # type: ignore[arg-type]
        indices = indices[batch_size:]
        if indices.numel() == 0:
            return first_loss.reshape(1)
    epoch_rows = indices
    losses = _with_momentum_state(
        lambda weight_buffer, bias_buffer, is_first_step: _ops.linreg_epoch_.default(
            X, y, epoch_rows, batch_size, weight, bias, weight_buffer, bias_buffer, is_first_step, **hyper),
        weight, bias, hyper["momentum"], state)
    return losses if first_loss is None else torch.cat([first_loss.reshape(1), losses])
