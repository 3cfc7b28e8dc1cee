"""The registry of bad inputs that test_bad_input.py runs, and the bad inputs of linear, the
losses, sgd_ and optim.SGD (those of the fused linear-regression ops are in
bad_input_cases_linreg.py). Each case builds a call that must raise an error naming the op
and the argument, and the tensors it must leave untouched."""

import warnings

import pytest
import torch

import fused_linreg
from fused_linreg.optim import SGD

from conftest import randn

ops = torch.ops.fused_linreg
CASES = []  # built with a device ("cpu" or "cuda") and a generator
CUDA_CASES = []  # one tensor on the GPU, one on the CPU: built with a generator only


def case(raises, match, *, cases=CASES):
    """Registers `build(device, generator) -> (call, tensors)`: calling `call()` must raise
    `raises` with a message matching `match` and leave `tensors` untouched."""
    def register(build):
        cases.append(pytest.param(build, raises, match, id=build.__name__))
        return build
    return register


def sgd_lists(device, generator, n=3, dtype=torch.float32):
    shapes = [(4, 3), (5,), (2, 2)][:n]
    params = [randn(s, generator=generator, dtype=dtype, device=device) for s in shapes]
    grads = [randn(s, generator=generator, dtype=dtype, device=device) for s in shapes]
    buffers = [randn(shapes[0], generator=generator, dtype=dtype, device=device)] + [None] * (n - 1)
    return params, grads, buffers


def sgd_call(params, grads, buffers, **kwargs):
    options = dict(lr=0.1, momentum=0.9) | kwargs
    return lambda: fused_linreg.sgd_(params, grads, buffers, **options), [params, grads, buffers]


# --- linear -----------------------------------------------------------------------------

@case(RuntimeError, r"fused_linreg\.linear: x has 3 features")
def linear_in_features_mismatch(device, g):
    x, w = randn((4, 3), generator=g, device=device), randn((2, 5), generator=g, device=device)
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear: weight must be 2-D")
def linear_weight_3d(device, g):
    x, w = randn((4, 3), generator=g, device=device), randn((2, 3, 1), generator=g, device=device)
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear: bias")
def linear_bias_wrong_length(device, g):
    x, w, b = (randn(s, generator=g, device=device) for s in [(4, 3), (2, 3), (3,)])
    return lambda: fused_linreg.linear(x, w, b), [x, w, b]


@case(RuntimeError, r"fused_linreg\.linear: bias must have shape")
def linear_op_bias_wrong_length(device, g):
    x, w, b = (randn(s, generator=g, device=device) for s in [(4, 3), (2, 3), (3,)])
    return lambda: ops.linear(x, w, b), [x, w, b]


@case(RuntimeError, r"fused_linreg\.linear: weight has dtype")
def linear_dtype_mix(device, g):
    x, w = randn((4, 3), generator=g, device=device), randn((2, 3), generator=g, dtype=torch.float64, device=device)
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear: bias has dtype")
def linear_bias_dtype_mix(device, g):
    x, w = randn((4, 3), generator=g, device=device), randn((2, 3), generator=g, device=device)
    b = randn((2,), generator=g, dtype=torch.float16, device=device)
    return lambda: fused_linreg.linear(x, w, b), [x, w, b]


@case(RuntimeError, r"fused_linreg\.linear: x must be float64, float32, float16 or bfloat16")
def linear_integer_tensors(device, g):
    x, w = (torch.randint(-5, 5, s, generator=g).to(device) for s in [(4, 3), (2, 3)])
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear: x must have at least 1 dimension")
def linear_0d_x(device, g):
    x, w = randn((), generator=g, device=device), randn((2, 1), generator=g, device=device)
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear: x must be a dense")
def linear_sparse_x(device, g):
    x, w = randn((4, 3), generator=g, device=device).to_sparse(), randn((2, 3), generator=g, device=device)
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear_backward_input: grad_out must have shape")
def linear_backward_input_grad_shape(device, g):
    grad_out, w = randn((4, 3), generator=g, device=device), randn((2, 5), generator=g, device=device)
    return lambda: ops.linear_backward_input(grad_out, w), [grad_out, w]


