"""Property-based parity with hypothesis: every op family against plain eager PyTorch on random
shapes (0-size included), memory layouts (strided, column-major, misaligned, stride 0), dtypes
and SGD options, with NaN/Inf/0 written into random inputs.

Each example draws the sizes and options, then one seed for a torch generator that draws the
values. The references, inputs and tolerances are the ones the example-based tests use
(test_linear, test_loss, test_sgd, test_fused_step, conftest), so a property fails for the
same reasons they would, only on inputs nobody wrote down. Comparing with
`assert_close_to_reference` also checks NaN/Inf propagation: it needs NaN exactly where the
reference has NaN, and infinities of the same sign where the reference has them.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import fused_linreg

from conftest import (DEVICES, FLOAT_DTYPES, HALF_DTYPES, assert_close_to_reference, assert_unchanged,
                      make_problem, randn, snapshot, strided_copy)
from test_fused_step import Reference, assert_matches_reference, book_loss
from test_linear import check_against_reference, make_linear_inputs
from test_loss import book_squared_loss, check_loss
from test_sgd import torch_sgd_step

ops = torch.ops.fused_linreg

SEEDS = st.integers(0, 2**32 - 1)
DTYPES = st.sampled_from(FLOAT_DTYPES)
# How a tensor is stored (see `with_layout`). "expanded" has stride 0 and so only fits
# tensors an op reads; the op writes the others in place.
WRITABLE_LAYOUTS = ["contiguous", "strided", "column_major", "misaligned"]
LAYOUTS = [*WRITABLE_LAYOUTS, "expanded"]
# Values written into random inputs: NaN and infinities must propagate as they do in torch;
# an exact zero makes products 0 * inf = NaN possible.
SPECIAL_VALUES = [math.nan, math.inf, -math.inf, 0.0]
# Each entry: (which input, which element, value); both numbers are taken modulo the count.
SPECIALS = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10**4), st.sampled_from(SPECIAL_VALUES)),
                    max_size=3)
# Shapes of 0-3 dimensions of 0-6 elements. 0 (elements or dimensions) is listed last, which
# hypothesis draws less often than the first entries: empty and 0-dim tensors must work, but
# most examples should hold data to compare.
DIM = st.sampled_from([1, 2, 3, 4, 5, 6, 0])
SHAPES = st.sampled_from([1, 2, 3, 0]).flatmap(lambda ndim: st.tuples(*[DIM] * ndim))
# Output features: 0 and 1 (no output; the single output that F.linear's broadcast bias and a
# 1-D y take), up to 16 (the hand-written skinny kernels) and beyond (the vendor GEMM, the
# general path). Half the draws are those boundaries, so that they come up often.
OUTPUTS = st.one_of(st.sampled_from([1, 16, 17, 0]), st.integers(1, 20))


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """`t` stored with `layout`: "contiguous"; "strided" (a stride gap in every dimension, NaN
    in the gaps); "column_major" (dimensions stored in reverse order); "misaligned" (storage
    offset of one element: no 16-byte aligned vector loads); "expanded" (t's first slice
    along dimension 0 broadcast with stride 0 over that dimension: the values change, so
    references must be computed from the returned tensor)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "strided":
        return strided_copy(t)
    if layout == "column_major":
        reverse = tuple(reversed(range(t.dim())))
        return t.permute(reverse).contiguous().permute(reverse)
    if layout == "misaligned":
        storage = torch.full((t.numel() + 1,), math.nan, dtype=t.dtype, device=t.device)
        return storage[1:].view(t.shape).copy_(t)
    assert layout == "expanded"
    return t[:1].expand(t.shape) if t.dim() > 0 else t


def inject(tensors, specials):
    """Writes each (input, element, value) of `specials` into the given contiguous tensors;
    None and empty tensors are passed over."""
    targets = [t for t in tensors if t is not None and t.numel() > 0]
    for which, element, value in specials:
        if targets:
            t = targets[which % len(targets)]
            t.view(-1)[element % t.numel()] = value


