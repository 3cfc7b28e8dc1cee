"""The fused training step of linear regression: linreg_step_, linreg_grad and linreg_epoch_
against the composed eager reference (autograd of the book's loss + torch.optim.SGD), the
epoch against the loop of steps (bitwise), opcheck, and strided and aliased layouts.

Elsewhere: bad input in test_bad_input.py, determinism in test_determinism.py, torch.compile
in test_compile.py, data-parallel training in test_ddp.py."""

import math

import pytest
import torch

import fused_linreg
from fused_linreg.fused_step import BIAS_BUFFER, WEIGHT_BUFFER

from conftest import (HALF_DTYPES, LR, MOMENTUM, OPCHECK_TESTS, assert_bitwise_equal, assert_close_to_reference,
                      make_problem, sgd_hyperparameters, strided_copy)

ops = torch.ops.fused_linreg


def book_loss(X, y, weight, bias):
    """The book's squared_loss(linreg(X, w, b), y).sum() / batch_size, with weight (k, d)."""
    y_hat = X @ weight.T + (bias if bias is not None else 0)
    return ((y_hat - y.reshape(y_hat.shape)) ** 2 / 2).sum() / X.shape[0]


class Reference:
    """Eager autograd of the book's loss and torch.optim.SGD(foreach=False) on [weight, bias],
    computed in `dtype`. With `round_to` (a half type), parameters and momentum buffers are
    rounded to it after every step, as the fused kernel stores them."""

    def __init__(self, weight, bias, *, dtype, lr, round_to=None, **hyper):
        self.dtype, self.round_to = dtype, round_to
        self.weight = weight.detach().to(dtype).clone().requires_grad_()
        self.bias = None if bias is None else bias.detach().to(dtype).clone().requires_grad_()
        self.params = [p for p in (self.weight, self.bias) if p is not None]
        self.optimizer = torch.optim.SGD(self.params, lr=lr, foreach=False, **hyper)

    def step(self, X, y):
        self.optimizer.zero_grad()
        loss = book_loss(X.to(self.dtype), y.to(self.dtype), self.weight, self.bias)
        loss.backward()
        self.optimizer.step()
        if self.round_to is not None:
            with torch.no_grad():
                for t in self.params + [self.buffer(p) for p in self.params if self.buffer(p) is not None]:
                    t.copy_(t.to(self.round_to).to(self.dtype))
        return loss.detach()

    def buffer(self, param):
        return self.optimizer.state[param].get("momentum_buffer")


def assert_matches_reference(ref, weight, bias, state, *, scale=1.0):
    assert_close_to_reference(weight, ref.weight, scale=scale)
    assert (bias is None) == (ref.bias is None)
    if bias is not None:
        assert_close_to_reference(bias, ref.bias, scale=scale)
    expected_buffers = {name: ref.buffer(p) for name, p in ((WEIGHT_BUFFER, ref.weight), (BIAS_BUFFER, ref.bias))
                        if p is not None and ref.buffer(p) is not None}
    assert set(state) == set(expected_buffers), "the state dict holds exactly the buffers torch's SGD keeps"
    for name, expected in expected_buffers.items():
        assert_close_to_reference(state[name], expected, scale=scale)


def run_steps_against_reference(X, y, weight, bias, *, steps, hyper, ref_dtype=torch.float64, round_to=None,
                                scale=1.0):
    """`steps` calls of fused_linreg.linreg_step_ on (X, y) with one state dict, checked after each."""
    ref = Reference(weight, bias, dtype=ref_dtype, lr=LR, round_to=round_to, **hyper)
    state = {}
    for _ in range(steps):
        loss = fused_linreg.linreg_step_(X, y, weight, bias, lr=LR, state=state, **hyper)
        expected_loss = ref.step(X, y)
        assert loss.shape == () and loss.dtype == X.dtype
        assert_close_to_reference(loss, expected_loss, scale=scale)
        assert_matches_reference(ref, weight, bias, state, scale=scale)


