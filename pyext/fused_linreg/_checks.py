"""Argument checks of the public functions' general paths, with messages that name the function
and the argument: ``TypeError("fused_linreg.linear: x must be a torch.Tensor, got numpy.ndarray")``.

The fast C++ entries take only plain tensors and numbers; everything else reaches these
checks, so a wrong Python type costs nothing on the common path and never surfaces as a
binding's dump or an AttributeError from inside the library.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["type_name", "tensor", "optional_tensor", "dense_tensors", "number", "flag", "tensor_list"]


def type_name(value: object) -> str:
    """``numpy.ndarray``, ``str``: the name a user would write."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"


def tensor(op: str, name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"fused_linreg.{op}: {name} must be a torch.Tensor, got {type_name(value)}")
    return value


def optional_tensor(op: str, name: str, value: object) -> Tensor | None:
    if value is not None and not isinstance(value, Tensor):
        raise TypeError(f"fused_linreg.{op}: {name} must be a torch.Tensor or None, got {type_name(value)}")
    return value


def dense_tensors(op: str, **tensors: object) -> None:
    """Each argument a (dense) tensor or None. Sparse tensors would reach the dispatcher's
    sparse keys, where no kernel exists and the error could not name the argument."""
    for name, value in tensors.items():
        if optional_tensor(op, name, value) is not None and value.layout != torch.strided:  # type: ignore[union-attr]
            raise RuntimeError(f"fused_linreg.{op}: {name} must be a dense (strided) tensor, got layout {value.layout}")


def number(op: str, name: str, value: object) -> float:
    """A real number (a Python or NumPy int or float, or a one-element tensor as torch.optim
    allows; not a bool, not a string) as a float."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"fused_linreg.{op}: {name} must be a number, got {type_name(value)}")
    return float(value)


def flag(op: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"fused_linreg.{op}: {name} must be a bool, got {type_name(value)}")
    return value


def tensor_list(op: str, name: str, values: object, missing: str = "") -> list[Tensor]:
    """Any iterable of tensors (a list, a tuple, a generator such as ``model.parameters()``) as a list.

    ``missing`` completes the message for a None entry (e.g. why a gradient is None)."""
    if isinstance(values, Tensor) or not isinstance(values, Iterable):
        raise TypeError(f"fused_linreg.{op}: {name} must be an iterable of tensors, got {type_name(values)}")
    items: list[Any] = list(values)
    for i, item in enumerate(items):
        if item is None and missing:
            raise TypeError(f"fused_linreg.{op}: {name}[{i}] is None ({missing.format(i=i)})")
        tensor(op, f"{name}[{i}]", item)
    return items
