"""fused_linreg.linear and its backward ops against F.linear (float64 eager reference)."""

import math

import pytest
import torch
import torch.nn.functional as F

import fused_linreg

from conftest import FLOAT_DTYPES, assert_close_to_reference, opcheck_backward_op, randn, strided_copy

ops = torch.ops.fused_linreg

# (leading dims of x, in_features, out_features): a sample of batch 1…4096 × in 1…1024 ×
# out 1…256 with extra leading dims, a 1-D x and empty batches; skinny (out <= 16) and
# GEMM-sized (out > 16) shapes both appear.
SHAPES = [
    ((1,), 1, 1),
    ((10,), 2, 1),
    ((7,), 3, 2),
    ((4096,), 2, 1),
    ((4096,), 64, 4),
    ((301,), 85, 7),
    ((1000,), 1024, 1),
    ((33,), 1024, 16),
    ((129,), 17, 17),
    ((64,), 100, 256),
    ((1024,), 128, 256),
    ((2, 3), 5, 7),
    ((4, 1, 5), 8, 3),
    ((3, 50), 31, 64),
    ((), 6, 2),
    ((0,), 4, 3),
    ((2, 0), 4, 20),
]


def shape_id(shape):
    leading, n_in, n_out = shape
    return f"x{'x'.join(map(str, leading))}x{n_in}-out{n_out}" if leading else f"x{n_in}-out{n_out}"


def make_linear_inputs(leading, n_in, n_out, *, bias, dtype, device, generator, requires_grad=True):
    x = randn((*leading, n_in), generator=generator, dtype=dtype, device=device, requires_grad=requires_grad)
    weight = randn((n_out, n_in), generator=generator, dtype=dtype, device=device, requires_grad=requires_grad)
    b = randn((n_out,), generator=generator, dtype=dtype, device=device, requires_grad=requires_grad) if bias else None
    return x, weight, b


def float64_reference(x, weight, bias, grad_out):
    """F.linear forward and backward in float64 on copies of the inputs."""
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    out = F.linear(*leaves)
    out.backward(grad_out.double())
    return out, [t.grad if t is not None else None for t in leaves]


def check_against_reference(x, weight, bias, generator):
    out = fused_linreg.linear(x, weight, bias)
    assert out.dtype == x.dtype and out.device == x.device
    grad_out = randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
    out.backward(grad_out)
    ref_out, ref_grads = float64_reference(x, weight, bias, grad_out)
    n_in, n_out, n_rows = x.shape[-1], weight.shape[0] if weight.dim() == 2 else 1, math.prod(x.shape[:-1])
    assert_close_to_reference(out, ref_out, scale=math.sqrt(n_in))
    assert_close_to_reference(x.grad, ref_grads[0], scale=math.sqrt(n_out))
    assert_close_to_reference(weight.grad, ref_grads[1], scale=math.sqrt(n_rows))
    if bias is not None:
        assert_close_to_reference(bias.grad, ref_grads[2], scale=math.sqrt(n_rows))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_linear_matches_f_linear(shape, dtype, bias, device, generator):
    x, weight, b = make_linear_inputs(*shape, bias=bias, dtype=dtype, device=device, generator=generator)
    check_against_reference(x, weight, b, generator)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [((300,), 40, 3), ((5, 6), 7, 64), ((4096,), 8, 1)], ids=shape_id)
def test_linear_non_contiguous_inputs(shape, dtype, device, generator):
    x, weight, b = (strided_copy(t) for t in
                    make_linear_inputs(*shape, bias=True, dtype=dtype, device=device, generator=generator))
    assert not any(t.is_contiguous() for t in (x, weight, b) if t.numel() > 1)
    check_against_reference(x, weight, b, generator)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_linear_transposed_views(dtype, device, generator):
    """x and weight as transposes of contiguous tensors (column-major), the layout autograd
    and users produce most often."""
    x = randn((24, 200), generator=generator, dtype=dtype, device=device).t().requires_grad_()
    weight = randn((24, 5), generator=generator, dtype=dtype, device=device).t().requires_grad_()
    b = randn((5,), generator=generator, dtype=dtype, device=device, requires_grad=True)
    check_against_reference(x, weight, b, generator)


@pytest.mark.parametrize(("weight_shape", "bias_shape"), [((4,), None), ((4,), ()), ((3, 4), ()), ((3, 4), (1,))],
                         ids=["1d_weight", "1d_weight_scalar_bias", "scalar_bias", "bias_of_one"])
