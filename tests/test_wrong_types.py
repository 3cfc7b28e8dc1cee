"""Wrong Python types get our own error, naming the function and the argument, before anything
is written: never a binding's dump, an AttributeError or a TypeError from inside the library."""

import numpy as np
import pytest
import torch

import fused_linreg
from fused_linreg import d2l

from conftest import assert_unchanged, randn, snapshot

CASES = []


def case(raises, match):
    """Registers `build(generator) -> (call, tensors)`: `call()` raises `raises` matching `match`
    and leaves `tensors` untouched."""
    def register(build):
        CASES.append(pytest.param(build, raises, match, id=build.__name__))
        return build
    return register


def linreg_data(g, n=6, d=3):
    X, y = randn((n, d), generator=g), randn((n,), generator=g)
    return X, y, randn((1, d), generator=g), randn((1,), generator=g)


@case(TypeError, r"^fused_linreg\.linear: x must be a torch\.Tensor, got numpy\.ndarray$")
def linear_numpy_x(g):
    w, b = randn((2, 3), generator=g), randn((2,), generator=g)
    return lambda: fused_linreg.linear(np.ones((4, 3), dtype=np.float32), w, b), [w, b]


@case(TypeError, r"^fused_linreg\.linear: bias must be a torch\.Tensor or None, got str$")
def linear_bias_str(g):
    x, w = randn((4, 3), generator=g), randn((2, 3), generator=g)
    return lambda: fused_linreg.linear(x, w, "0"), [x, w]


@case(TypeError, r"^fused_linreg\.linear: x must be a torch\.Tensor, got list$")
def nn_linear_list_input(g):
    model = fused_linreg.nn.Linear(3, 1)
    return lambda: model([[1.0, 2.0, 3.0]]), [model.weight, model.bias]


@case(TypeError, r"^fused_linreg\.mse_loss: input must be a torch\.Tensor, got numpy\.ndarray$")
def mse_loss_numpy(g):
    return lambda: fused_linreg.mse_loss(np.ones(3), np.zeros(3)), []


@case(TypeError, r"^fused_linreg\.squared_loss: target must be a torch\.Tensor, got list$")
def squared_loss_list_target(g):
    y_hat = randn((3, 1), generator=g)
    return lambda: fused_linreg.squared_loss(y_hat, [1.0, 2.0, 3.0]), [y_hat]


@case(TypeError, r"^fused_linreg\.mse_loss: reduction must be a str, got int$")
def mse_loss_reduction_int(g):
    a, b = randn((3,), generator=g), randn((3,), generator=g)
    return lambda: fused_linreg.mse_loss(a, b, reduction=1), [a, b]


@case(TypeError, r"^fused_linreg\.sgd_: grads\[0\] is None \(params\[0\] has no gradient: call backward\(\) first\)$")
def sgd_missing_grad(g):
    params = [randn((3,), generator=g), randn((2,), generator=g)]
    return lambda: fused_linreg.sgd_(params, [None, None], [None, None], lr=0.1), [params]


@case(TypeError, r"^fused_linreg\.sgd_: lr must be a number, got str$")
def sgd_lr_str(g):
    params, grads = [randn((3,), generator=g)], [randn((3,), generator=g)]
    return lambda: fused_linreg.sgd_(params, grads, [None], lr="0.1", momentum=0.9), [params, grads]


@case(TypeError, r"^fused_linreg\.sgd_: nesterov must be a bool, got str$")
def sgd_nesterov_str(g):
    params, grads = [randn((3,), generator=g)], [randn((3,), generator=g)]
    return lambda: fused_linreg.sgd_(params, grads, [None], lr=0.1, momentum=0.9, nesterov="yes"), [params, grads]


@case(TypeError, r"^fused_linreg\.sgd_: params\[1\] must be a torch\.Tensor, got numpy\.ndarray$")
def sgd_numpy_param(g):
    params, grads = [randn((3,), generator=g), np.ones(3)], [randn((3,), generator=g), randn((3,), generator=g)]
    return lambda: fused_linreg.sgd_(params, grads, [], lr=0.1), [params[0], grads]


@case(TypeError, r"^fused_linreg\.sgd_: momentum_buffers must be a list .*got tuple$")
def sgd_buffers_tuple(g):
    params, grads = [randn((3,), generator=g)], [randn((3,), generator=g)]
    return lambda: fused_linreg.sgd_(params, grads, (None,), lr=0.1, momentum=0.9), [params, grads]


@case(TypeError, r"^fused_linreg\.d2l\.sgd: grads\[1\] is None \(params\[1\] has no gradient: call backward\(\) first\)$")
def d2l_sgd_before_backward(g):
    w, b = randn((2, 1), generator=g, requires_grad=True), randn((1,), generator=g, requires_grad=True)
    w.grad = randn((2, 1), generator=g)
    return lambda: d2l.sgd([w, b], 0.03, 10), [w, b, w.grad]


@case(TypeError, r"^fused_linreg\.linreg_step_: X must be a torch\.Tensor, got numpy\.ndarray$")
def linreg_step_numpy_X(g):
    _, y, w, b = linreg_data(g)
    return lambda: fused_linreg.linreg_step_(np.ones((6, 3), dtype=np.float32), y, w, b, lr=0.1), [y, w, b]


@case(TypeError, r"^fused_linreg\.linreg_step_: lr must be a number, got str$")
def linreg_step_lr_str(g):
    X, y, w, b = linreg_data(g)
    return lambda: fused_linreg.linreg_step_(X, y, w, b, lr="0.03"), [X, y, w, b]


