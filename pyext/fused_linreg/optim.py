"""``SGD``: a drop-in ``torch.optim.SGD`` whose step is one fused multi-tensor kernel per device."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from . import _C  # type: ignore[attr-defined]
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
    * the step reads every ``.grad`` in one C++ call and keeps each group's list of momentum
      buffers between steps: a buffer tensor changed in place is seen, but one assigned into
      ``state`` by hand replaces the kept list only when the state or the group's params list
      is replaced too (as ``load_state_dict`` and ``add_param_group`` do).
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
        # Per param group, by position: (group, state, params list, momentum buffers); see _momentum_buffers.
        self._buffer_cache: list[tuple[dict[str, Any], Any, list[Tensor], list[Tensor | None]] | None] = []
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
            if not math.isfinite(float(value)):
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
            # Dynamo traces the op; the kept buffer lists would only add guards.
            with torch.no_grad():
                self._step_general(grad_scale, found_inf)
            return loss
        groups = [
            (group["params"], self._momentum_buffers(i, group) if group["momentum"] != 0 else None, group["lr"],
             group["weight_decay"], group["momentum"], group["dampening"], group["nesterov"], group["maximize"])
            for i, group in enumerate(self.param_groups)
        ]
        # One C++ call reads every .grad and runs one sgd_ per group and device.
        created = _C.optimizer_step_(groups, grad_scale, found_inf)
        if created is NotImplemented:
            with torch.no_grad():
                self._step_general(grad_scale, found_inf)
            return loss
        state = self.state
        for g, i in created:
            params, buffers = groups[g][0], groups[g][1]
            state[params[i]]["momentum_buffer"] = buffers[i]
        return loss

    _step_with_hooks = torch.optim.Optimizer.profile_hook_step(_step)

    def _momentum_buffers(self, index: int, group: dict[str, Any]) -> list[Tensor | None]:
        """The momentum buffers of the params of ``group``, the ``index``-th param group (None: no
        buffer yet), kept between steps.

        The list is rebuilt from ``self.state`` when the group, the state or the group's params
        list is replaced (``load_state_dict`` replaces all three), so reading it costs no lookup
        per parameter; a buffer assigned into ``state`` by hand is seen after such a replacement.
        """
        params = group["params"]
        cache = self._buffer_cache
        del cache[len(self.param_groups):]  # groups that are gone keep nothing alive
        cache.extend([None] * (len(self.param_groups) - len(cache)))
        cached = cache[index]
        if (cached is not None and cached[0] is group and cached[1] is self.state and cached[2] is params
                and len(cached[3]) == len(params)):
            return cached[3]
        state = self.state
        buffers = [state[p].get("momentum_buffer") if p in state else None for p in params]
        cache[index] = (group, state, params, buffers)
        return buffers

    def _step_general(self, grad_scale: Tensor | None, found_inf: Tensor | None) -> None:
        """The step for what the C++ entry does not take (e.g. tensor subclasses), via ``sgd_``."""
        # (params, grads) with a gradient, per group; each p.grad is read once.
        groups = []
        for group in self.param_groups:
            pairs = [(p, p.grad) for p in group["params"]]
            groups.append([(p, g) for p, g in pairs if g is not None])
        # Raise before any group is updated.
        if any(g.is_sparse for pairs in groups for _, g in pairs):
            raise RuntimeError("fused_linreg.optim.SGD does not support sparse gradients")
        for group, pairs in zip(self.param_groups, groups):
            for device, device_pairs in _group_by_device(pairs).items():
                self._update(group, device, device_pairs, grad_scale, found_inf)

    def _update(
        self,
        group: dict[str, Any],
        device: torch.device,
        pairs: list[tuple[Tensor, Tensor]],
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        """One sgd_ call for the (param, grad) pairs of one group on one device."""
        momentum = group["momentum"]
        params = [p for p, _ in pairs]
        buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        first_steps = [i for i, buf in enumerate(buffers) if buf is None]
        lr = group["lr"]
        sgd_(
            params,
            [g for _, g in pairs],
            buffers,
            lr=_to_device(lr, device) if isinstance(lr, Tensor) else lr,
            weight_decay=group["weight_decay"],
            momentum=momentum,
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            grad_scale=_to_device(grad_scale, device),
            found_inf=_to_device(found_inf, device),
        )
        # sgd_ filled in the buffers of first steps (unless the step was skipped).
        for i in first_steps:
            if buffers[i] is not None:
                self.state[params[i]]["momentum_buffer"] = buffers[i]
