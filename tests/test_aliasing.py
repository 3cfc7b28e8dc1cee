"""Overlap of written tensors, decided exactly for any strides: sgd_ and linreg_step_ raise when
two tensors they write (or a written one and a read one) share an element, and update tensors
that share a buffer but no element exactly as torch's loop does. The reference for "share an
element" is brute force: views of a tensor holding 0..n-1, whose values are their addresses."""

import random

import pytest
import torch
from torch.optim.sgd import sgd as torch_sgd

import fused_linreg

from conftest import assert_close_f64, randn

LR = 0.1
HYPER = dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.01, maximize=False)


def addresses(view):
    """The elements of a view of `numbered(n)`: their offsets in its storage."""
    return set(view.flatten().tolist())


def numbered(n, device="cpu"):
    return torch.arange(n, dtype=torch.float64, device=device)


# (name, builder of two views of one base): shared or disjoint, as the brute force says.
VIEW_PAIRS = {
    "interleaved_disjoint": lambda b: (b[0::2], b[1::2]),
    "interleaved_same": lambda b: (b[0::2], b[0::2]),
    "strides_3_and_2": lambda b: (b[0::3], b[1::2]),  # share 4, 10, 16, ...
    "strides_4_and_4_offset_2": lambda b: (b[0::4], b[2::4]),
    "columns_disjoint": lambda b: (b.view(6, 8)[:, 0:2], b.view(6, 8)[:, 2:4]),
    "columns_overlapping": lambda b: (b.view(6, 8)[:, 0:2], b.view(6, 8)[:, 1:3]),
    "rows_and_column": lambda b: (b.view(6, 8)[0:2], b.view(6, 8)[2:, 5]),
    "row_and_column_crossing": lambda b: (b.view(6, 8)[3], b.view(6, 8)[:, 5]),
    "transposed": lambda b: (b.view(6, 8)[:, :6], b.view(6, 8)[:, :6].t()),
    "diagonals_disjoint": lambda b: (b.view(6, 8).diagonal(), b.view(6, 8).diagonal(offset=1)),
    "block_and_its_interior_column": lambda b: (b.view(6, 8)[1:4, 1:4], b.view(6, 8)[2:5, 3]),
    "non_nested_strides": lambda b: (b.as_strided((3, 2), (2, 3)), b.as_strided((2, 2), (5, 3), 2)),
    "non_nested_disjoint": lambda b: (b.as_strided((3, 2), (2, 3), 20), b.as_strided((4,), (2,), 1)),
}


@pytest.mark.parametrize("pair", VIEW_PAIRS, ids=str)
def test_two_params_raise_exactly_when_they_share_an_element(pair, device, generator):
    """sgd_ on two views of one tensor: an error iff they share an element, else torch's values."""
    base = numbered(48, device)
    a, b = VIEW_PAIRS[pair](base)
    shared = bool(addresses(a) & addresses(b))
    grads = [randn(a.shape, generator=generator, dtype=torch.float64, device=device),
             randn(b.shape, generator=generator, dtype=torch.float64, device=device)]
    before = base.clone()
    if shared:
        with pytest.raises(RuntimeError, match=r"fused_linreg\.sgd_: params\[1\] shares memory with params\[0\]"):
            fused_linreg.sgd_([a, b], grads, [None, None], lr=LR, **HYPER)
        assert torch.equal(base, before), "nothing is written before the error"
        return
    expected_base = base.clone()
    expected = list(VIEW_PAIRS[pair](expected_base))
    torch_sgd(expected, [g.clone() for g in grads], [None, None], foreach=False, lr=LR, **HYPER)
    fused_linreg.sgd_([a, b], grads, [None, None], lr=LR, **HYPER)
    assert_close_f64(base, expected_base)


def random_view(base, rng):
    """A strided view of `base` with 1-3 dimensions, any positive strides (overlapping ones
    included) and an offset, inside its storage."""
    n = base.numel()
    while True:
        dims = rng.randint(1, 3)
        sizes = [rng.randint(1, 5) for _ in range(dims)]
        strides = [rng.randint(1, 9) for _ in range(dims)]
        span = sum((s - 1) * st for s, st in zip(sizes, strides))
        if span < n:
            return base.as_strided(sizes, strides, rng.randint(0, n - 1 - span))


def test_random_strided_views_are_judged_exactly():
    """300 random pairs of strided views: sgd_ raises iff the brute force finds a shared element
    (or a view shares elements with itself, which a written tensor must not)."""
    rng = random.Random(20261206)
    for _ in range(300):
        base = numbered(64)
        a, b = random_view(base, rng), random_view(base, rng)
        internal = [len(addresses(v)) < v.numel() for v in (a, b)]
        shared = bool(addresses(a) & addresses(b))
        grads = [torch.ones(a.shape, dtype=torch.float64), torch.ones(b.shape, dtype=torch.float64)]
        before = base.clone()
        try:
            fused_linreg.sgd_([a, b], grads, [], lr=LR)
            raised = None
        except RuntimeError as error:
            raised = str(error)
        if internal[0] or internal[1]:
            assert raised is not None and "has elements that share memory" in raised, (a.stride(), b.stride())
        elif shared:
            assert raised is not None and "params[1] shares memory with params[0]" in raised, (a.stride(), b.stride())
        else:
            assert raised is None, (a.size(), a.stride(), a.storage_offset(), b.size(), b.stride(), raised)
            continue
        assert torch.equal(base, before)


def test_written_tensor_with_self_overlapping_strides_raises(device, generator):
    """as_strided((3, 3), (1, 1)) reads element 1 at (0, 1) and (1, 0): torch only catches stride 0."""
    base = numbered(9, device)
    param = base.as_strided((3, 3), (1, 1))
    grad = randn((3, 3), generator=generator, dtype=torch.float64, device=device)
    with pytest.raises(RuntimeError, match=r"params\[0\] has elements that share memory"):
        fused_linreg.sgd_([param], [grad], [], lr=LR)
    assert torch.equal(base, numbered(9, device))


def test_linreg_step_weight_and_bias_in_overlapping_columns(device, generator):
    """The fused step writes weight and bias: a bias that is a column of the weight's buffer raises."""
    X = randn((8, 3), generator=generator, dtype=torch.float64, device=device)
    y = randn((8, 2), generator=generator, dtype=torch.float64, device=device)
    base = randn((2, 4), generator=generator, dtype=torch.float64, device=device)
    before = base.clone()
    with pytest.raises(RuntimeError, match=r"linreg_step_: bias shares memory with weight"):
        fused_linreg.linreg_step_(X, y, base[:, :3], base[:, 2], lr=LR)
    assert torch.equal(base, before)
    fused_linreg.linreg_step_(X, y, base[:, :3], base[:, 3], lr=LR)  # disjoint columns: allowed
