"""Forward-mode AD of linear, squared_loss, mse_loss and of the backward ops (called directly
through torch.ops.fused_linreg), against the same transform of F.linear, F.mse_loss and the
book's squared loss in float64: torch.func.jvp and jacfwd, torch.autograd.forward_ad dual
tensors, and gradcheck's forward-AD and batched checks. The in-place and non-differentiable ops
(sgd_, linreg_grad, linreg_step_, linreg_epoch_) refuse a dual tensor before writing anything."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import jacfwd, jvp

import fused_linreg
from fused_linreg.fused_step import BIAS_BUFFER, WEIGHT_BUFFER

from conftest import (BACKWARD_OP_CASES, LINEAR_CASES, LOSS_SHAPES, LOSSES, REDUCTIONS, assert_close_f64,
                      assert_unchanged, backward_op_case, like, linear_args, loss_args, randn, snapshot)

GRADCHECK_FORWARD = dict(check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True)


def loss_fns(name, reduction):
    ours, reference = LOSSES[name]
    return (lambda i, t: ours(i, t, reduction)), (lambda i, t: reference(i, t, reduction))


# --- torch.func.jvp and jacfwd ----------------------------------------------------------------------

@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_linear_jvp_and_jacfwd(leading, n_out, bias, device, generator):
    """The output and its tangent along random directions in every argument, and the full forward
    Jacobian with respect to every argument, equal F.linear's."""
    primals = linear_args(leading, n_out, bias, generator=generator, device=device)
    tangents = like(primals, generator=generator)
    assert_close_f64(jvp(fused_linreg.linear, primals, tangents), jvp(F.linear, primals, tangents))
    argnums = tuple(range(len(primals)))
    assert_close_f64(jacfwd(fused_linreg.linear, argnums)(*primals), jacfwd(F.linear, argnums)(*primals))


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_jvp_and_jacfwd(name, reduction, shape, device, generator):
    """Tangents along input and target, and the Jacobian with respect to both, equal the reference's."""
    ours, reference = loss_fns(name, reduction)
    primals = loss_args(name, shape, generator=generator, device=device)
    tangents = like(primals, generator=generator)
    assert_close_f64(jvp(ours, primals, tangents), jvp(reference, primals, tangents))
    assert_close_f64(jacfwd(ours, (0, 1))(*primals), jacfwd(reference, (0, 1))(*primals))


@pytest.mark.parametrize(("name", "shape", "reduction"), BACKWARD_OP_CASES)
def test_backward_op_jvp(name, shape, reduction, device, generator):
    """The backward ops called directly carry tangents: equal to the jvp of the vjp of F.*."""
    op, primals, reference = backward_op_case(name, shape, reduction, generator=generator, device=device)
    tangents = like(primals, generator=generator)
    assert_close_f64(jvp(op, primals, tangents), jvp(reference, primals, tangents))


# --- torch.autograd.forward_ad dual tensors ---------------------------------------------------------

def dual_forward(fn, primals, tangents, dual_on):
    """fn's (primal, tangent) with the arguments numbered in `dual_on` made dual."""
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) if i in dual_on else p for i, (p, t) in enumerate(zip(primals, tangents))]
        primal, tangent = fwAD.unpack_dual(fn(*duals))
    return primal, tangent


# LINEAR_CASES × the arguments that are dual: x, weight, bias (where there is one) or all.
DUAL_LINEAR_CASES = [pytest.param(*case.values, dual_on, id=f"{case.id}-dual_{name}")
                     for case in LINEAR_CASES
                     for name, dual_on in {"x": (0,), "weight": (1,), "bias": (2,), "all": (0, 1, 2)}.items()
                     if case.values[2] or name != "bias"]


@pytest.mark.parametrize(("leading", "n_out", "bias", "dual_on"), DUAL_LINEAR_CASES)
def test_linear_dual_tensors(leading, n_out, bias, dual_on, device, generator):
    """A tangent on any one argument (or on all) comes out: not None, and equal to F.linear's."""
    primals = linear_args(leading, n_out, bias, generator=generator, device=device)
    tangents = like(primals, generator=generator)
    primal, tangent = dual_forward(fused_linreg.linear, primals, tangents, dual_on)
    ref_primal, ref_tangent = dual_forward(F.linear, primals, tangents, dual_on)
    assert tangent is not None
    assert_close_f64((primal, tangent), (ref_primal, ref_tangent))


@pytest.mark.parametrize("dual_on", [(0,), (1,), (0, 1)], ids=["input", "target", "both"])
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_dual_tensors(name, reduction, shape, dual_on, device, generator):
    """A tangent on input, target or both comes out, equal to the reference loss's."""
    ours, reference = loss_fns(name, reduction)
    primals = loss_args(name, shape, generator=generator, device=device)
    tangents = like(primals, generator=generator)
    primal, tangent = dual_forward(ours, primals, tangents, dual_on)
    assert tangent is not None
    assert_close_f64((primal, tangent), dual_forward(reference, primals, tangents, dual_on))