# --- linreg_step_ against the composed reference ------------------------------------------

# (n, d, k, y_1d): single rows and features, the book's shape, k around the tuned limit of 16,
# batches that span many parallel chunks; d = 85 = 64 + 16 + 5 takes every path of the CPU
# row loops (four vectors at a time, one, then single elements) and n = 301 a short last
# block of rows.
SHAPES = [
    (1, 1, 1, True), (1, 5, 3, False), (2, 1, 2, False), (10, 2, 1, True), (10, 2, 1, False), (7, 9, 4, False),
    (33, 17, 16, False), (100, 3, 20, False), (257, 64, 1, True), (1000, 300, 2, False), (5000, 8, 5, False),
    (5000, 300, 1, True), (301, 85, 4, False), (301, 85, 7, False), (3001, 48, 4, False),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(("n", "d", "k", "y_1d"), SHAPES, ids=[f"{n}x{d}-k{k}" + "-y1d" * y for n, d, k, y in SHAPES])
def test_step_matches_reference_over_shapes(n, d, k, y_1d, bias, dtype, device, generator):
    X, y, weight, b = make_problem(n, d, k, generator=generator, dtype=dtype, device=device, y_1d=y_1d, bias=bias)
    run_steps_against_reference(X, y, weight, b, steps=3, hyper=MOMENTUM)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("hyper", sgd_hyperparameters(valid=True))
def test_step_matches_reference_for_every_sgd_option(hyper, bias, dtype, device, generator):
    """Five steps with one state dict: the first-step rule, then the momentum recurrence."""
    X, y, weight, b = make_problem(64, 7, 3, generator=generator, dtype=dtype, device=device, bias=bias)
    run_steps_against_reference(X, y, weight, b, steps=5, hyper=hyper)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("hyper", [
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    MOMENTUM,
    dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01, maximize=True),
], ids=["plain", "momentum", "nesterov-maximize"])
# k = 1 reads half rows in place (converted in registers), k > 1 converts each block of rows:
# d = 85 takes both paths through whole vectors and a tail.
@pytest.mark.parametrize(("n", "d", "k"), [(10, 2, 1), (301, 85, 1), (300, 33, 4), (301, 85, 3), (3000, 64, 16)],
                         ids=str)
def test_step_half_types_accumulate_in_float32(n, d, k, hyper, dtype, device, generator):
    """Half-type inputs: the reference runs in float32 on the same (half) values and rounds
    parameters and buffers to the half type after every step, as the kernel stores them."""
    X, y, weight, b = make_problem(n, d, k, generator=generator, dtype=dtype, device=device)
    run_steps_against_reference(X, y, weight, b, steps=3, hyper=hyper, ref_dtype=torch.float32, round_to=dtype,
                                scale=2.0)


def test_step_stores_momentum_buffers_only_when_needed(device, generator):
    X, y, weight, _ = make_problem(20, 3, 2, generator=generator, device=device)
    state = {}
    fused_linreg.linreg_step_(X, y, weight, None, lr=LR, state=state)
    assert state == {}, "momentum 0 keeps no buffers"
    fused_linreg.linreg_step_(X, y, weight, None, lr=LR, momentum=0.9, state=state)
    assert set(state) == {WEIGHT_BUFFER}, "without a bias there is no bias buffer"
    buffer = state[WEIGHT_BUFFER]
    fused_linreg.linreg_step_(X, y, weight, None, lr=LR, momentum=0.9, state=state)
    assert state[WEIGHT_BUFFER] is buffer, "later steps update the buffer in place"


def test_step_updates_leaf_parameters_in_place_like_an_optimizer(device, generator):
    """Leaves that require grad are updated (under no_grad, as optimizers do), their version
    counters are bumped, so a graph that saved them refuses to backpropagate."""
    X, y, weight, bias = make_problem(10, 2, 1, generator=generator, device=device)
    weight.requires_grad_()
    bias.requires_grad_()
    saved = (weight ** 2).sum()
    before, version = weight.detach().clone(), weight._version
    loss = fused_linreg.linreg_step_(X, y, weight, bias, lr=LR)
    assert not loss.requires_grad
    assert weight._version > version and not torch.equal(weight.detach(), before)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()