@case(RuntimeError, r"fused_linreg\.linear_backward_params: grad_out .* and x .* must share")
def linear_backward_params_rows_mismatch(device, g):
    grad_out, x = randn((4, 2), generator=g, device=device), randn((5, 3), generator=g, device=device)
    return lambda: ops.linear_backward_params(grad_out, x), [grad_out, x]


# --- losses -----------------------------------------------------------------------------

@case(RuntimeError, r"fused_linreg\.squared_loss: target has 5 elements")
def squared_loss_element_count_mismatch(device, g):
    input, target = randn((4, 1), generator=g, device=device), randn((5,), generator=g, device=device)
    return lambda: fused_linreg.squared_loss(input, target), [input, target]


@case(RuntimeError, r"must match the size of tensor b")  # F.mse_loss's own error
def mse_loss_shapes_do_not_broadcast(device, g):
    input, target = randn((3, 2), generator=g, device=device), randn((3, 4), generator=g, device=device)

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the size warning comes first, as in F.mse_loss
            fused_linreg.mse_loss(input, target)
    return call, [input, target]


@case(RuntimeError, r"fused_linreg\.mse_loss: target has shape")
def mse_loss_op_shape_mismatch(device, g):
    input, target = randn((3, 1), generator=g, device=device), randn((3,), generator=g, device=device)
    return lambda: ops.mse_loss(input, target, "mean"), [input, target]


@case(ValueError, r"avg is not a valid value for reduction")  # F.mse_loss's own error
def mse_loss_bad_reduction(device, g):
    input, target = (randn((3,), generator=g, device=device) for _ in range(2))
    return lambda: fused_linreg.mse_loss(input, target, reduction="avg"), [input, target]


@case(ValueError, r"elementwise is not a valid value for reduction")
def squared_loss_bad_reduction(device, g):
    input, target = (randn((3,), generator=g, device=device) for _ in range(2))
    return lambda: fused_linreg.squared_loss(input, target, reduction="elementwise"), [input, target]


@case(RuntimeError, r"fused_linreg\.squared_loss: reduction must be 'none', 'sum' or 'mean', got 'avg'")
def squared_loss_op_bad_reduction(device, g):
    input, target = (randn((3,), generator=g, device=device) for _ in range(2))
    return lambda: ops.squared_loss(input, target, "avg"), [input, target]


@case(RuntimeError, r"fused_linreg\.mse_loss_backward: reduction must be")
def mse_loss_backward_op_bad_reduction(device, g):
    grad, input, target = (randn((3,), generator=g, device=device) for _ in range(3))
    return lambda: ops.mse_loss_backward(grad, input, target, "avg"), [grad, input, target]


@case(RuntimeError, r"fused_linreg\.mse_loss: input must be float64, float32, float16 or bfloat16")
def mse_loss_integer_tensors(device, g):
    input, target = (torch.randint(-5, 5, (4,), generator=g).to(device) for _ in range(2))
    return lambda: fused_linreg.mse_loss(input, target), [input, target]


@case(RuntimeError, r"fused_linreg\.squared_loss: target has dtype")
def squared_loss_op_dtype_mix(device, g):
    input, target = randn((4,), generator=g, device=device), randn((4,), generator=g, dtype=torch.float64,
                                                                      device=device)
    return lambda: ops.squared_loss(input, target, "sum"), [input, target]


@case(RuntimeError, r"fused_linreg\.squared_loss_backward: grad_output must have one element")
def squared_loss_backward_grad_shape(device, g):
    grad, input, target = (randn((3,), generator=g, device=device) for _ in range(3))
    return lambda: ops.squared_loss_backward(grad, input, target, "sum"), [grad, input, target]


@case(RuntimeError, r"fused_linreg\.mse_loss_backward: grad_output has shape")
def mse_loss_backward_grad_shape(device, g):
    grad, input, target = randn((2,), generator=g, device=device), *(randn((3,), generator=g, device=device)
                                                                    for _ in range(2))
    return lambda: ops.mse_loss_backward(grad, input, target, "none"), [grad, input, target]


# --- in-place ops on leaves that require grad, while autograd records ------------------------

