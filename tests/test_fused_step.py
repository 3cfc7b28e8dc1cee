"""The fused training step of linear regression: linreg_step_, linreg_grad and linreg_epoch_
against the composed eager reference (autograd of the book's loss + torch.optim.SGD), the
epoch against the loop of steps (bitwise), determinism, opcheck, bad input, and data-parallel
training with torch.distributed."""

import math
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fused_linreg
from fused_linreg.fused_step import BIAS_BUFFER, WEIGHT_BUFFER

from conftest import (HALF_DTYPES, assert_close_to_reference, assert_unchanged, opcheck_backward_op,
                      randn, sgd_hyperparameters, snapshot, strided_copy)

ops = torch.ops.fused_linreg
LR = 0.1
MOMENTUM = dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=False)


def make_problem(n, d, k, *, generator, dtype=torch.float32, device="cpu", y_1d=False, bias=True):
    """X (n, d) with rows of norm about 1 (so LR is a stable step size for any d), y (n,) or
    (n, k), weight (k, d) and bias (k,) or None."""
    X = randn((n, d), generator=generator, dtype=torch.float64) / math.sqrt(d)
    y = randn((n,) if y_1d else (n, k), generator=generator, dtype=torch.float64)
    weight = randn((k, d), generator=generator, dtype=torch.float64)
    b = randn((k,), generator=generator, dtype=torch.float64) if bias else None
    return [t.to(device=device, dtype=dtype) if t is not None else None for t in (X, y, weight, b)]


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
    (5000, 300, 1, True), (301, 85, 4, False), (301, 85, 7, False),
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


def assert_bitwise_equal(got, expected, what):
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    assert torch.equal(got, expected), f"{what} differs: max |diff| {(got.double() - expected.double()).abs().max()}"


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


def test_epoch_default_indices_are_a_permutation_drawn_from_the_generator(device, generator):
    X, y, weight, bias = make_problem(57, 3, 2, generator=generator, device=device)
    explicit_weight, explicit_bias = weight.clone(), bias.clone()
    losses = fused_linreg.linreg_epoch_(X, y, weight, bias, lr=LR, batch_size=8,
                                        generator=torch.Generator().manual_seed(5))
    indices = torch.randperm(57, generator=torch.Generator().manual_seed(5)).to(device)
    expected = fused_linreg.linreg_epoch_(X, y, explicit_weight, explicit_bias, lr=LR, batch_size=8, indices=indices)
    assert_bitwise_equal(losses, expected, "losses")
    assert_bitwise_equal(weight, explicit_weight, "weight")


# --- determinism ---------------------------------------------------------------------------------

def deterministic_workload(device, generator):
    """The step, the gradient and an epoch on n=20000, d=64, k=4 (many parallel chunks)."""
    X, y, weight, bias = make_problem(20000, 64, 4, generator=generator, device=device)
    indices = torch.randperm(20000, generator=generator).to(device)

    def run():
        results = list(fused_linreg.linreg_grad(X, y, weight, bias))
        params, state = [weight.clone(), bias.clone()], {}
        results.append(fused_linreg.linreg_step_(X, y, *params, lr=LR, state=state, **MOMENTUM))
        results.append(fused_linreg.linreg_epoch_(X, y, *params, lr=LR, batch_size=6000, indices=indices,
                                                  state=state, **MOMENTUM))
        return results + params + [state[WEIGHT_BUFFER], state[BIAS_BUFFER]]

    return run


def test_one_and_two_threads_give_identical_bits(num_threads, generator):
    run = deterministic_workload("cpu", generator)
    num_threads(1)
    single = run()
    num_threads(2)
    double = run()
    for i, (got, expected) in enumerate(zip(double, single)):
        assert_bitwise_equal(got, expected, f"result {i}")


def test_run_to_run_identical_bits(device, generator):
    run = deterministic_workload(device, generator)
    first, second = run(), run()
    for i, (got, expected) in enumerate(zip(second, first)):
        assert_bitwise_equal(got, expected, f"result {i}")


# --- torch.compile -----------------------------------------------------------------------------------

