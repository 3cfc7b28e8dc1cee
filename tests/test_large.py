"""Tensors of more than 2**31 elements: every offset the kernels compute must be 64-bit.

* `test_epoch_reads_rows_beyond_2_31_elements` (cheap, always on): X has more than 2**31
  elements but is never filled, so the operating system backs only the few pages that are
  written (allocation is lazy); linreg_epoch_ then trains on rows at its far end, whose
  offsets row * d exceed 2**31. A kernel computing them in 32 bits would read other memory
  (wrong numbers or a crash). linreg_epoch_ is the only op this works for: it reads just the
  rows its indices name. Every other op reads all of its inputs and first makes them
  contiguous, so a view with huge strides or an expanded tensor would be materialised in
  full: for them the only sound test touches more than 2**31 elements.

* The tests marked `large` do that: each op on tensors of 2**31 + 1024 elements (or rows *
  features > 2**31), mostly zeros with known values at the start, just below 2**31 and past
  it, so the exact results are known. They need about 8 GiB each (bfloat16) and run in
  seconds; they are skipped, with the reason, where less memory is available.
  `pytest -m "not large"` leaves them out.
"""

import pytest
import torch

import fused_linreg

from conftest import TOLERANCES, assert_close_to_reference

TWO_31 = 2**31
BIG = TWO_31 + 1024  # elements of the large 1-D tensors: the last 1024 lie past 2**31
DTYPE = torch.bfloat16


def available_gib() -> float:
    """MemAvailable of /proc/meminfo (memory usable without swapping); 0 without /proc/meminfo."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def require_memory(gib: float):
    """Skips the test unless `gib` GiB (plus 1 GiB of headroom) are available."""
    have = available_gib()
    if have < gib + 1:
        pytest.skip(f"needs {gib} GiB + 1 GiB headroom of available memory, {have:.1f} GiB available")


def empty_or_skip(shape, dtype, device):
    """An uninitialised tensor; where the allocation itself is refused (strict overcommit), a skip."""
    try:
        return torch.empty(shape, dtype=dtype, device=device)
    except (RuntimeError, torch.OutOfMemoryError) as error:
        pytest.skip(f"cannot allocate {shape} {dtype}: {error}")


def constant(t: torch.Tensor) -> float:
    """The value of every element of `t` (NaN if they differ), by a reduction that allocates
    nothing of t's size (unlike `t == 0`)."""
    low, high = torch.aminmax(t)
    return low.item() if low.item() == high.item() else float("nan")


def rows_beyond_2_31(generator, d=64):
    """X (n, d) with n * d > 2**31, zero but for its first and last rows (the last starts at
    element 2**31), and those two rows (random, different)."""
    n = TWO_31 // d + 1
    X = torch.zeros((n, d), dtype=DTYPE)
    ends = torch.randn((2, d), generator=generator).to(DTYPE)
    X[0], X[n - 1] = ends[0], ends[1]
    return X, ends


def test_epoch_reads_rows_beyond_2_31_elements(device, generator):
    """linreg_epoch_ on rows whose offsets pass 2**31 equals linreg_epoch_ on a small copy of
    those rows, bit for bit (the same arithmetic in the same order, only the offsets differ;
    the small case is checked against eager PyTorch in test_fused_step)."""
    d = 2**16
    n = TWO_31 // d + 1  # row n - 1 starts at element 2**31
    X = empty_or_skip((n, d), torch.float16, device)  # 4 GiB of address space, almost none touched
    written = [n - 1, 1, n - 2, 0]  # the only rows of X that are ever written or read
    values = torch.randn((len(written), d), generator=generator).div_(d**0.5).to(device=device, dtype=torch.float16)
    X[written] = values
    y = torch.randn((n,), generator=generator).to(device=device, dtype=torch.float16)
    order = [0, 1, 2, 0, 3]  # the epoch's rows as positions in `written`: row n - 1 twice
    start = torch.randn((1, d), generator=generator).div_(d**0.5).to(device=device, dtype=torch.float16)
    hyper = dict(lr=0.1, batch_size=2, momentum=0.9)

    weight, bias, state = start.clone(), torch.zeros(1, dtype=torch.float16, device=device), {}
    losses = fused_linreg.linreg_epoch_(X, y, weight, bias, indices=torch.tensor([written[i] for i in order],
                                                                                 device=device),
                                        state=state, **hyper)
    small_weight, small_bias, small_state = start.clone(), torch.zeros(1, dtype=torch.float16, device=device), {}
    small_losses = fused_linreg.linreg_epoch_(values, y[written], small_weight, small_bias,
                                              indices=torch.tensor(order, device=device), state=small_state, **hyper)
    assert torch.equal(losses, small_losses)
    assert torch.equal(weight, small_weight) and torch.equal(bias, small_bias)
    assert state.keys() == small_state.keys()
    for name, buffer in state.items():
        assert torch.equal(buffer, small_state[name])


