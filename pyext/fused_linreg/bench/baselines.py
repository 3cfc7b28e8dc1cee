"""The baselines written out here: the book's code (*Dive into Deep Learning* ch. 3.2,
its ``linreg``, ``squared_loss`` and ``sgd``; its ``data_iter`` is the library's own
:func:`fused_linreg.d2l.data_iter`), the book's loop, the idiomatic ``nn`` + ``optim``
loop, and a step with the gradients derived by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import cast

import torch
from torch import Tensor

from fused_linreg.d2l import data_iter

from .cases import BOOK_LR

__all__ = ["book_epoch", "book_linreg", "book_loss_sum", "book_sgd", "book_squared_loss", "book_squared_loss_sum",
           "compiled_step_epoch", "hand_derived_step", "module_epoch"]


def book_linreg(X: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The book's model: ``X @ w + b`` with ``w`` a ``(d, k)`` column."""
    return torch.matmul(X, w) + b


def book_squared_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    """The book's per-example loss."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def book_sgd(params: Sequence[Tensor], lr: float, batch_size: int) -> None:
    """The book's minibatch SGD: one eager update and one ``zero_`` per parameter."""
    with torch.no_grad():
        for param in params:
            grad = cast(Tensor, param.grad)
            param -= lr * grad / batch_size
            grad.zero_()


def book_loss_sum(X: Tensor, y: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The book's forward and loss, summed as its training loop does (compiled in the step suite)."""
    return book_squared_loss(book_linreg(X, w, b), y).sum()


def book_squared_loss_sum(y_hat: Tensor, y: Tensor) -> Tensor:
    """The book's loss summed (compiled in the loss suite)."""
    return book_squared_loss(y_hat, y).sum()


def hand_derived_step(X: Tensor, y: Tensor, w: Tensor, b: Tensor, lr: float) -> Tensor:
    """One step with the gradients written out by hand (no autograd): two passes over ``X``.

    ``w`` is ``(k, d)``, ``b`` ``(k,)``, ``y`` ``(n, k)``; the loss is the book's
    ``(1/n) sum_i ½‖r_i‖²``. This is what the fused step computes in one pass."""
    r = X @ w.t() + b - y
    n = X.shape[0]
    w.sub_(lr * (r.t() @ X) / n)
    b.sub_(lr * r.sum(0) / n)
    return (r * r).sum() / (2 * n)


def book_epoch(features: Tensor, labels: Tensor, w: Tensor, b: Tensor, batch_size: int,
               data_iter: Callable[..., Iterator[tuple[Tensor, Tensor]]], net: Callable[..., Tensor],
               loss: Callable[..., Tensor], sgd: Callable[..., None]) -> None:
    """The book's training loop for one epoch, with the functions it is given."""
    for X, y in data_iter(batch_size, features, labels):
        loss(net(X, w, b), y).sum().backward()
        sgd([w, b], BOOK_LR, batch_size)


def module_epoch(features: Tensor, labels: Tensor, model: torch.nn.Module, loss_fn: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, batch_size: int) -> None:
    """One epoch of the idiomatic ``nn`` + ``optim`` loop over the book's minibatches."""
    for X, y in data_iter(batch_size, features, labels):
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()


def compiled_step_epoch(step: Callable[..., object], features: Tensor, labels: Tensor, w: Tensor, b: Tensor,
                        batch_size: int) -> None:
    """One epoch of a (compiled) step function over a random permutation's minibatches."""
    order = torch.randperm(len(features), device=features.device)
    for start in range(0, len(features), batch_size):
        idx = order[start : start + batch_size]
        step(features[idx], labels[idx], w, b, BOOK_LR)
