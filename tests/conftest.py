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


def opcheck_backward_op(op, args):
    """opcheck of a backward op, every test of OPCHECK_TESTS: the backward ops are
    differentiable (double backward), so with inputs that require grad
    test_aot_dispatch_dynamic differentiates through them too."""
    torch.library.opcheck(op, args, test_utils=OPCHECK_TESTS)


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


# --- The autograd mechanisms (test_forward_ad.py, test_torch_func.py, test_double_backward.py) -------
# Each compares a transform of the ops with the same transform of PyTorch's own functions, in
# float64 on fresh random inputs: F.linear, F.mse_loss and the book's squared loss.

def assert_close_f64(actual, expected):
    """float64 results (tensors or nested tuples/lists of them) equal to within 1e-10."""
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def book_squared_loss(input, target, reduction="none"):
    """The book's squared loss (y_hat - y.reshape(y_hat.shape)) ** 2 / 2, reduced like torch's losses."""
    loss = (input - target.reshape(input.shape)) ** 2 / 2
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


REDUCTIONS = ["none", "sum", "mean"]
# name: (ours, PyTorch reference).
LOSSES = {
    "squared_loss": (lambda input, target, reduction: fused_linreg.squared_loss(input, target, reduction),
                     book_squared_loss),
    "mse_loss": (lambda input, target, reduction: fused_linreg.mse_loss(input, target, reduction),
                 lambda input, target, reduction: torch.nn.functional.mse_loss(input, target, reduction=reduction)),
}

# Leading dims of x: 2-D (n, in), 3-D (batch, n, in) and 1-D (in,).
X_LEADING = {"x2d": (5,), "x3d": (2, 5), "x1d": ()}
N_IN = 4
# (leading dims of x, out_features, bias): every combination of x 2-D/3-D/1-D, out 1/3, bias or not.
LINEAR_CASES = [pytest.param(leading, n_out, bias, id=f"{x_id}-out{n_out}-{'bias' if bias else 'no_bias'}")
                for x_id, leading in X_LEADING.items() for n_out in (1, 3) for bias in (True, False)]
# Shapes of a loss's input (the output of linear for the cases above).
LOSS_SHAPES = [pytest.param(shape, id="x".join(map(str, shape))) for shape in [(5, 1), (2, 5, 3), (3,)]]


def linear_args(leading, n_out, bias, *, generator, device="cpu", requires_grad=False) -> tuple:
    """(x, weight) or (x, weight, bias) in float64: the arguments of linear(x, weight, bias=None)."""
    shapes = [(*leading, N_IN), (n_out, N_IN)] + [(n_out,)] * bias
    return tuple(randn(s, generator=generator, dtype=torch.float64, device=device, requires_grad=requires_grad)
                 for s in shapes)


def loss_args(name, shape, *, generator, device="cpu", requires_grad=False) -> tuple:
    """(input, target) in float64. squared_loss gets its target flattened (the book's y of shape
    (n,) against y_hat (n, 1)): the op reshapes it; mse_loss gets a target of input's shape."""
    input, target = (randn(shape, generator=generator, dtype=torch.float64, device=device) for _ in range(2))
    if name == "squared_loss":
        target = target.reshape(-1)
    return input.requires_grad_(requires_grad), target.requires_grad_(requires_grad)


def targets_like(out, loss_name, *, generator):
    """A float64 target for a loss of `out`, shaped as loss_args shapes them."""
    target = randn(out.shape, generator=generator, dtype=torch.float64, device=out.device)
    return target.reshape(-1) if loss_name == "squared_loss" else target


def like(tensors, *, generator) -> tuple:
    """Fresh random tensors shaped like `tensors` (tangents, cotangents)."""
    return tuple(randn(t.shape, generator=generator, dtype=t.dtype, device=t.device) for t in tensors)


# The four backward ops, called directly, and what PyTorch computes for them: the vjp of
# F.linear (with respect to x; to weight and bias) and of the reference losses (to input).
# (op name, shape, reduction): shape is (leading dims of x, out_features) for the linear ops.
BACKWARD_OP_CASES = (
    [pytest.param(name, (leading, n_out), None, id=f"{name}-{x_id}-out{n_out}")
     for name in ("linear_backward_input", "linear_backward_params")
     for x_id, leading in X_LEADING.items() for n_out in (1, 3)]
    + [pytest.param(f"{loss}_backward", shape.values[0], reduction, id=f"{loss}_backward-{shape.id}-{reduction}")
       for loss in LOSSES for shape in LOSS_SHAPES for reduction in REDUCTIONS]
)


def backward_op_case(name, shape, reduction, *, generator, device="cpu", requires_grad=False):
    """(op, args, reference) of a BACKWARD_OP_CASES entry: `op(*args)` and `reference(*args)`
    are the same function of the (float64) tensor arguments `args`, the reduction bound."""
    def draw(*shape):
        return randn(shape, generator=generator, dtype=torch.float64, device=device, requires_grad=requires_grad)

    ops = torch.ops.fused_linreg
    if name.startswith("linear_"):
        leading, n_out = shape
        grad_out = draw(*leading, n_out)
        x0 = torch.zeros((*leading, N_IN), dtype=torch.float64, device=device)
        w0 = torch.zeros((n_out, N_IN), dtype=torch.float64, device=device)
        if name == "linear_backward_input":
            def reference(grad_out, weight):
                return torch.func.vjp(lambda x: torch.nn.functional.linear(x, weight), x0)[1](grad_out)[0]
            return ops.linear_backward_input, (grad_out, draw(n_out, N_IN)), reference

        def reference(grad_out, x):
            return torch.func.vjp(lambda w, b: torch.nn.functional.linear(x, w, b), w0, w0[:, 0])[1](grad_out)
        return ops.linear_backward_params, (grad_out, draw(*leading, N_IN)), reference

    loss = name.removesuffix("_backward")
    input, target = loss_args(loss, shape, generator=generator, device=device, requires_grad=requires_grad)
    grad_output = draw(*(shape if reduction == "none" else ()))
    ref_loss = LOSSES[loss][1]

    def reference(grad_output, input, target):
        return torch.func.vjp(lambda i: ref_loss(i, target, reduction), input)[1](grad_output)[0]

    op = getattr(ops, name)
    return (lambda grad_output, input, target: op(grad_output, input, target, reduction)), \
        (grad_output, input, target), reference
