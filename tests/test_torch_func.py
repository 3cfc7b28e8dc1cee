"""torch.func transforms of linear, squared_loss, mse_loss (and of the backward ops under vmap),
each equal to the same transform of F.linear, F.mse_loss and the book's squared loss in float64:
grad, vjp, vmap, jacrev, jacfwd, hessian, and vmap(grad(...)) per-sample gradients of a linear
model. The in-place and non-differentiable ops refuse the transforms before writing anything, and
the plain eager call still takes the fused kernels after a transform ran (or raised)."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, jacrev, vjp, vmap

import fused_linreg

from conftest import (BACKWARD_OP_CASES, LINEAR_CASES, LOSS_SHAPES, LOSSES, REDUCTIONS, assert_close_f64,
                      assert_unchanged, backward_op_case, like, linear_args, loss_args, randn, snapshot,
                      targets_like)

BATCH = 4
SCALAR_REDUCTIONS = ["sum", "mean"]


def model_losses(loss_name, reduction):
    """loss(params, x, y) = loss(linear(x, *params), y) for params (weight,) or (weight, bias):
    ours (fused_linreg.linear and loss) and the reference (F.linear and the reference loss)."""
    (ours, reference), fns = LOSSES[loss_name], []
    for linear, loss in ((fused_linreg.linear, ours), (F.linear, reference)):
        fns.append(lambda params, x, y, linear=linear, loss=loss: loss(linear(x, *params), y, reduction))
    return fns


def model_inputs(leading, n_out, bias, loss_name, *, generator, device):
    """(params, x, y) of model_losses: y shaped like the model's output (flattened for squared_loss)."""
    x, *params = linear_args(leading, n_out, bias, generator=generator, device=device)
    y = targets_like(F.linear(x, *params), loss_name, generator=generator)
    return tuple(params), x, y


# --- grad and vjp -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", SCALAR_REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_grad_of_linear_model_loss(leading, n_out, bias, loss_name, reduction, device, generator):
    """grad with respect to the parameters, x and y (and the loss, with has_aux) equal the reference's."""
    ours, reference = model_losses(loss_name, reduction)
    inputs = model_inputs(leading, n_out, bias, loss_name, generator=generator, device=device)

    def with_value(fn):
        return grad(lambda *a: (fn(*a), fn(*a)), argnums=(0, 1, 2), has_aux=True)

    assert_close_f64(with_value(ours)(*inputs), with_value(reference)(*inputs))


@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_vjp_of_linear(leading, n_out, bias, device, generator):
    """The output and the vjp of a random cotangent with respect to every argument equal F.linear's."""
    primals = linear_args(leading, n_out, bias, generator=generator, device=device)
    out, pullback = vjp(fused_linreg.linear, *primals)
    ref_out, ref_pullback = vjp(F.linear, *primals)
    (cotangent,) = like([ref_out], generator=generator)
    assert_close_f64((out, pullback(cotangent)), (ref_out, ref_pullback(cotangent)))


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
def test_vjp_of_loss(loss_name, reduction, shape, device, generator):
    """The loss and its vjp with respect to input and target equal the reference's."""
    ours, reference = LOSSES[loss_name]
    primals = loss_args(loss_name, shape, generator=generator, device=device)
    out, pullback = vjp(lambda i, t: ours(i, t, reduction), *primals)
    ref_out, ref_pullback = vjp(lambda i, t: reference(i, t, reduction), *primals)
    (cotangent,) = like([ref_out], generator=generator)
    assert_close_f64((out, pullback(cotangent)), (ref_out, ref_pullback(cotangent)))


# --- vmap of the forward ops (and of the backward ops) -----------------------------------------------

def batched(tensors, mapped, *, generator):
    """in_dims and arguments for vmap: the arguments numbered in `mapped` get a leading batch of BATCH."""
    in_dims = tuple(0 if i in mapped else None for i in range(len(tensors)))
    args = tuple(randn((BATCH, *t.shape), generator=generator, dtype=t.dtype, device=t.device) if i in mapped else t
                 for i, t in enumerate(tensors))
    return in_dims, args


