"""Bad inputs of the fused linear-regression ops linreg_step_, linreg_grad and linreg_epoch_,
registered in bad_input_cases.py's registry (test_bad_input.py runs them): every tensor of
the call, the state dict's momentum buffers and the indices included, must be left untouched."""

import torch

import fused_linreg
from fused_linreg.fused_step import BIAS_BUFFER, WEIGHT_BUFFER

from bad_input_cases import CUDA_CASES, case
from conftest import LR, MOMENTUM, make_problem


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


@case(RuntimeError, r"fused_linreg\.linreg_step_: y must have shape \(12, 2\)")
def linreg_step_y_too_many_outputs(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, torch.cat([y, y], dim=1), weight, bias)


@case(RuntimeError, r"fused_linreg\.linreg_step_: y must have shape \(12, 2\) to match")
def linreg_step_y_1d_for_two_outputs(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y[:, 0].contiguous(), weight, bias, state=trained_state(X, y, weight, bias), **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: y must have shape")
def linreg_epoch_y_too_few_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y[:11], weight, bias)


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight must have shape \(k, 3\)")
def linreg_step_weight_wrong_features(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, torch.cat([weight, weight], dim=1), bias)


@case(RuntimeError, r"fused_linreg\.linreg_grad: weight must have shape \(k, 3\)")
def linreg_grad_weight_1d(device, g):
    X, y, weight, bias = problem(device, g)
    w = weight[0].contiguous()
    return lambda: fused_linreg.linreg_grad(X, y, w, bias), [X, y, w, bias]