@case(RuntimeError, r"fused_linreg\.sgd_: params is a leaf tensor that requires grad")
def sgd_op_on_grad_leaf(device, g):
    params, grads, _ = sgd_lists(device, g)
    for p in params:
        p.requires_grad_()
    return lambda: ops.sgd_(params, grads, [], [], lr=0.1), [params, grads]


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight is a leaf tensor that requires grad")
def linreg_step_op_on_grad_leaf(device, g):
    X, y = randn((8, 3), generator=g, device=device), randn((8,), generator=g, device=device)
    w, b = randn((1, 3), generator=g, device=device).requires_grad_(), randn((1,), generator=g, device=device)
    return lambda: ops.linreg_step_(X, y, w, b, None, None, False, lr=0.1), [X, y, w, b]


# --- sgd_: the bad entry is the last one, so a kernel that wrote the others first fails ---

@case(RuntimeError, r"fused_linreg\.sgd_: grads\[2\] .* must match params\[2\]")
def sgd_grad_shape_mismatch(device, g):
    params, grads, buffers = sgd_lists(device, g)
    grads[2] = randn((4,), generator=g, device=device)
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[2\] .* must match params\[2\]")
def sgd_grad_dtype_mismatch(device, g):
    params, grads, buffers = sgd_lists(device, g)
    grads[2] = grads[2].double()
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[2\] must be dense")
def sgd_sparse_grad(device, g):
    params, grads, buffers = sgd_lists(device, g)
    grads[2] = grads[2].to_sparse()
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: params\[2\] has elements that share memory")
def sgd_expanded_param(device, g):
    params, grads, buffers = sgd_lists(device, g)
    params[2] = randn((2, 1), generator=g, device=device).expand(2, 2)
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[0\] .* must match params\[0\]")
def sgd_buffer_shape_mismatch(device, g):
    params, grads, buffers = sgd_lists(device, g)
    buffers[0] = randn((3, 4), generator=g, device=device)
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: grads has 2 entries but params has 3")
def sgd_grads_list_too_short(device, g):
    params, grads, buffers = sgd_lists(device, g)
    return sgd_call(params, grads[:2], buffers)


@case(ValueError, r"fused_linreg\.sgd_: momentum_buffers has 2 entries but params has 3")
def sgd_buffers_list_too_short(device, g):
    params, grads, buffers = sgd_lists(device, g)
    return sgd_call(params, grads, buffers[:2])


@case(RuntimeError, r"fused_linreg\.sgd_: params\[0\] must be a dense floating-point tensor")
def sgd_integer_params(device, g):
    params = [torch.randint(-5, 5, (4,), generator=g).to(device)]
    grads = [torch.randint(-5, 5, (4,), generator=g).to(device)]
    return sgd_call(params, grads, [None])


@case(RuntimeError, r"fused_linreg\.sgd_: lr must be finite and >= 0, got -0\.1")
def sgd_negative_lr(device, g):
    return sgd_call(*sgd_lists(device, g), lr=-0.1)


@case(RuntimeError, r"fused_linreg\.sgd_: lr must be finite and >= 0, got nan")
def sgd_nan_lr(device, g):
    return sgd_call(*sgd_lists(device, g), lr=float("nan"))


@case(RuntimeError, r"fused_linreg\.sgd_: lr must be finite and >= 0, got inf")
def sgd_inf_lr(device, g):
    return sgd_call(*sgd_lists(device, g), lr=float("inf"))


@case(RuntimeError, r"fused_linreg\.sgd_: lr must be finite and >= 0")
def sgd_negative_tensor_lr(device, g):
    if device == "cuda":
        pytest.skip("a CUDA tensor lr is read on the device without a host sync, so its value is not checked")
    return sgd_call(*sgd_lists(device, g), lr=torch.tensor(-0.5, device=device))


@case(RuntimeError, r"fused_linreg\.sgd_: lr must have one element")
def sgd_tensor_lr_of_two_elements(device, g):
    return sgd_call(*sgd_lists(device, g), lr=torch.tensor([0.1, 0.2], device=device))


@case(RuntimeError, r"fused_linreg\.sgd_: momentum must be finite and >= 0")
def sgd_negative_momentum(device, g):
    return sgd_call(*sgd_lists(device, g), momentum=-0.9)


