"""Reductions run in a fixed order: results are bitwise identical run to run and, on the
CPU, for 1 and 2 threads. The shapes are large enough to be split into many chunks."""

import pytest
import torch

import fused_linreg
from fused_linreg.fused_step import BIAS_BUFFER, WEIGHT_BUFFER

from conftest import LR, MOMENTUM, assert_bitwise_equal, make_problem, randn

ROWS, FEATURES = 8192, 64


def linear_forward_backward(x, weight, bias, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = fused_linreg.linear(*leaves)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


def losses(input, target):
    return [loss(input, target, reduction=reduction)
            for loss in (fused_linreg.mse_loss, fused_linreg.squared_loss) for reduction in ("sum", "mean")]


def loss_gradients(input, target):
    grads = []
    for loss in (fused_linreg.mse_loss, fused_linreg.squared_loss):
        leaf = input.detach().clone().requires_grad_()
        loss(leaf, target, reduction="mean").backward()
        grads.append(leaf.grad)
    return grads


def sgd_step(params, grads, buffers):
    params, buffers = [p.clone() for p in params], [b.clone() for b in buffers]
    fused_linreg.sgd_(params, [g.clone() for g in grads], buffers, lr=0.1, momentum=0.9, dampening=0.1,
                      weight_decay=0.01, grad_scale=torch.tensor(3.0, device=params[0].device))
    return params + buffers


def linreg_training(X, y, weight, bias, indices):
    """The gradient, then a momentum step and an epoch (batches of 6000 rows) on copies of the
    parameters: every reduction of the fused linear-regression ops."""
    results = list(fused_linreg.linreg_grad(X, y, weight, bias))
    params, state = [weight.clone(), bias.clone()], {}
    results.append(fused_linreg.linreg_step_(X, y, *params, lr=LR, state=state, **MOMENTUM))
    results.append(fused_linreg.linreg_epoch_(X, y, *params, lr=LR, batch_size=6000, indices=indices, state=state,
                                              **MOMENTUM))
    return results + params + [state[WEIGHT_BUFFER], state[BIAS_BUFFER]]


def workloads(device, generator):
    """name -> (function, args): every reduction of every op, on multi-chunk shapes."""
    def t(*shape, dtype=torch.float32):
        return randn(shape, generator=generator, dtype=dtype, device=device)

    cases = {}
    for out_features in (1, 4, 16, 64):
        cases[f"linear_out{out_features}"] = (linear_forward_backward, (
            t(ROWS, FEATURES), t(out_features, FEATURES), t(out_features), t(ROWS, out_features)))
    cases["linear_bf16"] = (linear_forward_backward, (
        t(ROWS, FEATURES, dtype=torch.bfloat16), t(4, FEATURES, dtype=torch.bfloat16), t(4, dtype=torch.bfloat16),
        t(ROWS, 4, dtype=torch.bfloat16)))
    cases["linear_3d"] = (linear_forward_backward, (t(16, 512, FEATURES), t(2, FEATURES), t(2), t(16, 512, 2)))
    cases["losses"] = (losses, (t(ROWS, FEATURES), t(ROWS, FEATURES)))
    cases["losses_fp16"] = (losses, (t(ROWS, 4, dtype=torch.float16), t(ROWS, 4, dtype=torch.float16)))
    cases["loss_gradients"] = (loss_gradients, (t(ROWS, FEATURES), t(ROWS, FEATURES)))
    cases["sgd"] = (sgd_step, ([t(ROWS, FEATURES), t(ROWS)], [t(ROWS, FEATURES), t(ROWS)],
                               [t(ROWS, FEATURES), t(ROWS)]))
    # n = 20000 rows (many parallel chunks), d = 64, k = 4.
    cases["linreg"] = (linreg_training, (*make_problem(20000, 64, 4, generator=generator, device=device),
                                         torch.randperm(20000, generator=generator).to(device)))
    return cases


WORKLOADS = list(workloads("cpu", torch.Generator()))


@pytest.mark.parametrize("name", WORKLOADS)
def test_one_and_two_threads_give_identical_bits(name, num_threads, generator):
    function, args = workloads("cpu", generator)[name]
    num_threads(1)
    single = function(*args)
    num_threads(2)
    double = function(*args)
    assert_bitwise_equal(double, single)


@pytest.mark.parametrize("name", WORKLOADS)
def test_run_to_run_identical_bits(name, device, generator):
    function, args = workloads(device, generator)[name]
    first = function(*args)
    for _ in range(2):
        assert_bitwise_equal(function(*args), first)