# --- linreg_grad against autograd ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_DTYPES], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(("n", "d", "k", "y_1d"), SHAPES[::2], ids=[f"{n}x{d}-k{k}" for n, d, k, _ in SHAPES[::2]])
def test_grad_matches_autograd(n, d, k, y_1d, bias, dtype, device, generator):
    """Against float64 autograd of the book's loss on the same (possibly half) values."""
    X, y, weight, b = make_problem(n, d, k, generator=generator, dtype=dtype, device=device, y_1d=y_1d, bias=bias)
    loss, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, weight, b)
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (weight, b)]
    expected = book_loss(X.double(), y.double(), *leaves)
    expected.backward()
    assert loss.dtype == grad_weight.dtype == dtype
    assert_close_to_reference(loss, expected)
    assert_close_to_reference(grad_weight, leaves[0].grad)
    if bias:
        assert_close_to_reference(grad_bias, leaves[1].grad)
    else:
        assert grad_bias is None


def test_grad_matches_central_differences_of_its_own_loss_in_float64(device, generator):
    """The loss is quadratic, so central differences are exact up to rounding: the gradients
    must be the derivatives of the loss the same op returns."""
    X, y, weight, bias = make_problem(50, 4, 3, generator=generator, dtype=torch.float64, device=device)
    _, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, weight, bias)
    eps = 1e-3
    for param, grad in ((weight, grad_weight), (bias, grad_bias)):
        numeric = torch.empty_like(param)
        for i in range(param.numel()):
            losses = []
            for sign in (1, -1):
                shifted = param.clone()
                shifted.view(-1)[i] += sign * eps
                args = (shifted, bias) if param is weight else (weight, shifted)
                losses.append(fused_linreg.linreg_grad(X, y, *args)[0])
            numeric.view(-1)[i] = (losses[0] - losses[1]) / (2 * eps)
        torch.testing.assert_close(grad, numeric, rtol=1e-8, atol=1e-10)


def test_grad_returns_plain_tensors_and_the_op_refuses_backward(device, generator):
    X, y, weight, bias = make_problem(10, 2, 1, generator=generator, device=device)
    weight.requires_grad_()
    outputs = fused_linreg.linreg_grad(X, y, weight, bias)
    assert not any(t.requires_grad for t in outputs)
    loss, _, _ = ops.linreg_grad(X, y, weight, bias)
    with pytest.raises(RuntimeError, match="linreg_grad is not differentiable"):
        loss.backward()