# --- gradcheck: forward AD, batched grads and batched forward grads (vmap over them) ------------------

@pytest.mark.parametrize(("leading", "n_out", "bias"), LINEAR_CASES)
def test_linear_gradcheck_forward_ad(leading, n_out, bias, device, generator):
    inputs = linear_args(leading, n_out, bias, generator=generator, device=device, requires_grad=True)
    # A 1-D x without bias fails the batched forward-AD check for F.linear itself (the legacy vmap
    # gradcheck uses gives its tangent an extra dimension), so that check is left out there.
    checks = dict(GRADCHECK_FORWARD, check_batched_forward_grad=bool(leading) or bias)
    assert torch.autograd.gradcheck(fused_linreg.linear, inputs, **checks)


@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_gradcheck_forward_ad(name, reduction, shape, device, generator):
    inputs = loss_args(name, shape, generator=generator, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(loss_fns(name, reduction)[0], inputs, **GRADCHECK_FORWARD)


@pytest.mark.parametrize(("name", "shape", "reduction"), BACKWARD_OP_CASES)
def test_backward_op_gradcheck_forward_ad(name, shape, reduction, device, generator):
    op, inputs, _ = backward_op_case(name, shape, reduction, generator=generator, device=device, requires_grad=True)
    # As for linear: a 1-D grad_out @ weight fails that check for torch.matmul itself.
    checks = dict(GRADCHECK_FORWARD, check_batched_forward_grad=name != "linear_backward_input" or bool(shape[0]))
    assert torch.autograd.gradcheck(op, inputs, **checks)


# --- The ops without a tangent formula refuse a dual tensor, before writing anything ----------------

def non_differentiable_call(op, t, state, buffers):
    """A call of `op` on the tensors of `t` (any of which may be dual); momentum 0.9, so that
    the momentum buffers (`state` for the fused step, `buffers` for sgd_) are used too."""
    if op == "sgd_":
        return lambda: fused_linreg.sgd_([t["weight"], t["bias"]], [t["grad_weight"], t["grad_bias"]], buffers,
                                         lr=t["lr"], momentum=0.9)
    if op == "linreg_grad":
        return lambda: fused_linreg.linreg_grad(t["X"], t["y"], t["weight"], t["bias"])
    if op == "linreg_step_":
        return lambda: fused_linreg.linreg_step_(t["X"], t["y"], t["weight"], t["bias"], lr=0.1, momentum=0.9,
                                                 state=state)
    return lambda: fused_linreg.linreg_epoch_(t["X"], t["y"], t["weight"], t["bias"], lr=0.1, batch_size=2,
                                              indices=torch.arange(6, device=t["X"].device), momentum=0.9,
                                              state=state)


@pytest.mark.parametrize(("op", "dual"), [
    ("sgd_", "weight"), ("sgd_", "grad_weight"), ("sgd_", "weight_buffer"), ("sgd_", "lr"),
    ("linreg_grad", "X"), ("linreg_grad", "weight"), ("linreg_grad", "bias"),
    ("linreg_step_", "X"), ("linreg_step_", "y"), ("linreg_step_", "weight"), ("linreg_step_", "weight_buffer"),
    ("linreg_epoch_", "X"), ("linreg_epoch_", "bias"), ("linreg_epoch_", "weight_buffer"),
])
def test_non_differentiable_ops_refuse_dual_tensors(op, dual, device, generator):
    """RuntimeError naming forward-mode AD, and no tensor, momentum-buffer list or state dict changed."""
    def draw(*shape):
        return randn(shape, generator=generator, dtype=torch.float64, device=device)

    t = dict(X=draw(6, 4), y=draw(6, 3), weight=draw(3, 4), bias=draw(3), grad_weight=draw(3, 4),
             grad_bias=draw(3), weight_buffer=draw(3, 4), bias_buffer=draw(3),
             lr=torch.tensor(0.1, dtype=torch.float64, device=device))
    before = snapshot(t)
    with fwAD.dual_level():
        duals = dict(t, **{dual: fwAD.make_dual(t[dual], randn(t[dual].shape, generator=generator,
                                                                 dtype=torch.float64, device=device))})
        # Existing buffers when one is dual, else a first step (which would store new buffers);
        # sgd_'s bias has no buffer yet (a first step for that parameter).
        state = ({WEIGHT_BUFFER: duals["weight_buffer"], BIAS_BUFFER: duals["bias_buffer"]}
                 if dual == "weight_buffer" else {})
        entries = dict(state)
        buffers = [duals["weight_buffer"], None]
        with pytest.raises(RuntimeError, match=f"fused_linreg.{op} does not support forward-mode AD"):
            non_differentiable_call(op, duals, state, buffers)()
    assert_unchanged(t, before)
    assert len(buffers) == 2 and buffers[1] is None
    assert state.keys() == entries.keys() and all(state[k] is v for k, v in entries.items())
