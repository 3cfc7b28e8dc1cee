"""The functional multi-tensor update fused_linreg.sgd_ and the sgd_ op, against torch's
single-tensor SGD (torch.optim.sgd.sgd with foreach=False)."""

import pytest
import torch
from torch.optim.sgd import sgd as torch_sgd

import fused_linreg

from conftest import HALF_DTYPES, assert_close_to_reference, randn, sgd_hyperparameters, strided_copy

ops = torch.ops.fused_linreg
PARAM_SHAPES = [(5, 3), (5,), (), (1000,), (2, 0)]
LR = 0.05


def make_params(device, dtype, generator, shapes=PARAM_SHAPES):
    return [randn(shape, generator=generator, dtype=dtype, device=device) for shape in shapes]


def torch_sgd_step(params, grads, buffers, *, lr, **hyper):
    torch_sgd(params, grads, buffers, foreach=False, fused=False, lr=lr, **hyper)


def copies(tensors):
    return [t.clone() if t is not None else None for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("hyper", sgd_hyperparameters(valid=True))
def test_sgd_matches_torch_over_20_steps(hyper, dtype, device, generator):
    params = make_params(device, dtype, generator)
    expected_params = copies(params)
    buffers, expected_buffers = [None] * len(params), [None] * len(params)
    for _ in range(20):
        grads = make_params(device, dtype, generator)
        fused_linreg.sgd_(params, copies(grads), buffers, lr=LR, **hyper)
        torch_sgd_step(expected_params, grads, expected_buffers, lr=LR, **hyper)
        for p, expected in zip(params, expected_params):
            assert_close_to_reference(p, expected)
        for buf, expected in zip(buffers, expected_buffers):
            if expected is None:
                assert buf is None, "momentum 0 needs no buffer and must not create one"
            else:
                assert_close_to_reference(buf, expected)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("hyper", [
    dict(momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False, maximize=True),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True, maximize=False),
    dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
], ids=["momentum", "nesterov", "plain"])
def test_sgd_half_precision_computes_in_float32(hyper, dtype, device, generator):
    """Half-type parameters and buffers are updated in float32 and rounded once per step:
    the reference runs torch's update on float32 copies and rounds the results."""
    params = make_params(device, dtype, generator)
    expected_params = copies(params)
    buffers, expected_buffers = [None] * len(params), [None] * len(params)
    for _ in range(10):
        grads = make_params(device, dtype, generator)
        fused_linreg.sgd_(params, copies(grads), buffers, lr=LR, **hyper)
        params32 = [p.float() for p in expected_params]
        buffers32 = [b.float() if b is not None else None for b in expected_buffers]
        torch_sgd_step(params32, [g.float() for g in grads], buffers32, lr=LR, **hyper)
        expected_params = [p.to(dtype) for p in params32]
        expected_buffers = [b.to(dtype) if b is not None else None for b in buffers32]
    for p, expected in zip(params, expected_params):
        assert p.dtype == dtype
        assert_close_to_reference(p, expected)
    for buf, expected in zip(buffers, expected_buffers):
        assert (buf is None) == (expected is None)
        if buf is not None:
            assert buf.dtype == dtype
            assert_close_to_reference(buf, expected)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_first_step_rule_is_per_parameter(nesterov, device, generator):
    """Only the parameters whose buffer entry is None take the first-step rule (buf = g);
    their new buffers are stored into the list in place."""
    hyper = dict(momentum=0.9, dampening=0.0 if nesterov else 0.5, nesterov=nesterov, weight_decay=0.01,
                 maximize=False)
    params = make_params(device, torch.float64, generator, shapes=[(4, 3), (6,), (2,)])
    buffers = [randn(p.shape, generator=generator, dtype=torch.float64, device=device) for p in params]
    buffers[1] = None
    expected_params, expected_buffers = copies(params), copies(buffers)
    grads = make_params(device, torch.float64, generator, shapes=[(4, 3), (6,), (2,)])
    existing = buffers[0]
    fused_linreg.sgd_(params, copies(grads), buffers, lr=LR, **hyper)
    torch_sgd_step(expected_params, grads, expected_buffers, lr=LR, **hyper)
    assert buffers[0] is existing, "an existing buffer is updated in place, not replaced"
    assert buffers[1] is not None
    for got, expected in zip(params + buffers, expected_params + expected_buffers):
        assert_close_to_reference(got, expected)


def test_first_step_buffers_are_not_read_by_the_op(device, generator):
    """At the op level a first-step parameter's buffer is output only: NaN there must not leak."""
    params = make_params(device, torch.float32, generator, shapes=[(3, 5), (7,)])
    grads = make_params(device, torch.float32, generator, shapes=[(3, 5), (7,)])
    old_buffer = randn((7,), generator=generator, device=device)
    buffers = [torch.full((3, 5), float("nan"), device=device), old_buffer.clone()]
    expected_params, expected_buffers = copies(params), [None, old_buffer.clone()]
    hyper = dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.0, maximize=False)
    ops.sgd_(params, copies(grads), buffers, [True, False], lr=LR, **hyper)
    torch_sgd_step(expected_params, grads, expected_buffers, lr=LR, **hyper)
    for got, expected in zip(params + buffers, expected_params + expected_buffers):
        assert_close_to_reference(got, expected)