# (n, d): one chunk of rows, and with d = 64 as many chunks for k outputs as for k + 1; d = 20,
# 24, 72 and 85 end in features short of a vector (AVX2's 8 lanes or AVX-512's 16), n = 301 in a
# short last block of rows. k = 8, 16 and 20 take their residuals a whole vector of outputs at a
# time where one fits (AVX2: 8, AVX-512: 16), the rest four at a time. k = 4 with d = 32, 48 or
# 64 (two to four whole AVX-512 vectors) keeps its sums in registers row by row.
@pytest.mark.parametrize(("n", "d"), [(250, 8), (250, 16), (250, 20), (250, 24), (301, 32), (250, 48), (250, 64),
                                      (250, 72), (301, 85), (5000, 64)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("k", [4, 8, 16, 20])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_outputs_in_fours_keep_the_general_paths_bits(n, d, k, bias, generator):
    """float32 rows with outputs in fours and at least one vector of features take their own CPU path;
    with one output more they take the general one. Each output's gradient sums are its own (and
    both shapes split the rows into the same chunks), so the first k outputs' gradients must be
    bitwise the same either way."""
    X, y, weight, b = make_problem(n, d, k + 1, generator=generator, bias=bias)
    _, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, weight, b)
    _, grad_weight_fours, grad_bias_fours = fused_linreg.linreg_grad(
        X, y[:, :k].contiguous(), weight[:k].contiguous(), b[:k].contiguous() if bias else None)
    assert_bitwise_equal(grad_weight_fours, grad_weight[:k].contiguous(), "grad_weight")
    if bias:
        assert_bitwise_equal(grad_bias_fours, grad_bias[:k].contiguous(), "grad_bias")


# d = 20, 24, 72, 85 and 127 end in 4 to 15 features short of a vector. The multi-output paths
# take those tails for a group of 3 (AVX2) or 4 (AVX-512) rows by 4 outputs in one vector, and
# one row at a time for the rows left over at the end of a block of rows.
@pytest.mark.parametrize("d", [20, 24, 64, 72, 85, 127])
@pytest.mark.parametrize("k", [4, 16])
def test_gradient_does_not_depend_on_how_rows_group(d, k, generator):
    """Rows of x = 0 with y = b have residual +0 and add exactly nothing to any sum. Put after
    the rows they change nothing; put before them they move every row to another place in the
    groups of rows (n <= 256: one chunk of rows either way), and the gradients must stay bitwise
    the same."""
    X, y, weight, b = make_problem(250, d, k, generator=generator)
    for padding in (1, 2, 3, 5):
        zero_X, zero_y = torch.zeros(padding, d), b.expand(padding, k)
        expected = fused_linreg.linreg_grad(torch.cat([X, zero_X]), torch.cat([y, zero_y]), weight, b)
        got = fused_linreg.linreg_grad(torch.cat([zero_X, X]), torch.cat([zero_y, y]), weight, b)
        assert_bitwise_equal(got[1:], expected[1:], f"gradients with {padding} rows of zeros first")


def test_step_equals_grad_then_sgd(device, generator):
    """linreg_grad + sgd_ is the unfused form of linreg_step_ (what data-parallel training does)."""
    X, y, weight, bias = make_problem(200, 6, 2, generator=generator, device=device)
    params = [weight.clone(), bias.clone()]
    buffers, state = [None, None], {}
    for _ in range(3):
        loss, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, *params)
        fused_linreg.sgd_(params, [grad_weight, grad_bias], buffers, lr=LR, **MOMENTUM)
        step_loss = fused_linreg.linreg_step_(X, y, weight, bias, lr=LR, state=state, **MOMENTUM)
        assert_close_to_reference(step_loss, loss.double())
    for got, expected in zip([weight, bias, state[WEIGHT_BUFFER], state[BIAS_BUFFER]], params + buffers):
        assert_close_to_reference(got, expected.double())


# --- linreg_epoch_ is the loop of linreg_step_, bitwise ----------------------------------------

def step_loop(X, y, weight, bias, indices, batch_size, state, hyper):
    losses = []
    for begin in range(0, len(indices), batch_size):
        rows = indices[begin:begin + batch_size]
        losses.append(fused_linreg.linreg_step_(X[rows], y[rows], weight, bias, lr=LR, state=state, **hyper))
    return torch.stack(losses)