@st.composite
def sgd_options(draw):
    """torch.optim.SGD's options (momentum 0 included); nesterov only where torch allows it,
    with momentum > 0 and dampening 0."""
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    dampening = draw(st.sampled_from([0.0, 0.1, 1.0]))
    nesterov = momentum > 0 and dampening == 0 and draw(st.booleans())
    return dict(momentum=momentum, dampening=dampening, nesterov=nesterov,
                weight_decay=draw(st.sampled_from([0.0, 0.01, 0.5])), maximize=draw(st.booleans()))


def generator_from(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- linear ------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@given(leading=SHAPES, in_features=st.integers(0, 12), out_features=OUTPUTS, bias=st.booleans(), dtype=DTYPES,
       layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 3), specials=SPECIALS, seed=SEEDS)
def test_linear_forward_and_backward_match_f_linear(device, leading, in_features, out_features, bias, dtype, layouts,
                                                     specials, seed):
    """fused_linreg.linear and its gradients equal float64 F.linear's within the dtype's
    tolerance for any x of 1-4 dimensions, any in/out features (0, skinny <= 16 and GEMM-sized
    > 16 included), with or without bias, and any layout of each input."""
    generator = generator_from(seed)
    inputs = make_linear_inputs(leading, in_features, out_features, bias=bias, dtype=dtype, device=device,
                                generator=generator, requires_grad=False)
    inject(inputs, specials)
    x, weight, b = (None if t is None else with_layout(t, layout).requires_grad_()
                    for t, layout in zip(inputs, layouts))
    check_against_reference(x, weight, b, generator)


@pytest.mark.parametrize("device", DEVICES)
@given(leading=SHAPES, in_features=st.integers(0, 12), out_features=OUTPUTS, dtype=DTYPES,
       layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 3), specials=SPECIALS, seed=SEEDS)
def test_linear_backward_ops_match_their_formulas(device, leading, in_features, out_features, dtype, layouts,
                                                  specials, seed):
    """The backward ops called directly on any layout: linear_backward_input(g, W) = g @ W and
    linear_backward_params(g, x) = (g^T x, g summed over rows), all leading dims as rows."""
    generator = generator_from(seed)
    x, weight, _ = make_linear_inputs(leading, in_features, out_features, bias=False, dtype=dtype, device=device,
                                      generator=generator, requires_grad=False)
    grad_out = randn((*leading, out_features), generator=generator, dtype=dtype, device=device)
    inject([grad_out, x, weight], specials)
    grad_out, x, weight = (with_layout(t, layout) for t, layout in zip((grad_out, x, weight), layouts))
    rows = math.prod(leading)
    g64, x64 = grad_out.double().reshape(rows, out_features), x.double().reshape(rows, in_features)
    assert_close_to_reference(ops.linear_backward_input(grad_out, weight), grad_out.double() @ weight.double(),
                              scale=math.sqrt(out_features))
    grad_weight, grad_bias = ops.linear_backward_params(grad_out, x)
    assert_close_to_reference(grad_weight, g64.T @ x64, scale=math.sqrt(rows))
    assert_close_to_reference(grad_bias, g64.sum(0), scale=math.sqrt(rows))


# --- losses -------------------------------------------------------------------------------------

LOSSES = {"mse_loss": (fused_linreg.mse_loss, F.mse_loss),
          "squared_loss": (fused_linreg.squared_loss, book_squared_loss)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LOSSES)
@given(shape=SHAPES, target_shape=st.sampled_from(["same", "flat", "column"]),
       reduction=st.sampled_from(["none", "sum", "mean"]), dtype=DTYPES,
       layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 2), specials=SPECIALS, seed=SEEDS)
def test_losses_forward_and_backward_match_eager(device, name, shape, target_shape, reduction, dtype, layouts,
                                                 specials, seed):
    """mse_loss against F.mse_loss and squared_loss against the book's (y_hat - y)**2 / 2,
    value and both gradients, for any shape (0-size: sum 0, mean NaN), reduction, dtype and
    layout. squared_loss also takes a target of another shape with as many elements ("flat":
    1-D; "column": a trailing dimension of 1, the book's (n,) vs (n, 1))."""
    ours, reference = LOSSES[name]
    if name == "mse_loss":
        target_shape = "same"  # F.mse_loss broadcasts other shapes, with a warning (test_loss covers it)
    generator = generator_from(seed)
    input = randn(shape, generator=generator, dtype=dtype, device=device)
    target = randn({"same": shape, "flat": (math.prod(shape),), "column": (*shape, 1)}[target_shape],
                   generator=generator, dtype=dtype, device=device)
    inject([input, target], specials)
    input, target = (with_layout(t, layout).requires_grad_() for t, layout in zip((input, target), layouts))
    check_loss(ours, reference, input, target, reduction, generator)