@case(RuntimeError, r"fused_linreg\.sgd_: momentum must be finite and >= 0, got inf")
def sgd_inf_momentum(device, g):
    return sgd_call(*sgd_lists(device, g), momentum=float("inf"))


@case(RuntimeError, r"fused_linreg\.sgd_: weight_decay must be finite and >= 0, got nan")
def sgd_nan_weight_decay(device, g):
    return sgd_call(*sgd_lists(device, g), weight_decay=float("nan"))


@case(RuntimeError, r"fused_linreg\.sgd_: dampening must be finite")
def sgd_nan_dampening(device, g):
    return sgd_call(*sgd_lists(device, g), dampening=float("nan"))


@case(RuntimeError, r"fused_linreg\.sgd_: nesterov requires momentum > 0 and dampening == 0")
def sgd_nesterov_without_momentum(device, g):
    return sgd_call(*sgd_lists(device, g), momentum=0.0, nesterov=True)


@case(RuntimeError, r"fused_linreg\.sgd_: nesterov requires momentum > 0 and dampening == 0")
def sgd_nesterov_with_dampening(device, g):
    return sgd_call(*sgd_lists(device, g), dampening=0.1, nesterov=True)


@case(RuntimeError, r"fused_linreg\.sgd_: grad_scale must have one element")
def sgd_grad_scale_of_two_elements(device, g):
    return sgd_call(*sgd_lists(device, g), grad_scale=torch.tensor([2.0, 2.0], device=device))


@case(RuntimeError, r"fused_linreg\.sgd_: found_inf must be float64, float32, float16 or bfloat16")
def sgd_integer_found_inf(device, g):
    return sgd_call(*sgd_lists(device, g), found_inf=torch.tensor(0, device=device))


# --- sgd_: aliasing. The kernel updates params and momentum buffers (and grads, with
# grad_scale) chunk by chunk across threads, non-contiguous ones through temporaries copied
# back: a written tensor that shares memory with another argument would end up with
# whichever write came last. The overlap is always in the last entries, as above.

@case(RuntimeError, r"fused_linreg\.sgd_: params\[2\] shares memory with params\[0\]")
def sgd_same_param_twice(device, g):
    params, grads, buffers = sgd_lists(device, g)
    params[2], grads[2] = params[0], randn((4, 3), generator=g, device=device)
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: params\[1\] shares memory with params\[0\]")
def sgd_params_overlap(device, g):
    base = randn((8,), generator=g, device=device)
    params = [base[:5], base[4:]]  # element 4 is in both
    grads = [randn((5,), generator=g, device=device), randn((4,), generator=g, device=device)]
    return sgd_call(params, grads, [None, None])


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[1\] shares memory with params\[1\]")
def sgd_grad_is_its_param(device, g):
    params, grads, buffers = sgd_lists(device, g)
    grads[1] = params[1]
    return sgd_call(params, grads, buffers, momentum=0.0)


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[2\] shares memory with params\[0\]")
def sgd_grad_is_a_view_of_another_param(device, g):
    params, grads, buffers = sgd_lists(device, g)
    grads[2] = params[0].view(-1)[:4].view(2, 2)
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[1\] shares memory with grads\[0\]")
def sgd_scaled_grads_overlap(device, g):
    """With grad_scale the grads are written (unscaled in place), so they must not overlap."""
    params, grads, buffers = sgd_lists(device, g)
    grads[1] = grads[0].view(-1)[:5]
    return sgd_call(params, grads, buffers, grad_scale=torch.tensor(2.0, device=device))


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[0\] shares memory with params\[0\]")
def sgd_buffer_is_its_param(device, g):
    params, grads, buffers = sgd_lists(device, g)
    buffers[0] = params[0]
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[0\] shares memory with grads\[0\]")
def sgd_buffer_is_its_grad(device, g):
    params, grads, buffers = sgd_lists(device, g)
    buffers[0] = grads[0]
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[1\] shares memory with momentum_buffers\[0\]")
def sgd_buffers_overlap(device, g):
    params, grads, buffers = sgd_lists(device, g)
    buffers[1] = buffers[0].view(-1)[:5]
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[2\] shares memory with grads\[1\]")
def sgd_tensor_lr_buffer_is_another_grad(device, g):
    """The tensor-lr overload checks the same."""
    params, grads, buffers = sgd_lists(device, g)
    buffers[2] = grads[1][:4].view(2, 2)
    return sgd_call(params, grads, buffers, lr=torch.tensor(0.1, device=device))