EPOCH_CASES = {
    # name: (n, d, k, batch_size, number of indices (None: a permutation of all rows), y_1d)
    "book-1000x2-batch10": (1000, 2, 1, 10, None, True),
    "short-last-batch": (103, 5, 3, 10, None, False),
    "one-batch": (9, 4, 2, 50, None, False),
    "batch-of-one": (12, 3, 1, 1, None, False),
    "rows-repeat-and-miss": (40, 6, 2, 7, 95, False),
    "multi-chunk-batches": (9000, 64, 4, 4000, None, False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hyper", [
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    MOMENTUM,
    dict(momentum=0.5, dampening=0.0, nesterov=True, weight_decay=0.0, maximize=True),
], ids=["plain", "momentum", "nesterov-maximize"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", EPOCH_CASES)
def test_epoch_equals_loop_of_steps_bitwise(case, bias, hyper, dtype, device, generator):
    """Two epochs with one state dict (the first-step rule applies once) against the loop."""
    n, d, k, batch_size, m, y_1d = EPOCH_CASES[case]
    X, y, weight, b = make_problem(n, d, k, generator=generator, dtype=dtype, device=device, y_1d=y_1d, bias=bias)
    loop_weight, loop_bias = weight.clone(), (b.clone() if bias else None)
    state, loop_state = {}, {}
    for _ in range(2):
        if m is None:
            indices = torch.randperm(n, generator=generator)
        else:
            indices = torch.randint(0, n, (m,), generator=generator)
        indices = indices.to(device)
        losses = fused_linreg.linreg_epoch_(X, y, weight, b, lr=LR, batch_size=batch_size, indices=indices,
                                            state=state, **hyper)
        expected = step_loop(X, y, loop_weight, loop_bias, indices, batch_size, loop_state, hyper)
        assert losses.shape == (math.ceil(len(indices) / batch_size),)
        assert_bitwise_equal(losses, expected, "losses")
        assert_bitwise_equal(weight, loop_weight, "weight")
        if bias:
            assert_bitwise_equal(b, loop_bias, "bias")
        assert set(state) == set(loop_state)
        for name in state:
            assert_bitwise_equal(state[name], loop_state[name], name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_epoch_over_x_larger_than_the_caches_equals_loop_of_steps_bitwise(dtype, threads, device, generator):
    """X of 9.6 and 10.8 MB: the CPU kernel copies each block of minibatches' rows out of X
    (every thread, while the steps run on the previous block) instead of reading them in
    place. The bits must not change: permuted and repeating indices, a short last block and
    a short last minibatch, momentum across blocks, one thread or two."""
    n = 40_000 if dtype == torch.float64 else 90_000
    X, y, weight, bias = make_problem(n, 30, 2, generator=generator, dtype=dtype, device=device)
    loop_weight, loop_bias = weight.clone(), bias.clone()
    state, loop_state = {}, {}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for indices in (torch.randperm(n, generator=generator), torch.randint(0, n, (n // 2 + 7,), generator=generator)):
            indices = indices.to(device)
            losses = fused_linreg.linreg_epoch_(X, y, weight, bias, lr=LR, batch_size=50, indices=indices,
                                                state=state, **MOMENTUM)
            expected = step_loop(X, y, loop_weight, loop_bias, indices, 50, loop_state, MOMENTUM)
            assert_bitwise_equal(losses, expected, "losses")
            assert_bitwise_equal(weight, loop_weight, "weight")
            assert_bitwise_equal(bias, loop_bias, "bias")
            for name in loop_state:
                assert_bitwise_equal(state[name], loop_state[name], name)
    finally:
        torch.set_num_threads(previous_threads)


def test_epoch_default_indices_are_a_permutation_drawn_from_the_generator(device, generator):
    X, y, weight, bias = make_problem(57, 3, 2, generator=generator, device=device)
    explicit_weight, explicit_bias = weight.clone(), bias.clone()
    losses = fused_linreg.linreg_epoch_(X, y, weight, bias, lr=LR, batch_size=8,
                                        generator=torch.Generator().manual_seed(5))
    indices = torch.randperm(57, generator=torch.Generator().manual_seed(5)).to(device)
    expected = fused_linreg.linreg_epoch_(X, y, explicit_weight, explicit_bias, lr=LR, batch_size=8, indices=indices)
    assert_bitwise_equal(losses, expected, "losses")
    assert_bitwise_equal(weight, explicit_weight, "weight")


# --- opcheck ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_linreg_grad(bias, requires_grad, device, generator):
    """linreg_grad is not differentiable (its backward raises by design), so with inputs that
    require grad the test that differentiates it is left out."""
    X, y, weight, b = make_problem(37, 5, 3, generator=generator, device=device, bias=bias)
    for t in (X, weight, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    tests = [t for t in OPCHECK_TESTS if not (requires_grad and t == "test_aot_dispatch_dynamic")]
    torch.library.opcheck(ops.linreg_grad.default, (X, y, weight, b), test_utils=tests)


def update_op_args(momentum, bias, device, generator):
    X, y, weight, b = make_problem(37, 5, 3, generator=generator, device=device, bias=bias)
    buffers = [torch.zeros_like(t) if momentum and t is not None else None for t in (weight, b)]
    kwargs = dict(lr=LR, weight_decay=0.01, momentum=momentum, dampening=0.1)
    return X, y, weight, b, buffers, kwargs


@pytest.mark.parametrize("is_first_step", [True, False], ids=["first_step", "later_step"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_linreg_step(bias, momentum, is_first_step, device, generator):
    X, y, weight, b, buffers, kwargs = update_op_args(momentum, bias, device, generator)
    torch.library.opcheck(ops.linreg_step_.default, (X, y, weight, b, *buffers, is_first_step), kwargs)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_linreg_epoch(bias, momentum, device, generator):
    X, y, weight, b, buffers, kwargs = update_op_args(momentum, bias, device, generator)
    indices = torch.randperm(37, generator=generator).to(device)
    torch.library.opcheck(ops.linreg_epoch_.default, (X, y, indices, 10, weight, b, *buffers, True), kwargs)

# --- non-contiguous tensors ------------------------------------------------------------------------

def train_from_layouts(X_step, y, X_epoch, weight, bias, buffer_layout):
    """A momentum step, an epoch (its buffers first given `buffer_layout`) and a gradient."""
    state = {}
    results = [fused_linreg.linreg_step_(X_step, y, weight, bias, lr=LR, state=state, **MOMENTUM)]
    state = {name: buffer_layout(buf) for name, buf in state.items()}
    results.append(fused_linreg.linreg_epoch_(X_epoch, y, weight, bias, lr=LR, batch_size=32, state=state,
                                              indices=torch.arange(X_step.shape[0], device=X_step.device),
                                              **MOMENTUM))
    results += [t for t in fused_linreg.linreg_grad(X_epoch, y, weight, bias) if t is not None]
    updated = [t for t in (weight, bias, *state.values()) if t is not None]
    return results, updated


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_non_contiguous_tensors_give_the_contiguous_results(bias, device, generator):
    """Strided X, y, weight, bias and buffers (NaN in the gaps) and a column-major X give the
    contiguous results bitwise, and parameters and buffers are updated through their strides."""
    X, y, weight, b = make_problem(300, 9, 3, generator=generator, device=device, bias=bias)
    strided_params = [strided_copy(weight), strided_copy(b) if bias else None]
    expected, expected_updated = train_from_layouts(X, y, X, weight, b, lambda t: t)
    column_major = X.T.contiguous().T
    results, updated = train_from_layouts(strided_copy(X), strided_copy(y), column_major, *strided_params,
                                          strided_copy)
    assert_bitwise_equal(results, expected)
    assert len(updated) == len(expected_updated)
    for got, want in zip(updated, expected_updated):
        assert not got.is_contiguous()
        assert_bitwise_equal(got, want, "parameter or buffer")


def test_arguments_that_are_only_read_may_share_memory(device, generator):
    """Only the tensors written in place must not overlap (the aliasing cases in
    bad_input_cases_linreg.py): y may be a view of X's memory."""
    X, _, weight, bias = make_problem(12, 3, 1, generator=generator, device=device)
    y = X.view(-1)[:12]  # X's first 12 elements, read as the targets
    expected_weight, expected_bias = weight.clone(), bias.clone()
    expected = fused_linreg.linreg_step_(X.clone(), y.clone(), expected_weight, expected_bias, lr=LR)
    assert_bitwise_equal(fused_linreg.linreg_step_(X, y, weight, bias, lr=LR), expected, "loss")
    assert_bitwise_equal(weight, expected_weight, "weight")
    assert_bitwise_equal(bias, expected_bias, "bias")