@case(TypeError, r"^fused_linreg\.linreg_step_: state must be a dict .*got list$")
def linreg_step_state_list(g):
    X, y, w, b = linreg_data(g)
    return lambda: fused_linreg.linreg_step_(X, y, w, b, lr=0.03, momentum=0.9, state=[]), [X, y, w, b]


@case(TypeError, r"^fused_linreg\.linreg_grad: weight must be a torch\.Tensor, got list$")
def linreg_grad_list_weight(g):
    X, y, _, b = linreg_data(g)
    return lambda: fused_linreg.linreg_grad(X, y, [[1.0, 2.0, 3.0]], b), [X, y, b]


@case(TypeError, r"^fused_linreg\.linreg_epoch_: batch_size must be an int, got float$")
def linreg_epoch_float_batch(g):
    X, y, w, b = linreg_data(g)
    return lambda: fused_linreg.linreg_epoch_(X, y, w, b, lr=0.03, batch_size=2.5), [X, y, w, b]


@pytest.mark.parametrize(("build", "raises", "match"), CASES)
def test_wrong_type_raises_ours_and_changes_nothing(build, raises, match, generator):
    call, tensors = build(generator)
    before = snapshot(tensors)
    with pytest.raises(raises, match=match) as error:
        call()
    assert "Declaration" not in str(error.value) and "Cast error" not in str(error.value)
    assert_unchanged(tensors, before)


def test_sgd_takes_any_iterable_of_tensors(generator):
    """As torch's optimizers do: model.parameters() and generators of grads."""
    model = fused_linreg.nn.Linear(3, 2)
    expected = [p.detach().clone() for p in model.parameters()]
    grads = [randn(p.shape, generator=generator) for p in model.parameters()]
    fused_linreg.sgd_(model.parameters(), (g for g in grads), [], lr=0.1)
    for p, before, g in zip(model.parameters(), expected, grads):
        torch.testing.assert_close(p.detach(), before - 0.1 * g)


def test_late_bias_gets_the_first_step_rule_like_torch_optim(generator):
    """A bias that joins after the weight's first step: torch.optim applies buf = grad to it."""
    X, y = randn((16, 3), generator=generator, dtype=torch.float64), randn((16,), generator=generator,
                                                                           dtype=torch.float64)
    w = randn((1, 3), generator=generator, dtype=torch.float64)
    w_ref, b_ref = w.clone().requires_grad_(), torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64)
    hyper = dict(lr=0.05, momentum=0.9, dampening=0.3)
    reference = torch.optim.SGD([w_ref, b_ref], **hyper)
    state = {}
    for step in range(4):
        loss = 0.5 * ((X @ w_ref.t()).squeeze(1) + b_ref - y).pow(2).mean()
        reference.zero_grad()
        loss.backward()
        if step == 0:
            b_ref.grad = None  # the bias has no gradient yet: torch.optim skips it
            fused_linreg.linreg_step_(X, y, w, None, state=state, **hyper)
        else:
            fused_linreg.linreg_step_(X, y, w, b, state=state, **hyper)
        reference.step()
        torch.testing.assert_close(w, w_ref.detach())
        torch.testing.assert_close(b, b_ref.detach())
    torch.testing.assert_close(state["bias_momentum_buffer"], reference.state[b_ref]["momentum_buffer"])


def test_late_bias_in_an_epoch_matches_steps(generator):
    X, y = randn((12, 3), generator=generator, dtype=torch.float64), randn((12,), generator=generator,
                                                                           dtype=torch.float64)
    w0 = randn((1, 3), generator=generator, dtype=torch.float64)
    results = []
    for by_epoch in (False, True):
        w, b, state = w0.clone(), torch.zeros(1, dtype=torch.float64), {}
        fused_linreg.linreg_step_(X[:4], y[:4], w, None, lr=0.05, momentum=0.9, state=state)
        indices = torch.arange(12)
        if by_epoch:
            losses = fused_linreg.linreg_epoch_(X, y, w, b, lr=0.05, batch_size=4, indices=indices, momentum=0.9,
                                                state=state)
        else:
            losses = torch.stack([fused_linreg.linreg_step_(X[i:i + 4], y[i:i + 4], w, b, lr=0.05, momentum=0.9,
                                                            state=state) for i in range(0, 12, 4)])
        results.append((w, b, losses))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs)


def test_estimator_hyperparameter_given_as_string_raises_at_fit():
    model = fused_linreg.LinearRegression(lr="0.1")  # scikit-learn's contract: __init__ only stores
    with pytest.raises(TypeError, match=r"^fused_linreg\.LinearRegression: lr must be a number, got str$"):
        model.fit(np.ones((4, 2)), np.ones(4))


@pytest.mark.parametrize(("call", "match"), [
    (lambda: d2l.linreg(np.ones((3, 2)), torch.ones(2, 1), torch.zeros(1)), r"d2l\.linreg: X must be a torch\.Tensor"),
    (lambda: d2l.linreg(torch.ones(3, 2), np.ones((2, 1)), torch.zeros(1)), r"d2l\.linreg: w must be a torch\.Tensor"),
    (lambda: d2l.synthetic_data([2, -3.4], 4.2, 10), r"d2l\.synthetic_data: w must be a torch\.Tensor, got list"),
    (lambda: d2l.synthetic_data(torch.ones(2), 4.2, 10.0), r"d2l\.synthetic_data: num_examples must be an int"),
    (lambda: list(d2l.data_iter(10, np.ones((5, 2)), np.ones(5))), r"d2l\.data_iter: features must be a torch\.Tensor"),
], ids=["linreg_X", "linreg_w", "synthetic_w", "synthetic_n", "data_iter"])
def test_d2l_wrong_types(call, match):
    with pytest.raises(TypeError, match=r"^fused_linreg\." + match):
        call()