# Strided views of one buffer: overlap is an element in both, decided exactly (torch's own
# test gives up on views that are not dense and lets them through).

@case(RuntimeError, r"fused_linreg\.sgd_: params\[1\] shares memory with params\[0\]")
def sgd_same_interleaved_view_twice(device, g):
    base = randn((12,), generator=g, device=device)
    grads = [randn((6,), generator=g, device=device) for _ in range(2)]
    return sgd_call([base[0::2], base[0::2]], grads, [None, None])


@case(RuntimeError, r"fused_linreg\.sgd_: params\[1\] shares memory with params\[0\]")
def sgd_overlapping_columns(device, g):
    base = randn((4, 4), generator=g, device=device)
    grads = [randn((4, 2), generator=g, device=device) for _ in range(2)]
    return sgd_call([base[:, 0:2], base[:, 1:3]], grads, [None, None])


@case(RuntimeError, r"fused_linreg\.sgd_: params\[1\] shares memory with params\[0\]")
def sgd_param_and_its_transpose(device, g):
    base = randn((3, 3), generator=g, device=device)
    grads = [randn((3, 3), generator=g, device=device) for _ in range(2)]
    return sgd_call([base, base.t()], grads, [None, None])


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[1\] shares memory with params\[0\]")
def sgd_buffer_is_a_column_of_a_param(device, g):
    base = randn((5, 4), generator=g, device=device)
    params = [base[:, 0:3], randn((5,), generator=g, device=device)]
    grads = [randn((5, 3), generator=g, device=device), randn((5,), generator=g, device=device)]
    return sgd_call(params, grads, [None, base[:, 2]])  # column 2 is the last of params[0]


@case(RuntimeError, r"fused_linreg\.sgd_: params\[0\] has elements that share memory")
def sgd_self_overlapping_strides(device, g):
    params, grads, buffers = sgd_lists(device, g)
    params[0] = randn((12,), generator=g, device=device).as_strided((4, 3), (1, 1))
    return sgd_call(params, grads, buffers)


# An inference tensor updated outside inference mode: torch's in-place ops refuse it; ours
# must refuse it before the kernel writes (the version-counter bump that torch refuses
# comes after the kernel).

@case(RuntimeError, r"fused_linreg\.sgd_: params\[1\] is an inference tensor")
def sgd_inference_param(device, g):
    params, grads, buffers = sgd_lists(device, g)
    with torch.inference_mode():
        params[1] = params[1].clone()
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[0\] is an inference tensor")
def sgd_inference_buffer(device, g):
    params, grads, buffers = sgd_lists(device, g)
    with torch.inference_mode():
        buffers[0] = buffers[0].clone()
    return sgd_call(params, grads, buffers)


# A written tensor that is expanded (stride 0) cannot be written in place: the temporary
# it is updated in could not be copied back, and that copy would fail after the update.

@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[0\] has elements that share memory")
def sgd_expanded_buffer(device, g):
    params, grads, buffers = sgd_lists(device, g)
    buffers[0] = randn((1, 3), generator=g, device=device).expand(4, 3)
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[1\] has elements that share memory")
def sgd_expanded_grad_with_grad_scale(device, g):
    """With grad_scale the grads are unscaled in place; without it an expanded grad is fine."""
    params, grads, buffers = sgd_lists(device, g)
    grads[1] = randn((1,), generator=g, device=device).expand(5)
    return sgd_call(params, grads, buffers, grad_scale=torch.tensor(2.0, device=device))


# --- optim.SGD ----------------------------------------------------------------------------

@case(RuntimeError, r"fused_linreg\.optim\.SGD does not support sparse gradients")
def optim_sgd_sparse_grad(device, g):
    params = [randn(s, generator=g, device=device, requires_grad=True) for s in [(4, 3), (5,)]]
    optimizer = SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1, momentum=0.9)
    params[0].grad = randn((4, 3), generator=g, device=device)
    params[1].grad = randn((5,), generator=g, device=device).to_sparse()
    return optimizer.step, [params, [p.grad for p in params]]


