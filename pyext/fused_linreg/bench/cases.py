"""What ``python -m fused_linreg.bench`` times: benches, sizes, and what must move.

Each :class:`Bench` is one shape of one operation. Its ``setup`` builds the inputs
once and returns a callable per implementation (baselines and ours side by side,
on the same inputs); :class:`Traffic` says how many bytes a perfect
implementation must read and write (and how many flops it must do), from which
the runner derives the floor time with the machine's measured rates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

__all__ = ["SUITES", "Bench", "Context", "Fn", "Impl", "Sizes", "Traffic", "grads_of", "sizes_for", "static_compiled"]

SUITES = ("bandwidth", "overhead", "linear", "loss", "sgd", "book", "train", "step")

# The ops of the bandwidth suite, whose timings give the machine's rates.
READ_OP = "memory read"
COPY_OP = "memory copy"
INPLACE_OP = "memory in-place update"
GEMM_OP = "matmul (compute roof)"

BOOK_LR = 0.03
BOOK_TRUE_W = (2.0, -3.4)
BOOK_TRUE_B = 4.2

Fn = Callable[[], object]
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Traffic:
    """What a perfect implementation must do: bytes read, bytes written, flops.

    ``inplace``: the written bytes overwrite bytes just read (an optimizer update),
    which costs less than writing a fresh output (no read-for-ownership)."""

    read: int
    write: int = 0
    flops: int = 0
    inplace: bool = False


@dataclass(frozen=True)
class Impl:
    """One implementation timed in a bench: a baseline or ours, maybe under torch.compile.

    A ``reference`` baseline is not a competitor but the floor itself, timed beside ours
    on the same data (e.g. one read of X): its row's speed-up is ours' fraction of it."""

    name: str
    ours: bool = False
    compiled: bool = False
    reference: bool = False


@dataclass(frozen=True)
class Bench:
    """One operation at one shape: the implementations and what they must move.

    ``setup`` returns ``{impl name: callable}``; it is called once, or several
    times when the inputs are rotated (see ``rotate``), each call making fresh
    inputs; ``min_copies`` input sets are made (and rotated) in any case. ``pairs``
    lists the table's rows as ``(baseline, ours)``; empty means every baseline against
    every one of ours. ``note`` goes into each row, ``remark`` (longer) once under the
    table. ``pause_s`` is slept before each timed block, for implementations whose
    libraries leave threads spinning after a call (OpenBLAS's, for a tenth of a second):
    without it they would take the cores from the next block, another implementation's.
    """

    suite: str
    op: str
    shape: str
    impls: tuple[Impl, ...]
    setup: Callable[[], Mapping[str, Fn]]
    footprint: int
    traffic: Traffic | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    rotate: bool = True
    note: str = ""
    remark: str = ""
    min_copies: int = 1
    pause_s: float = 0.0

    def rows(self) -> list[tuple[str, str | None]]:
        """The ``(baseline, ours)`` pairs of the table; ours is None where there is none."""
        if self.pairs:
            return list(self.pairs)
        ours: list[str | None] = [i.name for i in self.impls if i.ours] or [None]
        return [(b.name, o) for b in self.impls if not b.ours for o in ours]


@dataclass(frozen=True)
class Sizes:
    """The problem sizes of every suite (one set for the default run, one for ``--quick``)."""

    bandwidth_elems: int
    gemm: int
    linear: tuple[tuple[int, int, int], ...]
    linear_compiled: tuple[int, int, int]
    loss: tuple[int, ...]
    sgd: tuple[tuple[int, int], ...]
    book: tuple[int, int]
    estimator: tuple[tuple[int, int, str], ...]  # (rows, features, numpy dtype name)
    train: tuple[int, int, int]
    step: tuple[tuple[int, int, int], ...]


_CPU_SIZES = Sizes(
    bandwidth_elems=1 << 26,  # 256 MiB of float32
    gemm=1024,
    linear=((10, 2, 1), (1 << 18, 64, 1), (1 << 18, 64, 4), (1 << 16, 256, 16), (1 << 14, 1024, 64),
            (4096, 1024, 256), (1024, 1024, 1024)),
    linear_compiled=(1 << 18, 64, 1),
    loss=(1 << 10, 1 << 20, 1 << 24),
    sgd=((200, 1000), (8, 1 << 20)),
    book=(1000, 10),
    estimator=((200_000, 50, "float64"), (2_000_000, 20, "float32")),
    train=(256, 64, 1),
    # 256 MiB of float32; k = 4 and 16 outputs: at 16 the step is compute-bound here (4·n·d·k flops).
    step=((1 << 20, 64, 1), (1 << 20, 64, 4), (1 << 20, 64, 16)),
)

_CUDA_SIZES = Sizes(
    bandwidth_elems=1 << 29,  # 2 GiB of float32
    gemm=8192,
    linear=((10, 2, 1), (1 << 20, 2, 1), (1 << 22, 64, 1), (1 << 22, 64, 4), (1 << 20, 256, 16),
            (1 << 16, 1024, 1), (8192, 4096, 4096)),
    linear_compiled=(1 << 22, 64, 1),
    loss=(1 << 10, 1 << 20, 1 << 26),
    sgd=((200, 1000), (8, 1 << 22)),
    book=(1000, 10),
    estimator=((200_000, 50, "float64"), (2_000_000, 20, "float32")),
    train=(256, 64, 1),
    step=((1 << 22, 64, 1), (1 << 22, 64, 4)),  # 1 GiB of float32; k = 4 is the widest narrow-tile kernel
)

_QUICK_SIZES = Sizes(
    bandwidth_elems=1 << 20,
    gemm=128,
    linear=((10, 2, 1), (4096, 16, 1), (128, 64, 64)),
    linear_compiled=(4096, 16, 1),
    loss=(1 << 10, 1 << 14),
    sgd=((20, 100), (2, 1 << 14)),
    book=(200, 10),
    estimator=((2000, 50, "float64"), (20_000, 20, "float32")),
    train=(64, 16, 1),
    step=((1 << 14, 64, 1), (1 << 12, 16, 4)),
)


def sizes_for(device: torch.device, quick: bool) -> Sizes:
    """The sizes of a run: tiny with ``quick``, else the default set of the device type."""
    if quick:
        return _QUICK_SIZES
    return _CUDA_SIZES if device.type == "cuda" else _CPU_SIZES


@dataclass(frozen=True)
class Context:
    """Where and how the benches run."""

    device: torch.device
    dtype: torch.dtype
    sizes: Sizes
    compile: bool
    notes: list[str] = field(default_factory=list)

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def randn(self, *shape: int, requires_grad: bool = False) -> Tensor:
        return torch.randn(shape, device=self.device, dtype=self.dtype, requires_grad=requires_grad)


def static_compiled(fn: _F) -> _F:
    """``torch.compile`` with static shapes: each bench compiles (and reports) its own graph."""
    return cast(_F, torch.compile(fn, dynamic=False))


def grads_of(forward: Callable[[], Tensor], inputs: Sequence[Tensor], grad_out: Tensor | None) -> Fn:
    """Forward then backward for ``inputs`` (no accumulation into ``.grad``)."""
    return lambda: torch.autograd.grad(forward(), inputs, grad_out)