@case(RuntimeError, r"fused_linreg\.linreg_step_: bias must have shape \(2,\)")
def linreg_step_bias_wrong_length(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, torch.cat([bias, bias]), state={}, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_step_: y has dtype Double but X has dtype Float")
def linreg_step_y_dtype_mix(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y.double(), weight, bias)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: weight has dtype Half but X has dtype Float")
def linreg_epoch_weight_dtype_mix(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight.half(), bias)


@case(RuntimeError, r"fused_linreg\.linreg_grad: bias has dtype BFloat16 but X has dtype Float")
def linreg_grad_bias_dtype_mix(device, g):
    X, y, weight, bias = problem(device, g)
    b = bias.bfloat16()
    return lambda: fused_linreg.linreg_grad(X, y, weight, b), [X, y, weight, b]


@case(RuntimeError, r"fused_linreg\.linreg_step_: X must be float64, float32, float16 or bfloat16")
def linreg_step_integer_X(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X.round().long(), y, weight, bias)


@case(RuntimeError, r"fused_linreg\.linreg_step_: X must be 2-D")
def linreg_step_X_3d(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X.unsqueeze(0), y, weight, bias)


@case(RuntimeError, r"fused_linreg\.linreg_step_: X has no rows")
def linreg_step_no_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X[:0], y[:0], weight, bias, state={}, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_grad: X has no rows")
def linreg_grad_no_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return lambda: fused_linreg.linreg_grad(X[:0], y[:0], weight, bias), [weight, bias]


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices is empty")
def linreg_epoch_no_rows(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X[:0], y[:0], weight, bias)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: batch_size must be >= 1, got 0")
def linreg_epoch_batch_size_zero(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, batch_size=0)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices\[9\] = 12 is out of range for X with 12 rows")
def linreg_epoch_index_out_of_range(device, g):
    X, y, weight, bias = problem(device, g)
    indices = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 12], device=device)
    return epoch_call(X, y, weight, bias, state=trained_state(X, y, weight, bias), indices=indices, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices\[5\] = -1 is out of range")
def linreg_epoch_negative_index(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, indices=torch.tensor([0, 1, 2, 3, 4, -1], device=device))


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices\[16\] = 9223372036854775807 is out of range")
def linreg_epoch_largest_index(device, g):
    # Both int64 extremes, after more good indices than one vector of them holds: the first bad one is named.
    X, y, weight, bias = problem(device, g)
    indices = torch.cat([torch.arange(12, device=device), torch.arange(4, device=device),
                         torch.tensor([2**63 - 1, -2**63], device=device)])
    return epoch_call(X, y, weight, bias, indices=indices)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices must be a 1-D int64 tensor, got Int")
def linreg_epoch_int32_indices(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, indices=torch.arange(12, dtype=torch.int32, device=device))


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices must be a 1-D int64 tensor")
def linreg_epoch_2d_indices(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, indices=torch.arange(12, device=device).reshape(3, 4))


@case(RuntimeError, r"fused_linreg\.linreg_step_: lr must be finite and >= 0, got -0\.1")
def linreg_step_negative_lr(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, state={}, lr=-0.1, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: lr must be finite and >= 0, got nan")
def linreg_epoch_nan_lr(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, lr=float("nan"))


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight_decay must be finite and >= 0")
def linreg_step_negative_weight_decay(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, weight_decay=-0.01)


@case(RuntimeError, r"fused_linreg\.linreg_step_: momentum must be finite and >= 0, got -0\.9")
def linreg_step_negative_momentum(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, state={}, momentum=-0.9)


@case(RuntimeError, r"fused_linreg\.linreg_step_: nesterov requires momentum > 0 and dampening == 0")
def linreg_step_nesterov_without_momentum(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, nesterov=True)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: nesterov requires momentum > 0 and dampening == 0")
def linreg_epoch_nesterov_with_dampening(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, state={}, momentum=0.9, dampening=0.1, nesterov=True)


@case(ValueError, r"momentum != 0 needs a state dict")
def linreg_step_momentum_without_state(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight, bias, momentum=0.9)


@case(ValueError, r"momentum != 0 needs a state dict")
def linreg_epoch_momentum_without_state(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, bias, momentum=0.9)


# Aliasing: weight, bias and (with momentum) the buffers are written in place, X, y and
# indices read while they are (the epoch reads later minibatches after earlier updates).
# A written tensor that shares memory with another argument would be silently corrupted.

@case(RuntimeError, r"fused_linreg\.linreg_step_: bias shares memory with weight")
def linreg_step_bias_overlaps_weight(device, g):
    X, y, weight, bias = problem(device, g)
    base = torch.cat([weight.flatten(), bias])
    return step_call(X, y, base[:6].view(2, 3), base[5:7])  # element 5 is in both


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight shares memory with X")
def linreg_step_weight_is_rows_of_X(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, X[:2], bias)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: bias shares memory with y")
def linreg_epoch_bias_is_a_row_of_y(device, g):
    X, y, weight, bias = problem(device, g)
    return epoch_call(X, y, weight, y[3])


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight_momentum shares memory with weight")
def linreg_step_weight_buffer_is_weight(device, g):
    X, y, weight, bias = problem(device, g)
    state = {WEIGHT_BUFFER: weight, BIAS_BUFFER: bias.clone()}
    return step_call(X, y, weight, bias, state=state, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_step_: bias_momentum shares memory with weight_momentum")
def linreg_step_buffers_overlap(device, g):
    X, y, weight, bias = problem(device, g)
    state = trained_state(X, y, weight, bias)
    state[BIAS_BUFFER] = state[WEIGHT_BUFFER].view(-1)[4:6]
    return step_call(X, y, weight, bias, state=state, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: bias_momentum shares memory with X")
def linreg_epoch_bias_buffer_is_in_X(device, g):
    X, y, weight, bias = problem(device, g)
    state = trained_state(X, y, weight, bias)
    state[BIAS_BUFFER] = X[5, :2]
    return epoch_call(X, y, weight, bias, state=state, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_epoch_: weight shares memory with indices")
def linreg_epoch_indices_alias_weight(device, g):
    """Row numbers read through the bits of the weights would change under the update:
    the kernel would read rows that were never range-checked."""
    X, y, _, bias = problem(device, g)
    rows = torch.tensor([3, 1, 4, 1, 5, 9], device=device)
    # The bits of rows[3:], read as float32, are the weights (tiny ones): rows[4:] would
    # change after the first minibatch of 4 rows.
    weight = rows.view(torch.float32)[6:].view(2, 3)
    return epoch_call(X, y, weight, bias, indices=rows)


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight has elements that share memory")
def linreg_step_expanded_weight(device, g):
    X, y, weight, bias = problem(device, g)
    return step_call(X, y, weight[:1].expand(2, 3), bias)


@case(RuntimeError, r"fused_linreg\.linreg_step_: weight_momentum has elements that share memory")
def linreg_step_expanded_weight_buffer(device, g):
    X, y, weight, bias = problem(device, g)
    state = trained_state(X, y, weight, bias)
    state[WEIGHT_BUFFER] = state[WEIGHT_BUFFER][:1].expand(2, 3)
    return step_call(X, y, weight, bias, state=state, **MOMENTUM)


@case(RuntimeError, r"fused_linreg\.linreg_step_: bias is an inference tensor")
def linreg_step_inference_bias(device, g):
    X, y, weight, bias = problem(device, g)
    with torch.inference_mode():
        bias = bias.clone()
    return step_call(X, y, weight, bias)


# --- device mix ----------------------------------------------------------------------------------

@case(RuntimeError, r"fused_linreg\.linreg_epoch_: indices is on cpu but X is on cuda", cases=CUDA_CASES)
def linreg_epoch_indices_on_cpu(g):
    X, y, weight, bias = problem("cuda", g)
    return epoch_call(X, y, weight, bias, indices=torch.arange(12))