@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_training_equals_eager(fresh_dynamo, device, generator):
    """fullgraph compile (fake kernels, functionalized in-place ops, the state dict written
    on the first call and read on the second) gives the eager results bitwise."""
    X, y, weight, bias = make_problem(100, 4, 2, generator=generator, device=device)
    indices = torch.randperm(100, generator=generator).to(device)

    def train(weight, bias, state):
        step_loss = fused_linreg.linreg_step_(X, y, weight, bias, lr=LR, state=state, **MOMENTUM)
        epoch_losses = fused_linreg.linreg_epoch_(X, y, weight, bias, lr=LR, batch_size=7, indices=indices,
                                                  state=state, **MOMENTUM)
        return [step_loss, epoch_losses, *fused_linreg.linreg_grad(X, y, weight, bias)]

    compiled = torch.compile(train, backend="aot_eager", fullgraph=True)
    eager_params, eager_state, state = [weight.clone(), bias.clone()], {}, {}
    for _ in range(2):
        results = compiled(weight, bias, state) + [weight, bias]
        expected = train(*eager_params, eager_state) + eager_params
        for i, (got, want) in enumerate(zip(results, expected)):
            assert_bitwise_equal(got, want, f"result {i}")
        assert set(state) == set(eager_state) == {WEIGHT_BUFFER, BIAS_BUFFER}
        for name in state:
            assert_bitwise_equal(state[name], eager_state[name], name)