# --- sgd_ -----------------------------------------------------------------------------------------

def unscaled(grads, grad_scale, dtype):
    """Copies of the gradients in `dtype`, divided by grad_scale when there is one."""
    return [g.to(dtype, copy=True) / (1.0 if grad_scale is None else grad_scale.item()) for g in grads]


@pytest.mark.parametrize("device", DEVICES)
@given(shapes=st.lists(SHAPES, min_size=1, max_size=3),
       has_buffer=st.lists(st.booleans(), min_size=3, max_size=3), dtype=DTYPES, options=sgd_options(),
       lr=st.sampled_from([0.0, 0.05, 1.0]), lr_dtype=st.sampled_from([None, torch.float32, torch.float64]),
       grad_scale=st.sampled_from([None, 2.0, 3.0, 1024.0]), found_inf=st.sampled_from([None, 0.0, 1.0]),
       steps=st.integers(1, 3), layouts=st.tuples(st.sampled_from(WRITABLE_LAYOUTS), st.sampled_from(LAYOUTS),
                                                  st.sampled_from(WRITABLE_LAYOUTS)),
       specials=SPECIALS, seed=SEEDS)
# Found by this property (a stride-0 grad, which torch's SGD reads): kept so every run tries it.
@example(shapes=[(2,)], has_buffer=[False] * 3, dtype=torch.float32,
         options=dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False), lr=0.05,
         lr_dtype=None, grad_scale=None, found_inf=None, steps=1, layouts=("contiguous", "expanded", "contiguous"),
         specials=[], seed=0)
def test_sgd_matches_torch_sgd(device, shapes, has_buffer, dtype, options, lr, lr_dtype, grad_scale, found_inf, steps,
                               layouts, specials, seed):
    """sgd_ against torch's single-tensor SGD for 1-3 steps on a list of parameters of any shape,
    dtype and layout: every option, a float or tensor lr, per-parameter first steps (None in
    the buffer list), grad_scale (grads written back unscaled) and found_inf (nonzero: nothing
    changes at all). Half types are updated in float32 and rounded once per step, so their
    reference runs in float32 and is rounded likewise."""
    generator = generator_from(seed)
    param_layout, grad_layout, buffer_layout = layouts
    if grad_scale is not None:
        grad_layout = param_layout  # the unscaled grads are written back: no stride 0
    compute = torch.float32 if dtype in HALF_DTYPES else dtype

    def random_list():
        return [randn(shape, generator=generator, dtype=dtype, device=device) for shape in shapes]

    params, grads = random_list(), random_list()
    buffers = [b if has else None for b, has in zip(random_list(), has_buffer)]
    inject([*params, *grads, *buffers], specials)
    params = [with_layout(p, param_layout) for p in params]
    grads = [with_layout(g, grad_layout) for g in grads]
    buffers = [None if b is None else with_layout(b, buffer_layout) for b in buffers]
    lr_arg = lr if lr_dtype is None else torch.tensor(lr, dtype=lr_dtype, device=device)
    scale = None if grad_scale is None else torch.tensor(grad_scale, device=device)
    skip = None if found_inf is None else torch.tensor(found_inf, device=device)

    if found_inf:
        before = snapshot([params, grads, buffers])
        fused_linreg.sgd_(params, grads, buffers, lr=lr_arg, grad_scale=scale, found_inf=skip, **options)
        assert_unchanged([params, grads, buffers], before)
        return

    # Copies: ours update params and buffers in place.
    expected_params = [p.to(compute, copy=True) for p in params]
    expected_buffers = [None if b is None else b.to(compute, copy=True) for b in buffers]
    for step in range(steps):
        if step > 0:
            grads = [with_layout(g, grad_layout) for g in random_list()]
        existing = list(buffers)
        expected_grads = unscaled(grads, scale, compute)
        fused_linreg.sgd_(params, grads, buffers, lr=lr_arg, grad_scale=scale, found_inf=skip, **options)
        torch_sgd_step(expected_params, expected_grads, expected_buffers,
                       lr=lr if lr_dtype is None else lr_arg.item(), **options)
        # The reference keeps float32 values for half types; ours are rounded once per step.
        expected_params = [p.to(dtype).to(compute) for p in expected_params]
        expected_buffers = [None if b is None else b.to(dtype).to(compute) for b in expected_buffers]
        for p, g, expected_p, expected_g in zip(params, grads, expected_params, expected_grads):
            assert_close_to_reference(p, expected_p.to(dtype), dtype=dtype)
            assert_close_to_reference(g, expected_g.to(dtype), dtype=dtype)
        for buf, old, expected in zip(buffers, existing, expected_buffers):
            assert (buf is None) == (expected is None), "a buffer exists exactly where torch keeps one"
            if buf is not None:
                assert old is None or buf is old, "an existing buffer is updated in place, not replaced"
                assert_close_to_reference(buf, expected.to(dtype), dtype=dtype)