def test_linear_accepts_what_f_linear_accepts(weight_shape, bias_shape, device, generator):
    """A 1-D weight (one output feature, its dimension dropped) and a bias that broadcasts."""
    x = randn((2, 5, 4), generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    weight = randn(weight_shape, generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    b = None if bias_shape is None else randn(bias_shape, generator=generator, dtype=torch.float64, device=device,
                                                requires_grad=True)
    check_against_reference(x, weight, b, generator)


@pytest.mark.parametrize("needs_grad", ["x", "weight", "bias"])
def test_linear_grads_only_where_required(needs_grad, device, generator):
    x, weight, b = make_linear_inputs((6,), 4, 3, bias=True, dtype=torch.float64, device=device,
                                      generator=generator, requires_grad=False)
    inputs = {"x": x, "weight": weight, "bias": b}
    inputs[needs_grad].requires_grad_()
    out = fused_linreg.linear(x, weight, b)
    out.sum().backward()
    ref_out, ref_grads = float64_reference(x, weight, b, torch.ones_like(out))
    for (name, t), ref_grad in zip(inputs.items(), ref_grads):
        if name == needs_grad:
            assert_close_to_reference(t.grad, ref_grad)
        else:
            assert t.grad is None


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("leading", [(5,), (2, 3), ()], ids=["2d", "3d", "1d"])
def test_linear_gradcheck(leading, bias, device, generator):
    inputs = make_linear_inputs(leading, 4, 3, bias=bias, dtype=torch.float64, device=device, generator=generator)
    assert torch.autograd.gradcheck(fused_linreg.linear, inputs)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_opcheck_linear(bias, requires_grad, device, generator):
    inputs = make_linear_inputs((2, 5), 3, 4, bias=bias, dtype=torch.float32, device=device,
                                generator=generator, requires_grad=requires_grad)
    torch.library.opcheck(ops.linear.default, inputs)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
def test_opcheck_linear_backward_ops(requires_grad, device, generator):
    grad_out = randn((2, 5, 4), generator=generator, device=device, requires_grad=requires_grad)
    x = randn((2, 5, 3), generator=generator, device=device, requires_grad=requires_grad)
    weight = randn((4, 3), generator=generator, device=device, requires_grad=requires_grad)
    opcheck_backward_op(ops.linear_backward_input.default, (grad_out, weight))
    opcheck_backward_op(ops.linear_backward_params.default, (grad_out, x))


def test_backward_ops_match_their_formulas(device, generator):
    """The ops the autograd formula calls, called directly: grad_x = g @ W and
    (grad_W, grad_b) = (g^T x, sum of g over rows) over all leading dims."""
    grad_out = randn((3, 70, 5), generator=generator, dtype=torch.float64, device=device)
    x = randn((3, 70, 9), generator=generator, dtype=torch.float64, device=device)
    weight = randn((5, 9), generator=generator, dtype=torch.float64, device=device)
    assert_close_to_reference(ops.linear_backward_input(grad_out, weight), grad_out @ weight)
    grad_weight, grad_bias = ops.linear_backward_params(grad_out, x)
    assert_close_to_reference(grad_weight, grad_out.reshape(-1, 5).T @ x.reshape(-1, 9))
    assert_close_to_reference(grad_bias, grad_out.sum(dim=(0, 1)))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear_under_cpu_autocast_is_like_f_linear(bias, generator):
    x, weight, b = make_linear_inputs((64,), 32, 4, bias=bias, dtype=torch.float32, device="cpu", generator=generator)
    expected_leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, b)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_linreg.linear(x, weight, b)
        expected = F.linear(*expected_leaves)
    assert out.dtype == expected.dtype == torch.bfloat16
    # both compute on the same bf16-rounded inputs: one bf16 rounding apart at most
    assert_close_to_reference(out, expected.double(), scale=math.sqrt(32))
    grad_out = randn(out.shape, generator=generator, dtype=torch.bfloat16)
    out.backward(grad_out)
    expected.backward(grad_out)
    for t, ref in zip((x, weight, b), expected_leaves):
        if t is not None:
            assert t.grad.dtype == ref.grad.dtype == torch.float32
            assert_close_to_reference(t.grad, ref.grad.double(), dtype=torch.bfloat16, scale=8)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_linear_under_cuda_autocast_is_like_f_linear(dtype, generator):
    x, weight, b = make_linear_inputs((64,), 32, 4, bias=True, dtype=torch.float32, device="cuda",
                                      generator=generator, requires_grad=False)
    with torch.autocast("cuda", dtype=dtype):
        out = fused_linreg.linear(x, weight, b)
        expected = F.linear(x, weight, b)
    assert out.dtype == expected.dtype == dtype
    assert_close_to_reference(out, expected.double(), scale=math.sqrt(32))


def test_linear_float64_input_is_not_downcast_by_autocast(generator):
    """Autocast leaves float64 alone for F.linear; so must it for ours."""
    x, weight, b = make_linear_inputs((8,), 3, 2, bias=True, dtype=torch.float64, device="cpu",
                                      generator=generator, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_linreg.linear(x, weight, b)
        expected = F.linear(x, weight, b)
    assert out.dtype == expected.dtype
    assert_close_to_reference(out, expected)