# --- opcheck ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_linreg_grad(bias, requires_grad, device, generator):
    X, y, weight, b = make_problem(37, 5, 3, generator=generator, device=device, bias=bias)
    for t in (X, weight, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    opcheck_backward_op(ops.linreg_grad.default, (X, y, weight, b), requires_grad=requires_grad)


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


# --- bad input: a clear error, and nothing changed -----------------------------------------------

BAD_CASES = []


def bad_case(raises, match):
    """Registers `build(device, generator) -> (call, tracked)`: `call()` must raise `raises`
    matching `match`, leaving every tensor in `tracked` (state dicts included) untouched."""
    def register(build):
        BAD_CASES.append(pytest.param(build, raises, match, id=build.__name__))
        return build
    return register


def step_call(X, y, weight, bias, state=None, **kwargs):
    options = dict(lr=LR) | kwargs
    return (lambda: fused_linreg.linreg_step_(X, y, weight, bias, state=state, **options),
            [X, y, weight, bias, state])


def epoch_call(X, y, weight, bias, state=None, **kwargs):
    options = dict(lr=LR, batch_size=4) | kwargs
    return (lambda: fused_linreg.linreg_epoch_(X, y, weight, bias, state=state, **options),
            [X, y, weight, bias, state, options.get("indices")])


def trained_state(X, y, weight, bias):
    """A state dict that holds buffers already (a bad call must leave them untouched)."""
    state = {}
    fused_linreg.linreg_step_(X, y, weight.clone(), bias.clone(), lr=LR, state=state, **MOMENTUM)
    return state


def problem(device, g):
    return make_problem(12, 3, 2, generator=g, device=device)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: y must have shape \(12, 2\)")
def step_y_too_many_outputs(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, torch.cat([y, y], dim=1), weight, bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: y must have shape \(12, 2\) to match")
def step_y_1d_for_two_outputs(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y[:, 0].contiguous(), weight, bias, state=trained_state(X, y, weight, bias), **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: y must have shape")
def epoch_y_too_few_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y[:11], weight, bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: weight must have shape \(k, 3\)")
def step_weight_wrong_features(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, torch.cat([weight, weight], dim=1), bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_grad: weight must have shape \(k, 3\)")
def grad_weight_1d(device, g):
    X, y, weight, bias = problem(device, g)
    w = weight[0].contiguous()
    return lambda: fused_linreg.linreg_grad(X, y, w, bias), [X, y, w, bias]


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: bias must have shape \(2,\)")
def step_bias_wrong_length(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, torch.cat([bias, bias]), state={}, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: y has dtype Double but X has dtype Float")
def step_y_dtype_mix(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y.double(), weight, bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: weight has dtype Half but X has dtype Float")
def epoch_weight_dtype_mix(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight.half(), bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_grad: bias has dtype BFloat16 but X has dtype Float")
def grad_bias_dtype_mix(device, g):
    X, y, weight, bias = problem(device, g)
    b = bias.bfloat16()
    return lambda: fused_linreg.linreg_grad(X, y, weight, b), [X, y, weight, b]


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: X must be float64, float32, float16 or bfloat16")
def step_integer_X(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X.round().long(), y, weight, bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: X must be 2-D")
def step_X_3d(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X.unsqueeze(0), y, weight, bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: X has no rows")
def step_no_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X[:0], y[:0], weight, bias, state={}, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_grad: X has no rows")
def grad_no_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return lambda: fused_linreg.linreg_grad(X[:0], y[:0], weight, bias), [weight, bias]


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices is empty")
def epoch_no_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X[:0], y[:0], weight, bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: batch_size must be >= 1, got 0")
def epoch_batch_size_zero(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, batch_size=0)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices\[9\] = 12 is out of range for X with 12 rows")
def epoch_index_out_of_range(device, g):
    X, y, weight, bias = problem(device, g)
    indices = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 12], device=device)
    return epoch_call(X, y, weight, bias, state=trained_state(X, y, weight, bias), indices=indices, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices\[5\] = -1 is out of range")
def epoch_negative_index(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, indices=torch.tensor([0, 1, 2, 3, 4, -1], device=device))


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices must be a 1-D int64 tensor, got Int")
def epoch_int32_indices(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, indices=torch.arange(12, dtype=torch.int32, device=device))


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices must be a 1-D int64 tensor")
def epoch_2d_indices(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, indices=torch.arange(12, device=device).reshape(3, 4))


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: lr must be finite and >= 0, got -0\.1")
def step_negative_lr(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, state={}, lr=-0.1, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: lr must be finite and >= 0, got nan")
def epoch_nan_lr(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, lr=float("nan"))


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: weight_decay must be finite and >= 0")
def step_negative_weight_decay(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, weight_decay=-0.01)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: momentum must be finite and >= 0, got -0\.9")
def step_negative_momentum(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, state={}, momentum=-0.9)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: nesterov requires momentum > 0 and dampening == 0")
def step_nesterov_without_momentum(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, nesterov=True)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: nesterov requires momentum > 0 and dampening == 0")
def epoch_nesterov_with_dampening(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, state={}, momentum=0.9, dampening=0.1, nesterov=True)


@bad_case(ValueError, r"momentum != 0 needs a state dict")
def step_momentum_without_state(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, momentum=0.9)


@bad_case(ValueError, r"momentum != 0 needs a state dict")
def epoch_momentum_without_state(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, momentum=0.9)


# Aliasing: weight, bias and (with momentum) the buffers are written in place, X, y and
# indices read while they are (the epoch reads later minibatches after earlier updates).
# A written tensor that shares memory with another argument would be silently corrupted.

@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: bias shares memory with weight")
def step_bias_overlaps_weight(device, g):
    X, y, weight, bias = problem(device, g)
    base = torch.cat([weight.flatten(), bias])
    return step_call(X, y, base[:6].view(2, 3), base[5:7])  # element 5 is in both


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: weight shares memory with X")
def step_weight_is_rows_of_X(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, X[:2], bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: bias shares memory with y")
def epoch_bias_is_a_row_of_y(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, y[3])


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: weight_momentum shares memory with weight")
def step_weight_buffer_is_weight(device, g):
    X, y, weight, bias = problem(device, g)
    state = {WEIGHT_BUFFER: weight, BIAS_BUFFER: bias.clone()}
    return step_call(X, y, weight, bias, state=state, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: bias_momentum shares memory with weight_momentum")
def step_buffers_overlap(device, g):
    X, y, weight, bias = problem(device, g)
    state = trained_state(X, y, weight, bias)
    state[BIAS_BUFFER] = state[WEIGHT_BUFFER].view(-1)[4:6]
    return step_call(X, y, weight, bias, state=state, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: bias_momentum shares memory with X")
def epoch_bias_buffer_is_in_X(device, g):
    X, y, weight, bias = problem(device, g)
    state = trained_state(X, y, weight, bias)
    state[BIAS_BUFFER] = X[5, :2]
    return epoch_call(X, y, weight, bias, state=state, **MOMENTUM)


@bad_case(RuntimeError, r"fused_linreg\.linreg_epoch_: weight shares memory with indices")
def epoch_indices_alias_weight(device, g):
    """Row numbers read through the bits of the weights would change under the update:
    the kernel would read rows that were never range-checked."""
    X, y, _, bias = problem(device, g)
    rows = torch.tensor([3, 1, 4, 1, 5, 9], device=device)
    # The bits of rows[3:], read as float32, are the weights (tiny ones): rows[4:] would
    # change after the first minibatch of 4 rows.
    weight = rows.view(torch.float32)[6:].view(2, 3)
    return epoch_call(X, y, weight, bias, indices=rows)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: weight has elements that share memory")
def step_expanded_weight(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight[:1].expand(2, 3), bias)


@bad_case(RuntimeError, r"fused_linreg\.linreg_step_: weight_momentum has elements that share memory")
def step_expanded_weight_buffer(device, g):
    X, y, weight, bias = problem(device, g)
    state = trained_state(X, y, weight, bias)
    state[WEIGHT_BUFFER] = state[WEIGHT_BUFFER][:1].expand(2, 3)
    return step_call(X, y, weight, bias, state=state, **MOMENTUM)


@pytest.mark.parametrize(("build", "raises", "match"), BAD_CASES)
def test_bad_input_raises_and_changes_nothing(build, raises, match, device, generator):
    call, tracked = build(device, generator)
    before = snapshot(tracked)
    with pytest.raises(raises, match=match):
        call()
    assert_unchanged(tracked, before)


@pytest.mark.cuda
def test_indices_on_another_device_raise(generator):
    X, y, weight, bias = problem("cuda", generator)
    call, tracked = epoch_call(X, y, weight, bias, indices=torch.arange(12))
    before = snapshot(tracked)
    with pytest.raises(RuntimeError, match=r"fused_linreg\.linreg_epoch_: indices is on cpu but X is on cuda"):
        call()
    assert_unchanged(tracked, before)


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
    for i, (got, want) in enumerate(zip(results, expected)):
        assert_bitwise_equal(got, want, f"result {i}")
    assert len(updated) == len(expected_updated)
    for got, want in zip(updated, expected_updated):
        assert not got.is_contiguous()
        assert_bitwise_equal(got, want, "parameter or buffer")


def test_arguments_that_are_only_read_may_share_memory(device, generator):
    """Only the tensors written in place must not overlap (the aliasing cases of the bad input
    above): y may be a view of X's memory."""
    X, _, weight, bias = make_problem(12, 3, 1, generator=generator, device=device)
    y = X.view(-1)[:12]  # X's first 12 elements, read as the targets
    expected_weight, expected_bias = weight.clone(), bias.clone()
    expected = fused_linreg.linreg_step_(X.clone(), y.clone(), expected_weight, expected_bias, lr=LR)
    assert_bitwise_equal(fused_linreg.linreg_step_(X, y, weight, bias, lr=LR), expected, "loss")
    assert_bitwise_equal(weight, expected_weight, "weight")
    assert_bitwise_equal(bias, expected_bias, "bias")


# --- data-parallel training with torch.distributed -------------------------------------------------

DDP_ROWS, DDP_FEATURES, DDP_OUTPUTS, DDP_BATCH, DDP_STEPS = 600, 5, 2, 20, 30
DDP_SHARDS = (13, 7)  # rows of every minibatch on rank 0 and rank 1: unequal, so the average is weighted
DDP_HYPER = dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01)


def ddp_problem():
    """Identical on every process: seeded data, parameters and minibatch order."""
    generator = torch.Generator().manual_seed(7)
    X, y, weight, bias = make_problem(DDP_ROWS, DDP_FEATURES, DDP_OUTPUTS, generator=generator)
    order = torch.randperm(DDP_ROWS, generator=generator)
    return X, y, weight, bias, order.reshape(-1, DDP_BATCH)[:DDP_STEPS]


def data_parallel_worker(rank, world_size, init_file, out_file):
    """One rank: the gradient of its shard of each minibatch, averaged over the ranks with
    weights shard_rows / batch_rows (all_reduce SUM), then the same sgd_ on every rank."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        X, y, weight, bias, batches = ddp_problem()
        begin = sum(DDP_SHARDS[:rank])
        buffers = [None, None]
        for batch in batches:
            rows = batch[begin:begin + DDP_SHARDS[rank]]
            _, grad_weight, grad_bias = fused_linreg.linreg_grad(X[rows], y[rows], weight, bias)
            grads = [g * (len(rows) / len(batch)) for g in (grad_weight, grad_bias)]
            for g in grads:
                dist.all_reduce(g)
            fused_linreg.sgd_([weight, bias], grads, buffers, **DDP_HYPER)
        if rank == 0:
            torch.save({"weight": weight, "bias": bias}, out_file)
    finally:
        dist.destroy_process_group()


def test_data_parallel_training_equals_single_process_training(tmp_path):
    context = mp.start_processes(data_parallel_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out.pt")),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, "the data-parallel processes did not finish in 120 s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    parallel = torch.load(tmp_path / "out.pt")

    X, y, weight, bias, batches = ddp_problem()
    state = {}
    for batch in batches:
        fused_linreg.linreg_step_(X[batch], y[batch], weight, bias, state=state, **DDP_HYPER)
    assert not torch.equal(weight, ddp_problem()[2]), "training moved the weights"
    torch.testing.assert_close(parallel["weight"], weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parallel["bias"], bias, rtol=1e-5, atol=1e-5)
