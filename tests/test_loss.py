"""squared_loss (the book's ½(ŷ − y)², target reshaped) and mse_loss (F.mse_loss) against
float64 eager references, forward and backward, every reduction."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import fused_linreg

from conftest import FLOAT_DTYPES, assert_close_to_reference, opcheck_backward_op, randn, strided_copy

ops = torch.ops.fused_linreg
REDUCTIONS = ["none", "sum", "mean"]
# Element counts stay below float16's range for a sum of squares.
SHAPES = [(1,), (10, 1), (4096, 1), (7, 13), (3, 4, 5), (2, 1, 3, 1), ()]


def book_squared_loss(input, target, reduction):
    """The book's formula, reduced like torch's losses."""
    loss = (input - target.reshape(input.shape)) ** 2 / 2
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def float64_reference(loss_fn, input, target, reduction, grad):
    leaves = [t.detach().double().requires_grad_(t.requires_grad) for t in (input, target)]
    out = loss_fn(*leaves, reduction=reduction)
    out.backward(grad.double())
    return out, [t.grad for t in leaves]


def check_loss(ours, reference_fn, input, target, reduction, generator):
    out = ours(input, target, reduction=reduction)
    assert out.dtype == input.dtype and out.device == input.device
    grad = randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
    out.backward(grad)
    ref_out, (ref_grad_input, ref_grad_target) = float64_reference(reference_fn, input, target, reduction, grad)
    n = max(1, input.numel())
    assert_close_to_reference(out, ref_out, scale=math.sqrt(n) if reduction == "sum" else 1.0)
    assert_close_to_reference(input.grad, ref_grad_input)
    if target.requires_grad:
        assert_close_to_reference(target.grad, ref_grad_target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mse_loss_matches_f_mse_loss(shape, dtype, reduction, device, generator):
    input = randn(shape, generator=generator, dtype=dtype, device=device, requires_grad=True)
    target = randn(shape, generator=generator, dtype=dtype, device=device, requires_grad=True)
    check_loss(fused_linreg.mse_loss, F.mse_loss, input, target, reduction, generator)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_squared_loss_matches_book_formula(shape, dtype, reduction, device, generator):
    input = randn(shape, generator=generator, dtype=dtype, device=device, requires_grad=True)
    target = randn(shape, generator=generator, dtype=dtype, device=device, requires_grad=True)
    check_loss(fused_linreg.squared_loss, book_squared_loss, input, target, reduction, generator)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("input_shape", "target_shape"), [
    ((10, 1), (10,)),       # the book: y_hat (n, 1), labels (n,)
    ((10,), (10, 1)),
    ((3, 4), (4, 3)),       # a reshape, not a transpose: element order is kept
    ((2, 3, 2), (12,)),
], ids=str)
def test_squared_loss_reshapes_target_to_input_shape(input_shape, target_shape, reduction, device, generator):
    input = randn(input_shape, generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    target = randn(target_shape, generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    check_loss(fused_linreg.squared_loss, book_squared_loss, input, target, reduction, generator)


def test_squared_loss_default_reduction_is_none(device, generator):
    input = randn((5, 1), generator=generator, device=device)
    target = randn((5,), generator=generator, device=device)
    assert_close_to_reference(fused_linreg.squared_loss(input, target),
                              book_squared_loss(input.double(), target.double(), "none"))


def test_mse_loss_default_reduction_is_mean(device, generator):
    input, target = (randn((5, 3), generator=generator, device=device) for _ in range(2))
    assert_close_to_reference(fused_linreg.mse_loss(input, target), F.mse_loss(input.double(), target.double()))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("input_shape", "target_shape"), [((6, 1), (6,)), ((4,), (3, 4)), ((2, 1, 3), (5, 1))],
                         ids=str)
def test_mse_loss_broadcasts_and_warns_like_f_mse_loss(input_shape, target_shape, reduction, device, generator):
    input = randn(input_shape, generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    target = randn(target_shape, generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    with pytest.warns(UserWarning) as ours:
        fused_linreg.mse_loss(input, target, reduction=reduction)
    with pytest.warns(UserWarning) as torchs:
        F.mse_loss(input, target, reduction=reduction)
    assert [str(w.message) for w in ours] == [str(w.message) for w in torchs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_loss(fused_linreg.mse_loss, F.mse_loss, input, target, reduction, generator)


def test_mse_loss_same_shapes_do_not_warn(device, generator):
    input, target = (randn((4, 2), generator=generator, device=device) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused_linreg.mse_loss(input, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 1)], ids=str)
def test_losses_of_empty_tensors_are_like_torch(shape, reduction, device):
    """mean of nothing is nan, sum of nothing is 0, like torch."""
    input = torch.empty(shape, device=device, requires_grad=True)
    target = torch.empty(shape, device=device)
    expected = F.mse_loss(input, target, reduction=reduction)
    for loss in (fused_linreg.mse_loss, fused_linreg.squared_loss):
        out = loss(input, target, reduction=reduction)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        torch.testing.assert_close(out, expected, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", [fused_linreg.mse_loss, fused_linreg.squared_loss], ids=["mse", "squared"])
def test_losses_of_non_contiguous_inputs(loss, reduction, device, generator):
    reference = F.mse_loss if loss is fused_linreg.mse_loss else book_squared_loss
    input = strided_copy(randn((9, 5), generator=generator, dtype=torch.float64, device=device, requires_grad=True))
    target = randn((5, 9), generator=generator, dtype=torch.float64, device=device).t().requires_grad_()
    check_loss(loss, reference, input, target, reduction, generator)


@pytest.mark.parametrize("target_requires_grad", [False, True], ids=["input_grad", "input_and_target_grad"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("loss", "target_shape"), [
    (fused_linreg.mse_loss, (2, 3, 4)),
    (fused_linreg.squared_loss, (2, 3, 4)),
    (fused_linreg.squared_loss, (24,)),
], ids=["mse", "squared", "squared_reshaped"])
def test_loss_gradcheck(loss, target_shape, reduction, target_requires_grad, device, generator):
    input = randn((2, 3, 4), generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    target = randn(target_shape, generator=generator, dtype=torch.float64, device=device,
                   requires_grad=target_requires_grad)
    assert torch.autograd.gradcheck(lambda i, t: loss(i, t, reduction=reduction), (input, target))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["squared_loss", "mse_loss"])
def test_opcheck_losses(name, reduction, requires_grad, device, generator):
    input = randn((6, 2), generator=generator, device=device, requires_grad=requires_grad)
    target = randn((6, 2), generator=generator, device=device, requires_grad=requires_grad)
    grad_output = randn((6, 2) if reduction == "none" else (), generator=generator, device=device)
    torch.library.opcheck(getattr(ops, name).default, (input, target, reduction))
    opcheck_backward_op(getattr(ops, f"{name}_backward").default, (grad_output, input, target, reduction))


def test_opcheck_squared_loss_reshaped_target(device, generator):
    input = randn((6, 1), generator=generator, device=device, requires_grad=True)
    target = randn((6,), generator=generator, device=device)
    torch.library.opcheck(ops.squared_loss.default, (input, target, "mean"))
    opcheck_backward_op(ops.squared_loss_backward.default, (torch.ones((), device=device), input, target, "mean"))


@pytest.mark.parametrize("name", ["squared_loss", "mse_loss"])
def test_losses_under_cpu_autocast_are_like_f_mse_loss(name, generator):
    """F.mse_loss runs in float32 under autocast; ours do too."""
    input, target = (randn((16, 1), generator=generator, dtype=torch.bfloat16) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = getattr(fused_linreg, name)(input, target, reduction="sum")
        expected = F.mse_loss(input, target, reduction="sum")
    assert out.dtype == expected.dtype
    scale = 0.5 if name == "squared_loss" else 1.0
    assert_close_to_reference(out, scale * expected.double())


@pytest.mark.parametrize("name", ["squared_loss", "mse_loss"])
def test_losses_promote_mixed_dtypes_like_torch(name, device, generator):
    input = randn((6, 1), generator=generator, dtype=torch.float32, device=device, requires_grad=True)
    target = randn((6, 1), generator=generator, dtype=torch.float64, device=device)
    out = getattr(fused_linreg, name)(input, target, reduction="sum")
    expected = F.mse_loss(input, target, reduction="sum") * (0.5 if name == "squared_loss" else 1.0)
    assert out.dtype == expected.dtype == torch.float64
    assert_close_to_reference(out, expected, dtype=torch.float32)
    out.backward()
    assert input.grad.dtype == torch.float32
