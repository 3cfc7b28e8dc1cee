"""The from-scratch linear regression functions of *Dive into Deep Learning* (ch. 3.2),
with the book's signatures, computed by the fused operators.

The book's training loop runs unchanged with them::

    from fused_linreg.d2l import synthetic_data, data_iter, linreg, squared_loss, sgd

    true_w, true_b = torch.tensor([2, -3.4]), 4.2
    features, labels = synthetic_data(true_w, true_b, 1000)
    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for epoch in range(3):
        for X, y in data_iter(10, features, labels):
            l = squared_loss(linreg(X, w, b), y)
            l.sum().backward()
            sgd([w, b], 0.03, 10)

Random numbers are drawn by the same calls in the same order as the book's
PyTorch code, so a seeded run gives the book's data and batches.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from . import functional
from ._checks import number, tensor, tensor_list, type_name

__all__ = ["synthetic_data", "data_iter", "linreg", "squared_loss", "sgd"]


def _integer(op: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"fused_linreg.{op}: {name} must be an int, got {type_name(value)}")
    return value


def synthetic_data(w: Tensor, b: float | Tensor, num_examples: int) -> tuple[Tensor, Tensor]:
    """Generates ``y = Xw + b + noise``.

    Args:
        w: true weights, shape ``(d,)``.
        b: true bias, a scalar.
        num_examples: number of examples ``n``.

    Returns:
        ``X`` of shape ``(n, d)`` drawn from N(0, 1), and ``y`` of shape ``(n, 1)``
        with Gaussian noise of standard deviation 0.01.
    """
    tensor("d2l.synthetic_data", "w", w)
    _integer("d2l.synthetic_data", "num_examples", num_examples)
    X = torch.normal(0, 1, (num_examples, len(w)))
    # A vector w is F.linear's 1-D weight: y = X @ w, of shape (n,), as torch.matmul gives.
    y = functional.linear(X, w.t()) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def data_iter(batch_size: int, features: Tensor, labels: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """Yields minibatches ``(features[idx], labels[idx])`` of ``batch_size`` examples
    (the last one may be smaller) in a random order drawn with ``random.shuffle``.

    Shapes: features ``(n, d)``, labels ``(n, 1)`` -> ``(batch, d)``, ``(batch, 1)``.
    """
    _integer("d2l.data_iter", "batch_size", batch_size)
    tensor("d2l.data_iter", "features", features)
    tensor("d2l.data_iter", "labels", labels)
    num_examples = len(features)
    indices = list(range(num_examples))
    random.shuffle(indices)
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def linreg(X: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The linear regression model ``X @ w + b``.

    Shapes: X ``(n, d)``, w ``(d, 1)``, b ``(1,)`` -> ``(n, 1)``.
    """
    # Our linear computes X @ weight.T: the book's column vector w is weight.T.
    tensor("d2l.linreg", "X", X)
    return functional.linear(X, tensor("d2l.linreg", "w", w).t(), b)


def squared_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    """The squared loss ``(y_hat - y.reshape(y_hat.shape)) ** 2 / 2``, per example.

    Shapes: y_hat ``(n, 1)``, y with ``n`` elements -> ``(n, 1)``.
    """
    return functional.squared_loss(y_hat, y, reduction="none")


def sgd(params: Iterable[Tensor], lr: float, batch_size: int) -> None:
    """Minibatch SGD: ``param -= lr * param.grad / batch_size``, then zeroes the gradients.

    All ``params`` are updated by one fused kernel launch (they must share a device).
    """
    params = tensor_list("d2l.sgd", "params", params)
    grads = tensor_list("d2l.sgd", "grads", (p.grad for p in params),
                        missing="params[{i}] has no gradient: call backward() first")
    # lr / batch_size folds the book's two scalings into the kernel's single lr.
    functional.sgd_(params, grads, [], lr=number("d2l.sgd", "lr", lr) / number("d2l.sgd", "batch_size", batch_size))
    for g in grads:
        g.zero_()
