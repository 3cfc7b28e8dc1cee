"""Higher-order reverse-mode AD through the fused ops' own autograd (the backward ops are
differentiable): second-order gradients after create_graph=True, gradgradcheck (batched and
forward-over-reverse) of linear, squared_loss, mse_loss and of the four backward ops called
directly, torch.autograd.functional.hessian of a linear model's loss (X^T X per output for the
book's loss) and third-order gradients of linear, against F.linear, F.mse_loss and the book's
squared loss in float64."""

import pytest
import torch
import torch.nn.functional as F

import fused_linreg

from conftest import (BACKWARD_OP_CASES, LINEAR_CASES, LOSS_SHAPES, LOSSES, REDUCTIONS, assert_close_f64,
                      backward_op_case, like, linear_args, loss_args, targets_like)

GRADGRADCHECK = dict(check_batched_grad=True, check_fwd_over_rev=True)


def leaves(tensors):
    """Detached copies that require grad: the reference's own graph leaves."""
    return tuple(t.detach().clone().requires_grad_() for t in tensors)


def grads(outputs, inputs, grad_outputs, create_graph=False):
    """torch.autograd.grad with zeros for inputs that the outputs do not depend on."""
    return torch.autograd.grad(outputs, inputs, grad_outputs, create_graph=create_graph, materialize_grads=True)


def second_order(fn, inputs, *, generator):
    """fn's output(s), their vjp g1 = (d out/d inputs)^T v with create_graph=True, and the second
    backward through g1 with respect to the inputs and to v itself (v requires grad too)."""
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)  # linear_backward_params: two outputs
    v = leaves(like(outs, generator=generator))
    first = grads(outs, inputs, v, create_graph=True)
    second = grads(first, (*inputs, *v), like(first, generator=generator))
    return out, first, second


def assert_second_order_matches(ours, reference, inputs, generator):
    seed = int(torch.randint(2**31, (), generator=generator))  # the same directions for both
    expected = second_order(reference, leaves(inputs), generator=torch.Generator().manual_seed(seed))
    assert_close_f64(second_order(ours, inputs, generator=torch.Generator().manual_seed(seed)), expected)
    assert any(g.abs().sum() > 0 for g in expected[2])  # there are second derivatives to compare


# --- create_graph=True, then a second backward ----------------------------------------------------------

@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_linear_second_order(leading, n_out, bias, device, generator):
    inputs = linear_args(leading, n_out, bias, generator=generator, device=device, requires_grad=True)
    assert_second_order_matches(fused_linreg.linear, F.linear, inputs, generator)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
def test_loss_second_order(loss_name, reduction, shape, device, generator):
    ours, reference = LOSSES[loss_name]
    inputs = loss_args(loss_name, shape, generator=generator, device=device, requires_grad=True)
    assert_second_order_matches(lambda i, t: ours(i, t, reduction), lambda i, t: reference(i, t, reduction),
                                inputs, generator)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_linear_model_gradient_penalty(leading, n_out, bias, loss_name, reduction, device, generator):
    """A gradient penalty: loss.backward() of ||d loss/d params||² built with create_graph=True
    accumulates in every .grad (params, x, y) what the reference's does."""
    x, *params = linear_args(leading, n_out, bias, generator=generator, device=device, requires_grad=True)
    y = targets_like(F.linear(x, *params), loss_name, generator=generator).requires_grad_()
    results = []
    for linear, loss in ((fused_linreg.linear, LOSSES[loss_name][0]), (F.linear, LOSSES[loss_name][1])):
        x_, y_, *params_ = leaves((x, y, *params)) if results else (x, y, *params)
        value = loss(linear(x_, *params_), y_, reduction)
        penalty = sum(g.pow(2).sum() for g in torch.autograd.grad(value, params_, create_graph=True))
        (value + penalty).backward()
        results.append([t.grad for t in (x_, y_, *params_)])
    assert_close_f64(*results)


# --- gradgradcheck: batched (vmap over the double backward) and forward-over-reverse --------------------

@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_linear_gradgradcheck(leading, n_out, bias, device, generator):
    inputs = linear_args(leading, n_out, bias, generator=generator, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(fused_linreg.linear, inputs, **GRADGRADCHECK)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
def test_loss_gradgradcheck(loss_name, reduction, shape, device, generator):
    inputs = loss_args(loss_name, shape, generator=generator, device=device, requires_grad=True)
    ours = LOSSES[loss_name][0]
    # Forward-over-reverse of mse_loss "mean" runs torch's own mse_loss (a tangent is on the
    # inputs), whose check fails for F.mse_loss too ("ZeroTensors are immutable"): left out there.
    checks = dict(GRADGRADCHECK, check_fwd_over_rev=(loss_name, reduction) != ("mse_loss", "mean"))
    assert torch.autograd.gradgradcheck(lambda i, t: ours(i, t, reduction), inputs, **checks)


@pytest.mark.parametrize(("name", "shape", "reduction"), BACKWARD_OP_CASES)
def test_backward_op_gradgradcheck(name, shape, reduction, device, generator):
    """The backward ops called directly through torch.ops.fused_linreg: their own backward and its
    backward, and the second backward equals the reference's."""
    op, inputs, reference = backward_op_case(name, shape, reduction, generator=generator, device=device,
                                             requires_grad=True)
    assert torch.autograd.gradgradcheck(op, inputs, **GRADGRADCHECK)
    assert_second_order_matches(op, reference, inputs, generator)


# --- Hessians --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_hessian_of_linear_model_loss(leading, n_out, bias, loss_name, reduction, device, generator):
    """torch.autograd.functional.hessian with respect to (weight[, bias]) equals the reference's, and
    with respect to weight it is c * X^T X for each output (zero across outputs): c = 1 for the
    book's squared loss, 2 for mse_loss, divided by the output's element count for "mean"."""
    x, *params = linear_args(leading, n_out, bias, generator=generator, device=device)
    y = targets_like(F.linear(x, *params), loss_name, generator=generator)
    (ours, reference), hessian = LOSSES[loss_name], torch.autograd.functional.hessian
    H = hessian(lambda *p: ours(fused_linreg.linear(x, *p), y, reduction), tuple(params))
    assert_close_f64(H, hessian(lambda *p: reference(F.linear(x, *p), y, reduction), tuple(params)))

    X = x.reshape(-1, x.shape[-1])
    c = (1.0 if loss_name == "squared_loss" else 2.0) / (X.shape[0] * n_out if reduction == "mean" else 1)
    expected = c * torch.einsum("jk,ac->jakc", torch.eye(n_out, dtype=x.dtype, device=x.device), X.T @ X)
    assert_close_f64(H[0][0], expected)


# --- Third order ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_linear_third_order(leading, n_out, bias, device, generator):
    """grad of grad of grad of sum(linear(x, weight, bias) ** 3) with respect to every argument
    (nonzero at third order), through the backward ops' own backward."""
    inputs = linear_args(leading, n_out, bias, generator=generator, device=device, requires_grad=True)
    directions = [like(inputs, generator=generator) for _ in range(2)]

    def third_order(linear, inputs):
        first = grads(linear(*inputs).pow(3).sum(), inputs, None, create_graph=True)
        second = grads(first, inputs, directions[0], create_graph=True)
        return first, second, grads(second, inputs, directions[1])

    expected = third_order(F.linear, leaves(inputs))
    assert_close_f64(third_order(fused_linreg.linear, inputs), expected)
    assert all(g.abs().sum() > 0 for g in expected[2])