@pytest.mark.parametrize("mapped", [(0,), (1, 2), (0, 1, 2)], ids=["x", "params", "all"])
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_vmap_of_linear(leading, n_out, bias, mapped, device, generator):
    """vmap over a batch of x, of weights (and biases), or of all: equal to vmap of F.linear."""
    primals = linear_args(leading, n_out, bias, generator=generator, device=device)
    in_dims, args = batched(primals, mapped, generator=generator)
    assert_close_f64(vmap(fused_linreg.linear, in_dims)(*args), vmap(F.linear, in_dims)(*args))


@pytest.mark.parametrize("mapped", [(0,), (0, 1)], ids=["input", "both"])
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
def test_vmap_of_loss(loss_name, reduction, shape, mapped, device, generator):
    """vmap over a batch of inputs (one target) or of inputs and targets: one loss per batch entry."""
    ours, reference = LOSSES[loss_name]
    in_dims, args = batched(loss_args(loss_name, shape, generator=generator, device=device), mapped,
                            generator=generator)
    assert_close_f64(vmap(lambda i, t: ours(i, t, reduction), in_dims)(*args),
                     vmap(lambda i, t: reference(i, t, reduction), in_dims)(*args))


@pytest.mark.parametrize(("name", "shape", "reduction"), BACKWARD_OP_CASES)
def test_vmap_of_backward_ops(name, shape, reduction, device, generator):
    """The backward ops called directly under vmap over all their arguments: their batching rules."""
    op, primals, reference = backward_op_case(name, shape, reduction, generator=generator, device=device)
    in_dims, args = batched(primals, range(len(primals)), generator=generator)
    assert_close_f64(vmap(op, in_dims)(*args), vmap(reference, in_dims)(*args))


# --- jacrev, jacfwd, hessian ----------------------------------------------------------------------------

@pytest.mark.parametrize("jacobian", [jacrev, jacfwd])
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_jacobians_of_linear(leading, n_out, bias, jacobian, device, generator):
    """The Jacobian of linear with respect to every argument."""
    primals = linear_args(leading, n_out, bias, generator=generator, device=device)
    argnums = tuple(range(len(primals)))
    assert_close_f64(jacobian(fused_linreg.linear, argnums)(*primals), jacobian(F.linear, argnums)(*primals))


@pytest.mark.parametrize("jacobian", [jacrev, jacfwd])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_jacobians_of_linear_model_loss(leading, n_out, bias, loss_name, reduction, jacobian, device, generator):
    """The Jacobian of the model's loss (per element for "none") with respect to params, x and y."""
    ours, reference = model_losses(loss_name, reduction)
    inputs = model_inputs(leading, n_out, bias, loss_name, generator=generator, device=device)
    assert_close_f64(jacobian(ours, (0, 1, 2))(*inputs), jacobian(reference, (0, 1, 2))(*inputs))