# --- the fused linear-regression ops --------------------------------------------------------------

# n >= 1 rows: the ops reject an empty batch (test_linreg_ops_reject_empty_batches).
LINREG_SHAPES = dict(n=st.integers(1, 24), d=st.integers(0, 6), k=OUTPUTS, y_1d=st.booleans(), bias=st.booleans())
# X and y are read; weight and bias are updated in place by the step and the epoch.
LINREG_LAYOUTS = st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS), st.sampled_from(WRITABLE_LAYOUTS),
                           st.sampled_from(WRITABLE_LAYOUTS))


def linreg_problem(n, d, k, y_1d, bias, *, dtype, device, layouts, specials, seed):
    """make_problem's X, y, weight, bias (y 1-D only when k == 1) with specials and layouts."""
    tensors = make_problem(n, d, k, generator=generator_from(seed), dtype=dtype, device=device,
                           y_1d=y_1d and k == 1, bias=bias)
    inject(tensors, specials)
    return [None if t is None else with_layout(t, layout) for t, layout in zip(tensors, layouts)]


def reference_for(weight, bias, *, dtype, lr, options):
    """The composed eager step (test_fused_step.Reference): float64, or for half types float32
    with parameters and buffers rounded to the half type after every step, as ours are stored."""
    if dtype in HALF_DTYPES:
        return Reference(weight, bias, dtype=torch.float32, round_to=dtype, lr=lr, **options)
    return Reference(weight, bias, dtype=torch.float64, lr=lr, **options)


@pytest.mark.parametrize("device", DEVICES)
@given(**LINREG_SHAPES, dtype=DTYPES, layouts=LINREG_LAYOUTS, specials=SPECIALS, seed=SEEDS)
def test_linreg_grad_matches_autograd_of_the_book_loss(device, n, d, k, y_1d, bias, dtype, layouts, specials, seed):
    """linreg_grad's loss and gradients equal float64 autograd of the book's loss for any
    n >= 1, d >= 0 and k >= 0 (k > 16 included), with or without bias, any dtype and layout."""
    X, y, weight, b = linreg_problem(n, d, k, y_1d, bias, dtype=dtype, device=device, layouts=layouts,
                                     specials=specials, seed=seed)
    loss, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, weight, b)
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in (weight, b)]
    expected = book_loss(X.double(), y.double(), *leaves)
    expected.backward()
    assert loss.dtype == grad_weight.dtype == dtype
    assert_close_to_reference(loss, expected)
    assert_close_to_reference(grad_weight, leaves[0].grad)
    assert (grad_bias is None) == (b is None)
    if b is not None:
        assert_close_to_reference(grad_bias, leaves[1].grad)


@pytest.mark.parametrize("device", DEVICES)
@given(**LINREG_SHAPES, dtype=DTYPES, options=sgd_options(), lr=st.sampled_from([0.0, 0.1, 0.5]),
       steps=st.integers(1, 3), layouts=LINREG_LAYOUTS, specials=SPECIALS, seed=SEEDS)
