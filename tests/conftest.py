"""Fixtures and helpers shared by the fused_linreg tests.

Every op test runs on the CPU and, marked `cuda`, on a GPU: `pytest -m cuda` selects
the GPU variants, and they are skipped where no GPU is visible. Results are compared
with a float64 eager PyTorch reference, with tolerances per dtype.
"""

import itertools
import math
from collections.abc import Sequence

import pytest
import torch
from hypothesis import settings

import fused_linreg  # noqa: F401  (loads the ops into torch.ops.fused_linreg)

# Hypothesis profiles of the property tests (test_properties.py). "ci", the default: the same
# 60 examples per test on every run (derandomized, no example database on disk, no deadline:
# timing is not a property), about 5 s for the file on 2 cores. "thorough": 2000 fresh random
# examples per test (minutes), to hunt for bugs:
# `pytest tests/test_properties.py --hypothesis-profile=thorough`.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None)
settings.register_profile("thorough", max_examples=2000, deadline=None, database=None)
settings.load_profile("ci")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
HALF_DTYPES = (torch.float16, torch.bfloat16)

# (rtol, atol) of one result against a float64 reference computed from the same inputs.
# The half types round the result once (fp32 accumulation): rtol is about one ulp.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

# The step size and SGD options of the fused linear-regression tests (make_problem's data).
LR = 0.1
MOMENTUM = dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=False)

OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def opcheck_backward_op(op, args, *, requires_grad: bool):
    """opcheck of a backward op. They are not differentiable (double backward raises by
    design), so with inputs that require grad the test that differentiates them is left out."""
    tests = [t for t in OPCHECK_TESTS if not (requires_grad and t == "test_aot_dispatch_dynamic")]
    torch.library.opcheck(op, args, test_utils=tests)


def pytest_collection_modifyitems(items):
    """Tests marked `cuda` are skipped where no GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU is visible")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def generator() -> torch.Generator:
    """A freshly seeded CPU generator: every test draws the same inputs on every run."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def num_threads():
    """Lets a test change torch's intra-op thread count; restores it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def randn(shape: Sequence[int], *, generator: torch.Generator, dtype=torch.float32, device="cpu",
          requires_grad=False) -> torch.Tensor:
    """Standard-normal values drawn on the CPU (same numbers on every device), cast and moved."""
    t = torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    return t.requires_grad_(requires_grad)


def make_problem(n, d, k, *, generator, dtype=torch.float32, device="cpu", y_1d=False, bias=True):
    """A linear-regression problem: X (n, d) with rows of norm about 1 (so LR is a stable step
    size for any d), y (n,) or (n, k), weight (k, d) and bias (k,) or None."""
    X = randn((n, d), generator=generator, dtype=torch.float64) / math.sqrt(d)
    y = randn((n,) if y_1d else (n, k), generator=generator, dtype=torch.float64)
    weight = randn((k, d), generator=generator, dtype=torch.float64)
    b = randn((k,), generator=generator, dtype=torch.float64) if bias else None
    return [t.to(device=device, dtype=dtype) if t is not None else None for t in (X, y, weight, b)]


def strided_copy(t: torch.Tensor) -> torch.Tensor:
    """A non-contiguous tensor equal to `t`: every dimension has a stride gap, filled with NaN,
    so a kernel that ignores strides reads NaN."""
    base = torch.full([2 * s for s in t.shape], math.nan, dtype=t.dtype, device=t.device)
    view = base[tuple(slice(None, None, 2) for _ in t.shape)]
    view.copy_(t.detach())
    return view.requires_grad_(t.requires_grad)


def assert_close_to_reference(actual: torch.Tensor, reference: torch.Tensor, *, dtype=None, scale: float = 1.0):
    """Compares `actual` with a float64 `reference`, with the tolerance of `dtype` (default:
    actual's). `scale` is the typical magnitude of the partial sums behind each element
    (e.g. sqrt(n) for a sum of n unit-variance products): it scales the absolute tolerance."""
    assert actual.shape == reference.shape, f"shape {tuple(actual.shape)} != reference {tuple(reference.shape)}"
    rtol, atol = TOLERANCES[dtype or actual.dtype]
    torch.testing.assert_close(actual.detach().to(device="cpu", dtype=torch.float64),
                               reference.detach().to(device="cpu", dtype=torch.float64),
                               rtol=rtol, atol=atol * max(1.0, scale), equal_nan=True)


def assert_bitwise_equal(got, expected, what: str = "result"):
    """`got` has the dtype, shape and bits (NaN payloads and signed zeros included) of
    `expected`; lists of tensors are compared entry by entry, named `what` 0, 1, ..."""
    if not isinstance(expected, torch.Tensor):
        assert len(got) == len(expected), f"{what}: {len(got)} tensors, expected {len(expected)}"
        for i, (one, want) in enumerate(zip(got, expected)):
            assert_bitwise_equal(one, want, f"{what} {i}")
        return
    assert got.dtype == expected.dtype and got.shape == expected.shape, \
        f"{what}: {got.dtype} {tuple(got.shape)} != expected {expected.dtype} {tuple(expected.shape)}"
    assert torch.equal(as_bytes(got), as_bytes(expected)), \
        f"{what} differs bitwise: max |diff| {(got.double() - expected.double()).abs().max()}"


def snapshot(tensors) -> list:
    """Deep copies of every tensor in a (nested) list/tuple/dict, for `assert_unchanged`."""
    return [t.detach().clone() if isinstance(t, torch.Tensor) else t for t in flatten(tensors)]


def assert_unchanged(tensors, before: list):
    """Every tensor is byte-identical (values, NaN payloads, shape, dtype) to its snapshot."""
    after = flatten(tensors)
    assert len(after) == len(before)
    for i, (now, then) in enumerate(zip(after, before)):
        if isinstance(then, torch.Tensor):
            assert now.dtype == then.dtype and now.shape == then.shape, f"tensor {i} changed dtype or shape"
            assert torch.equal(as_bytes(now), as_bytes(then)), f"tensor {i} was modified"
        else:
            assert now is then, f"entry {i} was replaced"


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    dense = t.detach().to_dense() if t.is_sparse else t.detach()
    # (contiguous() keeps the strides of an empty tensor, e.g. (2,), which view(uint8) refuses.)
    return dense.clone(memory_format=torch.contiguous_format).view(-1).view(torch.uint8)


def flatten(tree) -> list:
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in flatten(item)]
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in flatten(value)]
    return [tree]


def sgd_hyperparameters(*, valid: bool) -> list:
    """Every combination of momentum × dampening × nesterov × weight_decay × maximize;
    nesterov is valid only with momentum > 0 and dampening == 0."""
    combos = []
    for momentum, dampening, nesterov, weight_decay, maximize in itertools.product(
            [0.0, 0.9], [0.0, 0.1], [False, True], [0.0, 0.01], [False, True]):
        if (not nesterov or (momentum > 0 and dampening == 0)) != valid:
            continue
        hyper = dict(momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                     maximize=maximize)
        name = f"m{momentum}-d{dampening}-wd{weight_decay}" + "-nesterov" * nesterov + "-maximize" * maximize
        combos.append(pytest.param(hyper, id=name))
    return combos
