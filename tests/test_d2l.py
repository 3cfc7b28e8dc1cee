"""fused_linreg.d2l against the book's from-scratch PyTorch code (D2L ch. 3.2), same seeds."""

import random

import pytest
import torch

from fused_linreg import d2l

from conftest import assert_close_to_reference, randn


class Book:
    """The book's functions, verbatim in behaviour."""

    @staticmethod
    def synthetic_data(w, b, num_examples):
        X = torch.normal(0, 1, (num_examples, len(w)))
        y = torch.matmul(X, w) + b
        y += torch.normal(0, 0.01, y.shape)
        return X, y.reshape((-1, 1))

    @staticmethod
    def data_iter(batch_size, features, labels):
        num_examples = len(features)
        indices = list(range(num_examples))
        random.shuffle(indices)
        for i in range(0, num_examples, batch_size):
            batch_indices = torch.tensor(indices[i: min(i + batch_size, num_examples)])
            yield features[batch_indices], labels[batch_indices]

    @staticmethod
    def linreg(X, w, b):
        return torch.matmul(X, w) + b

    @staticmethod
    def squared_loss(y_hat, y):
        return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2

    @staticmethod
    def sgd(params, lr, batch_size):
        with torch.no_grad():
            for param in params:
                param -= lr * param.grad / batch_size
                param.grad.zero_()


def train_like_the_book(lib, seed=0):
    """The book's training loop, unchanged, with the functions of `lib`."""
    torch.manual_seed(seed)
    random.seed(seed)
    true_w = torch.tensor([2, -3.4])
    true_b = 4.2
    features, labels = lib.synthetic_data(true_w, true_b, 1000)
    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lr, num_epochs, batch_size = 0.03, 3, 10
    net, loss = lib.linreg, lib.squared_loss
    epoch_losses = []
    for _ in range(num_epochs):
        for X, y in lib.data_iter(batch_size, features, labels):
            l = loss(net(X, w, b), y)  # noqa: E741  (the book's name)
            l.sum().backward()
            lib.sgd([w, b], lr, batch_size)
        with torch.no_grad():
            epoch_losses.append(loss(net(features, w, b), labels).mean())
    return w, b, epoch_losses


def test_book_training_loop_ends_with_the_same_w_and_b():
    w, b, losses = train_like_the_book(d2l)
    expected_w, expected_b, expected_losses = train_like_the_book(Book)
    torch.testing.assert_close(w, expected_w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, expected_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected_losses), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.detach().reshape(-1), torch.tensor([2, -3.4]), atol=2e-3, rtol=0)
    assert abs(b.item() - 4.2) < 2e-3


def test_synthetic_data_draws_the_book_data():
    torch.manual_seed(3)
    X, y = d2l.synthetic_data(torch.tensor([1.5, -2.0, 0.5]), 0.7, 50)
    torch.manual_seed(3)
    expected_X, expected_y = Book.synthetic_data(torch.tensor([1.5, -2.0, 0.5]), 0.7, 50)
    assert X.shape == (50, 3) and y.shape == (50, 1)
    assert torch.equal(X, expected_X)
    torch.testing.assert_close(y, expected_y)


@pytest.mark.parametrize("batch_size", [1, 10, 7, 64])
def test_data_iter_yields_the_book_batches(batch_size, generator):
    features, labels = randn((30, 2), generator=generator), randn((30, 1), generator=generator)
    random.seed(5)
    batches = list(d2l.data_iter(batch_size, features, labels))
    random.seed(5)
    expected = list(Book.data_iter(batch_size, features, labels))
    assert len(batches) == len(expected)
    for (X, y), (expected_X, expected_y) in zip(batches, expected):
        assert torch.equal(X, expected_X) and torch.equal(y, expected_y)


def test_linreg_and_squared_loss_are_the_book_functions(device, generator):
    X = randn((9, 2), generator=generator, dtype=torch.float64, device=device)
    w = randn((2, 1), generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    b = randn((1,), generator=generator, dtype=torch.float64, device=device, requires_grad=True)
    y = randn((9,), generator=generator, dtype=torch.float64, device=device)
    loss = d2l.squared_loss(d2l.linreg(X, w, b), y)
    expected = Book.squared_loss(Book.linreg(X, w, b), y)
    assert_close_to_reference(loss, expected)
    (grad_w, grad_b), (expected_grad_w, expected_grad_b) = (torch.autograd.grad(value.sum(), [w, b])
                                                            for value in (loss, expected))
    assert_close_to_reference(grad_w, expected_grad_w)
    assert_close_to_reference(grad_b, expected_grad_b)


def test_sgd_updates_and_zeroes_the_grads(device, generator):
    params = [randn(s, generator=generator, dtype=torch.float64, device=device, requires_grad=True)
              for s in [(2, 1), (1,)]]
    expected = [p.detach().clone().requires_grad_() for p in params]
    for p, q in zip(params, expected):
        p.grad = randn(p.shape, generator=generator, dtype=torch.float64, device=device)
        q.grad = p.grad.clone()
    d2l.sgd(params, 0.03, 10)
    Book.sgd(expected, 0.03, 10)
    for p, q in zip(params, expected):
        assert_close_to_reference(p, q)
        assert torch.equal(p.grad, torch.zeros_like(p))
