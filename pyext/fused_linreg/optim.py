"""``SGD``: a drop-in ``torch.optim.SGD`` whose step is one fused multi-tensor kernel per device."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from . import _C  # type: ignore[attr-defined]
from ._checks import number
from .functional import sgd_

__all__ = ["SGD"]

# Hyperparameters that must be finite (torch.optim.SGD accepts nan and inf).
_FINITE_HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay")


@overload
def _to_device(t: Tensor, device: torch.device) -> Tensor: ...
@overload
def _to_device(t: None, device: torch.device) -> None: ...
def _to_device(t: Tensor | None, device: torch.device) -> Tensor | None:
    # Host-to-device copies may be asynchronous; a copy to the host must not be,
    # since sgd_ may read found_inf there right after the kernel.
    return None if t is None else t.to(device, non_blocking=device.type != "cpu")


def _group_by_device(pairs: list[tuple[Tensor, Tensor]]) -> dict[torch.device, list[tuple[Tensor, Tensor]]]:
    # Keyed by (device type, index) first: Tensor.device builds a new object per call,
    # which costs more than the update of a small tensor.
    by_key: dict[tuple[bool, int], list[tuple[Tensor, Tensor]]] = {}
    for pair in pairs:
        p = pair[0]
        by_key.setdefault((p.is_cpu, p.get_device()), []).append(pair)
    return {group[0][0].device: group for group in by_key.values()}


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with the update of each parameter group done by ``fused_linreg.sgd_``.

    Same arguments, defaults, validation, ``param_groups`` and ``state_dict`` format
    (``state[p]["momentum_buffer"]``, so state dicts load both ways) and the same math
    as ``torch.optim.SGD(foreach=False)``. Differences:

    * ``lr``, ``momentum``, ``dampening`` and ``weight_decay`` must be finite (ValueError);
    * ``foreach`` and ``fused`` are accepted (and kept in ``param_groups``) but have no
      effect: every step is one kernel launch per parameter group and device;
    * ``differentiable=True`` and sparse gradients are not supported;
    * parameters, gradients and momentum buffers that share memory (two parameters over one
      tensor, a gradient that aliases a parameter) raise, where torch's loop would update the
      shared memory twice;
    * it works with ``torch.amp.GradScaler`` without a host sync: the scaler's
      ``grad_scale`` / ``found_inf`` are handed to the kernel, which unscales the
      gradients and skips the whole step (momentum state included) on inf/NaN;
    * a step checks every group before it updates any: one invalid group leaves all
      parameters and buffers as they were.

    ``state`` is the only record of the momentum buffers: each step reads
    ``state[p]["momentum_buffer"]`` as ``torch.optim.SGD`` does, so clearing, deleting or
    assigning entries, ``load_state_dict``, ``deepcopy`` and pickling behave as they do there.
    """

    # Tells torch.amp.GradScaler to set self.grad_scale / self.found_inf and call
    # step() directly instead of unscaling and checking for infs itself.
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if differentiable:
            raise RuntimeError("fused_linreg.optim.SGD is fused and does not support differentiable=True")
        # torch.optim.SGD compares them with 0 before anything else: a string would raise its raw TypeError.
        for name, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            number("optim.SGD", name, value)
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.add_param_group``, and rejects non-finite hyperparameters.

        The constructor adds its groups through this method, so the check covers both."""
        for name in _FINITE_HYPERPARAMETERS:
            value = param_group.get(name, self.defaults[name])
            if not math.isfinite(number("optim.SGD", name, value)):
                raise ValueError(f"Invalid {name}: {value} (fused_linreg.optim.SGD requires finite values)")
        super().add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Performs one optimization step; returns ``closure()``'s loss if a closure is given.

        Parameters whose ``grad`` is None are skipped and their state left untouched.
        """
        hooked = (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _global_optimizer_pre_hooks
                  or _global_optimizer_post_hooks)
        # Dynamo cannot trace the profiler query (a graph break: two frames and two guard
        # sets per compiled step) and ignores the profiler's label in compiled code anyway.
        if hooked or (not torch.compiler.is_dynamo_compiling() and torch._C._autograd._profiler_enabled()):
            return self._step_with_hooks(closure)
        return self._step(closure)

    # torch.optim.Optimizer wraps a subclass's step (unless marked "hooked") in a function
    # that runs the step hooks inside a profiler range, on every step: several
    # microseconds, more than the update of a small model. Ours runs that wrapper only
    # when there is a hook to call or a profiler to label the step for.
    step.hooked = True  # type: ignore[attr-defined]

    def _step(self, closure: Callable[[], Any] | None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Set by torch.amp.GradScaler.step (see _step_supports_amp_scaling).
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        if torch.compiler.is_dynamo_compiling():
            with torch.no_grad():
                self._step_general(grad_scale, found_inf)
            return loss
        groups = [
            (group["params"], group["lr"], group["weight_decay"], group["momentum"], group["dampening"],
             group["nesterov"], group["maximize"])
            for group in self.param_groups
        ]
        # One C++ call reads every .grad and momentum buffer and runs one sgd_ per group and device.
        created = _C.optimizer_step_(groups, self.state, grad_scale, found_inf)
        if created is NotImplemented:
            with torch.no_grad():
                self._step_general(grad_scale, found_inf)
            return loss
        for p, buffer in created:
            self.state[p]["momentum_buffer"] = buffer
        return loss

    _step_with_hooks = torch.optim.Optimizer.profile_hook_step(_step)

    def _step_general(self, grad_scale: Tensor | None, found_inf: Tensor | None) -> None:
        """The step for what the C++ entry does not take (e.g. tensor subclasses), via ``sgd_``."""
        calls = []  # sgd_'s arguments, per group and device
        for group in self.param_groups:
            pairs = [(p, p.grad) for p in group["params"]]
            pairs = [(p, g) for p, g in pairs if g is not None]
            for device, device_pairs in _group_by_device(pairs).items():
                calls.append(self._sgd_args(group, device, device_pairs, grad_scale, found_inf))
        if any(g.is_sparse for args in calls for g in args[1]):
            raise RuntimeError("fused_linreg.optim.SGD does not support sparse gradients")
        # All or nothing: the first call checks itself before it writes; dynamo checks every
        # call while it traces, before any runs.
        if not torch.compiler.is_dynamo_compiling():
            for args in calls[1:]:
                _C.check_sgd_(*args)
        for args in calls:
            buffers = args[2]
            first_steps = [i for i, buf in enumerate(buffers) if buf is None]
            sgd_(*args[:3], lr=args[3], weight_decay=args[4], momentum=args[5], dampening=args[6],
                 nesterov=args[7], maximize=args[8], grad_scale=args[9], found_inf=args[10])
            # sgd_ filled in the buffers of first steps (unless the step was skipped).
            for i in first_steps:
                if buffers[i] is not None:
                    self.state[args[0][i]]["momentum_buffer"] = buffers[i]

    def _sgd_args(
        self,
        group: dict[str, Any],
        device: torch.device,
        pairs: list[tuple[Tensor, Tensor]],
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> tuple[Any, ...]:
        """sgd_'s positional arguments for the (param, grad) pairs of one group on one device,
        the momentum buffers read from ``state`` as torch.optim.SGD reads them."""
        momentum = group["momentum"]
        params = [p for p, _ in pairs]
        # .get: as on the C++ path, a step that raises leaves no empty state entries behind.
        buffers = [self.state.get(p, {}).get("momentum_buffer") for p in params] if momentum != 0 else []
        lr = group["lr"]
        return (params, [g for _, g in pairs], buffers, _to_device(lr, device) if isinstance(lr, Tensor) else lr,
                group["weight_decay"], momentum, group["dampening"], group["nesterov"], group["maximize"],
                _to_device(grad_scale, device), _to_device(found_inf, device))