def optim_with_grads(device, g, params, **options):
    """An optim.SGD over `params`, each given a random grad; tracked: params, grads and state."""
    optimizer = SGD(params, lr=0.1, **options)
    for p in params:
        p.grad = randn(p.shape, generator=g, device=device)
    return optimizer, [params, [p.grad for p in params], optimizer.state]


@case(RuntimeError, r"fused_linreg\.sgd_: params\[1\] shares memory with params\[0\]")
def optim_sgd_params_share_storage(device, g):
    """Two Parameter objects over one tensor: torch.optim.SGD would update it twice."""
    data = randn((4, 3), generator=g, device=device)
    optimizer, tracked = optim_with_grads(device, g, [torch.nn.Parameter(data), torch.nn.Parameter(data)],
                                          momentum=0.9)
    return optimizer.step, tracked


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[0\] shares memory with params\[0\]")
def optim_sgd_grad_is_its_param(device, g):
    p = torch.nn.Parameter(randn((4, 3), generator=g, device=device))
    optimizer = SGD([p], lr=0.1)
    p.grad = p.detach()  # torch refuses `p.grad = p` itself, not a detached alias
    return optimizer.step, [p, optimizer.state]


@case(RuntimeError, r"fused_linreg\.sgd_: momentum_buffers\[1\] shares memory with grads\[1\]")
def optim_sgd_buffer_is_its_grad(device, g):
    params = [torch.nn.Parameter(randn(s, generator=g, device=device)) for s in [(4, 3), (5,)]]
    optimizer, tracked = optim_with_grads(device, g, params, momentum=0.9)
    optimizer.state[params[1]]["momentum_buffer"] = params[1].grad
    return optimizer.step, tracked


# --- device mix: one tensor on the GPU, one on the CPU -----------------------------------

@case(RuntimeError, r"fused_linreg\.linear: weight is on cpu but x is on cuda", cases=CUDA_CASES)
def linear_weight_on_cpu(g):
    x, w = randn((4, 3), generator=g, device="cuda"), randn((2, 3), generator=g)
    return lambda: fused_linreg.linear(x, w), [x, w]


@case(RuntimeError, r"fused_linreg\.linear: bias is on cpu but x is on cuda", cases=CUDA_CASES)
def linear_bias_on_cpu(g):
    x, w = randn((4, 3), generator=g, device="cuda"), randn((2, 3), generator=g, device="cuda")
    b = randn((2,), generator=g)
    return lambda: fused_linreg.linear(x, w, b), [x, w, b]


@case(RuntimeError, r"fused_linreg\.mse_loss: target is on cpu but input is on cuda", cases=CUDA_CASES)
def mse_loss_target_on_cpu(g):
    input, target = randn((4,), generator=g, device="cuda"), randn((4,), generator=g)
    return lambda: fused_linreg.mse_loss(input, target), [input, target]


@case(RuntimeError, r"fused_linreg\.squared_loss: target is on cpu but input is on cuda", cases=CUDA_CASES)
def squared_loss_target_on_cpu(g):
    input, target = randn((4, 1), generator=g, device="cuda"), randn((4,), generator=g)
    return lambda: fused_linreg.squared_loss(input, target), [input, target]


@case(RuntimeError, r"fused_linreg\.sgd_: grads\[2\] .* must match params\[2\]", cases=CUDA_CASES)
def sgd_grad_on_cpu(g):
    params, grads, buffers = sgd_lists("cuda", g)
    grads[2] = grads[2].cpu()
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: params\[2\] is on cpu but params\[0\] is on cuda", cases=CUDA_CASES)
def sgd_params_on_two_devices(g):
    params, grads, buffers = sgd_lists("cuda", g)
    params[2], grads[2] = params[2].cpu(), grads[2].cpu()
    return sgd_call(params, grads, buffers)


@case(RuntimeError, r"fused_linreg\.sgd_: found_inf is on cpu but params are on cuda", cases=CUDA_CASES)
def sgd_found_inf_on_cpu(g):
    return sgd_call(*sgd_lists("cuda", g), found_inf=torch.tensor(0.0))
