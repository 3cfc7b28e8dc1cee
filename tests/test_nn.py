"""fused_linreg.nn modules as drop-ins for torch.nn.Linear / MSELoss and the book's loss."""

import pytest
import torch

import fused_linreg

from conftest import assert_close_to_reference, randn


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear_module_is_a_drop_in_for_torch_linear(bias, device, generator):
    torch.manual_seed(7)
    ours = fused_linreg.nn.Linear(6, 3, bias=bias, device=device, dtype=torch.float64)
    torch.manual_seed(7)
    expected = torch.nn.Linear(6, 3, bias=bias, device=device, dtype=torch.float64)
    assert isinstance(ours, torch.nn.Linear)
    assert ours.state_dict().keys() == expected.state_dict().keys()
    for name, value in expected.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), f"{name} is not initialised like torch.nn.Linear"

    x = randn((4, 5, 6), generator=generator, dtype=torch.float64, device=device)
    out, expected_out = ours(x), expected(x)
    grad = randn(out.shape, generator=generator, dtype=torch.float64, device=device)
    out.backward(grad)
    expected_out.backward(grad)
    assert_close_to_reference(out, expected_out)
    for p, q in zip(ours.parameters(), expected.parameters()):
        assert_close_to_reference(p.grad, q.grad)


def test_linear_module_loads_torch_state_dict_and_back(device, generator):
    torch_linear = torch.nn.Linear(5, 2, device=device)
    ours = fused_linreg.nn.Linear(5, 2, device=device)
    ours.load_state_dict(torch_linear.state_dict())
    x = randn((7, 5), generator=generator, device=device)
    assert_close_to_reference(ours(x), torch_linear(x).double())
    round_trip = torch.nn.Linear(5, 2, device=device)
    round_trip.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(round_trip.parameters(), torch_linear.parameters()))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", None])
def test_mse_loss_module_matches_torch(reduction, device, generator):
    kwargs = {} if reduction is None else {"reduction": reduction}
    input = randn((8, 3), generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    target = randn((8, 3), generator=generator, dtype=torch.float64, device=device)
    ours, expected = fused_linreg.nn.MSELoss(**kwargs), torch.nn.MSELoss(**kwargs)
    assert isinstance(ours, torch.nn.MSELoss) and ours.reduction == expected.reduction
    assert_close_to_reference(ours(input, target), expected(input, target))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", None])
def test_squared_loss_module_is_the_book_loss(reduction, device, generator):
    kwargs = {} if reduction is None else {"reduction": reduction}
    y_hat = randn((8, 1), generator=generator, dtype=torch.float64, device=device)
    y = randn((8,), generator=generator, dtype=torch.float64, device=device)
    book = (y_hat - y.reshape(y_hat.shape)) ** 2 / 2
    expected = {None: book, "none": book, "sum": book.sum(), "mean": book.mean()}[reduction]
    assert_close_to_reference(fused_linreg.nn.SquaredLoss(**kwargs)(y_hat, y), expected)