def test_linreg_step_matches_autograd_and_torch_sgd(device, n, d, k, y_1d, bias, dtype, options, lr, steps, layouts,
                                                    specials, seed):
    """1-3 linreg_step_ calls with one state dict equal the book's loss, loss.backward() and
    torch.optim.SGD's step: the returned losses, weight, bias and momentum buffers, for any
    shape, dtype, layout and SGD option."""
    X, y, weight, b = linreg_problem(n, d, k, y_1d, bias, dtype=dtype, device=device, layouts=layouts,
                                     specials=specials, seed=seed)
    ref = reference_for(weight, b, dtype=dtype, lr=lr, options=options)
    state = {}
    for _ in range(steps):
        loss = fused_linreg.linreg_step_(X, y, weight, b, lr=lr, state=state, **options)
        assert loss.shape == () and loss.dtype == dtype
        # Rounded like ours: a diverging half-type run's loss leaves the type's range (inf).
        assert_close_to_reference(loss, ref.step(X, y).to(dtype))
        assert_matches_reference(ref, weight, b, state)


@pytest.mark.parametrize("device", DEVICES)
@given(**LINREG_SHAPES, dtype=DTYPES, options=sgd_options(), lr=st.sampled_from([0.0, 0.1, 0.5]),
       batch_size=st.integers(1, 8), rows=st.lists(st.integers(0, 10**4), min_size=1, max_size=12),
       epochs=st.integers(1, 2), layouts=LINREG_LAYOUTS, specials=SPECIALS, seed=SEEDS)
def test_linreg_epoch_matches_eager_steps(device, n, d, k, y_1d, bias, dtype, options, lr, batch_size, rows, epochs,
                                          layouts, specials, seed):
    """1-2 linreg_epoch_ calls with one state dict over explicit indices (rows may repeat or
    be left out) equal the eager step (autograd + torch.optim.SGD) on each minibatch in turn:
    the per-step losses, and the parameters and buffers after each epoch (the second epoch
    continues from the first one's buffers)."""
    X, y, weight, b = linreg_problem(n, d, k, y_1d, bias, dtype=dtype, device=device, layouts=layouts,
                                     specials=specials, seed=seed)
    indices = torch.tensor([r % n for r in rows], dtype=torch.int64, device=device)
    ref = reference_for(weight, b, dtype=dtype, lr=lr, options=options)
    state = {}
    for _ in range(epochs):
        losses = fused_linreg.linreg_epoch_(X, y, weight, b, lr=lr, batch_size=batch_size, indices=indices,
                                            state=state, **options)
        expected = [ref.step(X[batch], y[batch]) for batch in indices.split(batch_size)]
        assert losses.dtype == dtype
        # Rounded like ours: a diverging half-type run's loss leaves the type's range (inf).
        assert_close_to_reference(losses, torch.stack(expected).to(dtype))
        assert_matches_reference(ref, weight, b, state)


@pytest.mark.parametrize("device", DEVICES)
@given(**LINREG_SHAPES, dtype=DTYPES, options=sgd_options(), layouts=LINREG_LAYOUTS, seed=SEEDS)
def test_linreg_ops_reject_empty_batches(device, n, d, k, y_1d, bias, dtype, options, layouts, seed):
    """A minibatch without rows has no mean loss: linreg_grad and linreg_step_ on X with no
    rows, and linreg_epoch_ without indices (given empty, or drawn from X with no rows), raise
    their documented errors and change nothing (parameters, state dict)."""
    X, y, weight, b = linreg_problem(n, d, k, y_1d, bias, dtype=dtype, device=device, layouts=layouts, specials=[],
                                     seed=seed)
    state = {}
    options = dict(lr=0.1, state=state, **options)
    calls = [
        ("linreg_grad: X has no rows", lambda: fused_linreg.linreg_grad(X[:0], y[:0], weight, b)),
        ("linreg_step_: X has no rows", lambda: fused_linreg.linreg_step_(X[:0], y[:0], weight, b, **options)),
        ("linreg_epoch_: indices is empty", lambda: fused_linreg.linreg_epoch_(
            X, y, weight, b, batch_size=4, indices=torch.empty(0, dtype=torch.int64, device=device), **options)),
        ("linreg_epoch_: indices is empty", lambda: fused_linreg.linreg_epoch_(
            X[:0], y[:0], weight, b, batch_size=4, **options)),
    ]
    before = snapshot([weight, b, state])
    for message, call in calls:
        with pytest.raises(RuntimeError, match=r"fused_linreg\." + message):
            call()
        assert_unchanged([weight, b, state], before)