@pytest.mark.large
def test_losses_sum_and_mean_over_2_31_elements():
    require_memory(8)
    input, target = torch.zeros(BIG, dtype=DTYPE), torch.zeros(BIG, dtype=DTYPE)
    marked = {0: 4.0, TWO_31 - 1: 4.0}  # and every element from 2**31 on is 1
    for i, value in marked.items():
        input[i] = value
    input[TWO_31:] = 1.0
    sum_of_squares = sum(v * v for v in marked.values()) + (BIG - TWO_31)  # 1056: exact in bfloat16
    # float32 sums of small integers are exact, and so is their bfloat16 rounding here.
    assert fused_linreg.squared_loss(input, target, reduction="sum").item() == 0.5 * sum_of_squares
    assert fused_linreg.mse_loss(input, target, reduction="sum").item() == sum_of_squares
    mean = fused_linreg.mse_loss(input, target)
    # No absolute tolerance: the mean is about 5e-7, far below TOLERANCES' atol.
    torch.testing.assert_close(mean, torch.tensor(sum_of_squares / BIG, dtype=torch.float64).to(DTYPE),
                               rtol=TOLERANCES[DTYPE][0], atol=0)


@pytest.mark.large
def test_sgd_updates_a_parameter_of_2_31_elements():
    """One bfloat16 parameter of 2**31 + 1024 elements, its grad unscaled in place (grad_scale):
    the elements past 2**31 are read and written, and no other element changes."""
    require_memory(8)
    param, grad = torch.zeros(BIG, dtype=DTYPE), torch.zeros(BIG, dtype=DTYPE)
    grad[0], grad[TWO_31 - 1], grad[TWO_31:] = 8.0, 4.0, 2.0
    fused_linreg.sgd_([param], [grad], [], lr=0.5, grad_scale=torch.tensor(2.0))
    # Every value is a power of two: exact in bfloat16. param = -lr * grad / grad_scale.
    for index, unscaled in [(0, 4.0), (TWO_31 - 1, 2.0)]:
        assert grad[index].item() == unscaled and param[index].item() == -0.5 * unscaled
    assert torch.all(grad[TWO_31:] == 1.0) and torch.all(param[TWO_31:] == -0.5)
    assert constant(param[1:TWO_31 - 1]) == 0.0, "an element that should not change did"


@pytest.mark.large
def test_linear_forward_and_backward_over_2_31_elements(generator):
    require_memory(8.5)  # X and grad_x, 4 GiB each
    X, ends = rows_beyond_2_31(generator)
    n, d = X.shape
    weight = torch.randn((1, d), generator=generator).to(DTYPE).requires_grad_()
    bias = torch.full((1,), 0.5, dtype=DTYPE, requires_grad=True)
    X.requires_grad_()
    out = fused_linreg.linear(X, weight, bias)
    assert_close_to_reference(out[[0, -1]], torch.nn.functional.linear(ends.double(), weight.double(), bias.double()))
    assert constant(out[1:-1]) == 0.5, "the zero rows give the bias"

    grad_out = torch.zeros((n, 1), dtype=DTYPE)
    grad_out[0], grad_out[-1] = 1.0, -2.0
    out.backward(grad_out)
    # The zero rows and zero grads contribute nothing: each sum has two terms.
    g_ends = grad_out[[0, -1]].double()
    assert_close_to_reference(weight.grad, g_ends.T @ ends.double())
    assert bias.grad.item() == g_ends.sum().item()  # -1: exact
    # Each element of grad_x is one product of a power of two and a weight: exact.
    assert torch.equal(X.grad[[0, -1]], (g_ends @ weight.double()).to(DTYPE))
    assert constant(X.grad[1:-1]) == 0.0


@pytest.mark.large
def test_linreg_grad_over_2_31_elements(generator):
    require_memory(4.5)
    X, ends = rows_beyond_2_31(generator)
    n = X.shape[0]
    y = torch.zeros(n, dtype=DTYPE)
    y[0], y[-1] = 1.0, -1.0
    weight = torch.randn((1, X.shape[1]), generator=generator).to(DTYPE)
    bias = torch.zeros(1, dtype=DTYPE)  # so the zero rows have residual 0 and contribute nothing
    loss, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, weight, bias)
    residual = ends.double() @ weight.double().T - y[[0, -1]].double().unsqueeze(1)  # (2, 1)
    expected = [(residual**2 / 2).sum() / n, residual.T @ ends.double() / n, residual.sum(0) / n]
    # The results are about 1/n: relative tolerance only (bfloat16's, after float32 sums).
    for got, want in zip([loss, grad_weight, grad_bias], expected):
        torch.testing.assert_close(got.double(), want.to(DTYPE).double(), rtol=TOLERANCES[DTYPE][0], atol=0)