@pytest.mark.parametrize("scale", [1024.0, 3.0])
def test_grad_scale_unscales_grads_in_place(scale, device, generator):
    params = make_params(device, torch.float32, generator)
    grads = make_params(device, torch.float32, generator)
    scaled_grads = [g * scale for g in grads]
    expected_params = copies(params)
    buffers, expected_buffers = [None] * len(params), [None] * len(params)
    hyper = dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01, maximize=False)
    fused_linreg.sgd_(params, scaled_grads, buffers, lr=LR, grad_scale=torch.tensor(scale, device=device),
                      found_inf=torch.tensor(0.0, device=device), **hyper)
    expected_grads = [g * scale / scale for g in grads]
    torch_sgd_step(expected_params, expected_grads, expected_buffers, lr=LR, **hyper)
    for got, expected in zip(params + buffers + scaled_grads, expected_params + expected_buffers + expected_grads):
        assert_close_to_reference(got, expected)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_found_inf_skips_everything_including_a_first_step(momentum, device, generator):
    hyper = dict(momentum=momentum, dampening=0.0, nesterov=False, weight_decay=0.01, maximize=False)
    params = make_params(device, torch.float32, generator)
    grads = make_params(device, torch.float32, generator)
    buffers = [None] * len(params)
    before = copies(params), copies(grads)
    fused_linreg.sgd_(params, grads, buffers, lr=LR, grad_scale=torch.tensor(2.0, device=device),
                      found_inf=torch.tensor(1.0, device=device), **hyper)
    for got, expected in zip(params + grads, before[0] + before[1]):
        assert torch.equal(got, expected)
    # The skipped step left no trace: the next step is still every parameter's first.
    expected_params, expected_buffers = copies(params), [None] * len(params)
    fused_linreg.sgd_(params, copies(grads), buffers, lr=LR, **hyper)
    torch_sgd_step(expected_params, grads, expected_buffers, lr=LR, **hyper)
    for got, expected in zip(params, expected_params):
        assert_close_to_reference(got, expected)
    for got, expected in zip(buffers, expected_buffers):
        assert (got is None) == (expected is None)
        if got is not None:
            assert_close_to_reference(got, expected)


def test_tensor_lr_overload_matches_float_lr(device, generator):
    params = make_params(device, torch.float32, generator)
    grads = make_params(device, torch.float32, generator)
    buffers = make_params(device, torch.float32, generator)
    hyper = dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=True)
    with_tensor, with_float = (copies(params), copies(buffers)), (copies(params), copies(buffers))
    is_first_step = [False] * len(params)
    ops.sgd_.tensor_lr(with_tensor[0], copies(grads), with_tensor[1], is_first_step,
                       lr=torch.tensor(LR, dtype=torch.float64, device=device), **hyper)
    ops.sgd_(with_float[0], copies(grads), with_float[1], is_first_step, lr=LR, **hyper)
    for got, expected in zip(with_tensor[0] + with_tensor[1], with_float[0] + with_float[1]):
        assert_close_to_reference(got, expected)


def test_sgd_updates_non_contiguous_tensors_in_place(device, generator):
    params = [strided_copy(p) for p in make_params(device, torch.float64, generator, shapes=[(6, 4), (9,)])]
    grads = [strided_copy(g) for g in make_params(device, torch.float64, generator, shapes=[(6, 4), (9,)])]
    buffers = [strided_copy(b) for b in make_params(device, torch.float64, generator, shapes=[(6, 4), (9,)])]
    expected_params, expected_buffers = copies(params), copies(buffers)
    hyper = dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01, maximize=False)
    fused_linreg.sgd_(params, grads, buffers, lr=LR, **hyper)
    torch_sgd_step(expected_params, grads, expected_buffers, lr=LR, **hyper)
    for got, expected in zip(params + buffers, expected_params + expected_buffers):
        assert not got.is_contiguous()
        assert_close_to_reference(got, expected)


def test_tensors_may_share_memory_where_nothing_is_corrupted(device, generator):
    """What the aliasing checks (test_bad_input) must let through: one grad read for two
    parameters (grads are only written with grad_scale), and parameters that are interleaved
    strided views of one tensor, which share its memory but no element."""
    base = randn((12,), generator=generator, dtype=torch.float64, device=device)
    params = [base[0::2], base[1::2]]
    shared_grad = randn((6,), generator=generator, dtype=torch.float64, device=device)
    expected_params = copies(params)
    buffers, expected_buffers = [None, None], [None, None]
    hyper = dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.01, maximize=False)
    fused_linreg.sgd_(params, [shared_grad, shared_grad], buffers, lr=LR, **hyper)
    torch_sgd_step(expected_params, [shared_grad.clone(), shared_grad.clone()], expected_buffers, lr=LR, **hyper)
    for got, expected in zip(params + buffers, expected_params + expected_buffers):
        assert_close_to_reference(got, expected)


def test_sgd_of_no_parameters_is_a_no_op():
    fused_linreg.sgd_([], [], [], lr=LR, momentum=0.9)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("overload", ["default", "tensor_lr"])
def test_opcheck_sgd(overload, momentum, requires_grad, device, generator):
    shapes = [(4, 3), (3,), (300,)]
    params = make_params(device, torch.float32, generator, shapes)
    # Non-leaf grads: writing into a leaf that requires grad raises (see test_bad_input).
    grads = [g.requires_grad_(requires_grad) * 1.0 for g in make_params(device, torch.float32, generator, shapes)]
    buffers = make_params(device, torch.float32, generator, shapes) if momentum else []
    is_first_step = [True, False, False] if momentum else []
    lr = torch.tensor(LR, device=device) if overload == "tensor_lr" else LR
    kwargs = dict(lr=lr, momentum=momentum, weight_decay=0.01, grad_scale=torch.tensor(4.0, device=device),
                  found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(getattr(ops.sgd_, overload), (params, grads, buffers, is_first_step), kwargs)