@pytest.mark.parametrize("reduction", SCALAR_REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_hessian_of_linear_model_loss(leading, n_out, bias, loss_name, reduction, device, generator):
    """The Hessian with respect to params and x (cross terms included): nonzero, equal to the reference's."""
    ours, reference = model_losses(loss_name, reduction)
    inputs = model_inputs(leading, n_out, bias, loss_name, generator=generator, device=device)
    expected = hessian(reference, (0, 1))(*inputs)
    assert_close_f64(hessian(ours, (0, 1))(*inputs), expected)
    assert expected[0][0][0][0].abs().sum() > 0  # d²/dweight²: what the comparison is about


# --- Per-sample gradients: vmap(grad(loss)) ---------------------------------------------------------

@pytest.mark.parametrize("reduction", SCALAR_REDUCTIONS)
@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_per_sample_gradients(leading, n_out, bias, loss_name, reduction, device, generator):
    """vmap(grad(loss), in_dims=(None, 0, 0)) over BATCH samples x_i (x's shape of the case) and
    y_i: the gradient of each sample's loss with respect to the shared parameters."""
    ours, reference = model_losses(loss_name, reduction)
    params, x, y = model_inputs(leading, n_out, bias, loss_name, generator=generator, device=device)
    _, (X, Y) = batched((x, y), (0, 1), generator=generator)
    per_sample = vmap(grad(ours), in_dims=(None, 0, 0))(params, X, Y)
    expected = vmap(grad(reference), in_dims=(None, 0, 0))(params, X, Y)
    assert per_sample[0].shape == (BATCH, *params[0].shape)
    assert_close_f64(per_sample, expected)


# --- The ops without a tangent formula or batching rule refuse the transforms ------------------------

def update_call(op, X, y, weight, bias):
    """A call of `op` that would write `weight` and `bias` (linreg_grad writes nothing)."""
    if op == "sgd_":  # X and y stand for the gradients of weight and bias
        return lambda: fused_linreg.sgd_([weight, bias], [X, y], [None, None], lr=0.1, momentum=0.9)
    if op == "linreg_grad":
        return lambda: fused_linreg.linreg_grad(X, y, weight, bias)[0]
    if op == "linreg_step_":
        return lambda: fused_linreg.linreg_step_(X, y, weight, bias, lr=0.1)
    return lambda: fused_linreg.linreg_epoch_(X, y, weight, bias, lr=0.1, batch_size=2,
                                              indices=torch.arange(X.shape[0], device=X.device))


@pytest.mark.parametrize("transformed", ["data", "weight"])
@pytest.mark.parametrize("transform", ["grad", "vmap"])
@pytest.mark.parametrize("op", ["sgd_", "linreg_grad", "linreg_step_", "linreg_epoch_"])
def test_non_differentiable_ops_refuse_transforms(op, transform, transformed, device, generator):
    """Under grad of (or vmap over) the data or the weight, a RuntimeError that names the transform,
    and no tensor written: neither the transformed one nor the plain ones the call was given."""
    def draw(*shape):
        return randn(shape, generator=generator, dtype=torch.float64, device=device)

    if op == "sgd_":  # gradients of weight (3, 4) and bias (3,)
        X, y = draw(3, 4), draw(3)
    else:
        X, y = draw(6, 4), draw(6, 3)
    weight, bias = draw(3, 4), draw(3)
    if transform == "vmap":
        if transformed == "data":
            X = randn((BATCH, *X.shape), generator=generator, dtype=torch.float64, device=device)
        else:
            weight = randn((BATCH, *weight.shape), generator=generator, dtype=torch.float64, device=device)
    before = snapshot([X, y, weight, bias])

    def fn(t):
        args = dict(X=X, y=y, weight=weight, bias=bias)
        args["X" if transformed == "data" else "weight"] = t
        update_call(op, **args)()
        return t.sum()

    arg = X if transformed == "data" else weight
    if transform == "grad":
        with pytest.raises(RuntimeError, match=f"fused_linreg.{op} does not support torch.func transforms"):
            grad(fn)(arg)
    else:
        with pytest.raises(RuntimeError, match=f"fused_linreg.{op} does not support torch.func.vmap"):
            vmap(fn)(arg)
    assert_unchanged([X, y, weight, bias], before)


def test_eager_calls_after_transforms_take_the_fused_kernels(generator):
    """After a transform ran and one raised, the plain calls are eager again: linear and the loss
    record the fused autograd nodes (not PyTorch's), give the reference's .grad, and linreg_step_
    updates in place."""
    x, weight, bias = linear_args((7,), 3, True, generator=generator, requires_grad=True)
    y = randn((7, 3), generator=generator, dtype=torch.float64)
    ours, reference = model_losses("mse_loss", "mean")
    vmap(grad(ours), in_dims=(None, 0, 0))((weight, bias), x, y)
    with pytest.raises(RuntimeError, match="does not support torch.func.vmap"):
        vmap(lambda X: fused_linreg.linreg_grad(X, y, weight, bias))(x.detach().unsqueeze(0))

    out = fused_linreg.linear(x, weight, bias)
    loss = fused_linreg.mse_loss(out, y)
    assert "LinearFunction" in out.grad_fn.name() and "LossFunction" in loss.grad_fn.name()
    loss.backward()
    ref_leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    reference((ref_leaves[1], ref_leaves[2]), ref_leaves[0], y).backward()
    assert_close_f64([t.grad for t in (x, weight, bias)], [t.grad for t in ref_leaves])

    X, w, b = (t.detach().clone() for t in (x, weight, bias))
    expected_loss, grad_w, grad_b = fused_linreg.linreg_grad(X, y, w, b)
    assert_close_f64(fused_linreg.linreg_step_(X, y, w, b, lr=0.1), expected_loss)
    assert_close_f64((w, b), (weight.detach() - 0.1 * grad_w, bias.detach() - 0.1 * grad_b))
