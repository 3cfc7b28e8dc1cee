"""Trains the book's linear regression (*Dive into Deep Learning* ch. 3.2) with the fused ops.

The data are the book's: 1000 examples of ``y = X @ [2, -3.4] + 4.2 + noise``. The model is
trained twice with the book's hyperparameters (3 epochs, lr 0.03, batch size 10), then solved:

1. with ``fused_linreg.linreg_epoch_``: one call per epoch runs all 100 minibatch steps;
2. with the estimator ``fused_linreg.LinearRegression`` (solver="sgd"), and
3. by its default solver, the normal equations: the exact least-squares answer in one pass.

Each prints its loss and the learned ``w`` and ``b`` next to the true ones.

Run: ``python examples/book_linear_regression.py [--device cuda] [--epochs 3] ...``
"""

from __future__ import annotations

import argparse
import time

import torch

import fused_linreg
from fused_linreg.d2l import synthetic_data

TRUE_W, TRUE_B = torch.tensor([2, -3.4]), 4.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device to train on (default: cpu)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--num-examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the initialisation and the shuffling")
    return parser.parse_args()


def sync(device: torch.device) -> None:
    """Waits for queued CUDA kernels, so that the clock measures them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(w: torch.Tensor, b: torch.Tensor) -> None:
    w, b = w.detach().cpu().reshape(-1), b.detach().cpu().reshape(-1)
    print(f"  learned w: {w.tolist()}, true w: {TRUE_W.tolist()}, error {(TRUE_W - w).tolist()}")
    print(f"  learned b: {b.item():.6f}, true b: {TRUE_B}, error {TRUE_B - b.item():.6f}")


def train_with_epoch_op(features: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> None:
    """The book's loop with each epoch's 100 steps fused into one linreg_epoch_ call."""
    device = features.device
    generator = torch.Generator().manual_seed(args.seed)
    w = torch.normal(0, 0.01, size=(1, features.shape[1]), generator=generator).to(device)
    b = torch.zeros(1, device=device)
    print(f"fused_linreg.linreg_epoch_ ({args.epochs} epochs, lr {args.lr}, batch size {args.batch_size}):")
    elapsed = 0.0
    for epoch in range(args.epochs):
        sync(device)
        start = time.perf_counter()
        fused_linreg.linreg_epoch_(features, labels, w, b, lr=args.lr, batch_size=args.batch_size,
                                   generator=generator)
        sync(device)
        elapsed += time.perf_counter() - start
        # The loss on the whole data set: the book's squared_loss(net(features, w, b), labels).mean().
        train_loss, _, _ = fused_linreg.linreg_grad(features, labels, w, b)
        print(f"  epoch {epoch + 1}, loss {float(train_loss):f}")
    report(w, b)
    print(f"  training time: {elapsed * 1e3:.3f} ms ({elapsed / max(args.epochs, 1) * 1e6:.1f} us per epoch)")


def train_with_estimator(features: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace) -> None:
    # The book's minibatch SGD; tol=None: exactly args.epochs epochs, as the book trains.
    model = fused_linreg.LinearRegression(solver="sgd", lr=args.lr, batch_size=args.batch_size,
                                          max_iter=args.epochs, tol=None, random_state=args.seed)
    sync(features.device)
    start = time.perf_counter()
    model.fit(features, labels)
    sync(features.device)
    elapsed = time.perf_counter() - start
    print(f"fused_linreg.LinearRegression: {model}")
    for epoch, loss in enumerate(model.loss_curve_, start=1):
        print(f"  epoch {epoch}, mean minibatch loss {loss:f}")
    print(f"  coef_ {model.coef_.tolist()}, intercept_ {model.intercept_.tolist()}, "
          f"R² {model.score(features, labels):.6f}")
    report(model.weight_, model.bias_)
    print(f"  fit time: {elapsed * 1e3:.3f} ms")


def solve_with_estimator(features: torch.Tensor, labels: torch.Tensor) -> None:
    # The analytic solution (the book's 解析解): the estimator's default solver, one pass over X.
    sync(features.device)
    start = time.perf_counter()
    model = fused_linreg.LinearRegression().fit(features, labels)
    sync(features.device)
    elapsed = time.perf_counter() - start
    print(f"fused_linreg.LinearRegression() (solver_={model.solver_!r}): loss {model.loss_curve_[0]:f}, "
          f"R² {model.score(features, labels):.6f}")
    report(model.weight_, model.bias_)
    print(f"  fit time: {elapsed * 1e3:.3f} ms")


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    features, labels = synthetic_data(TRUE_W, TRUE_B, args.num_examples)
    device = torch.device(args.device)
    features, labels = features.to(device), labels.to(device)
    train_with_epoch_op(features, labels, args)
    print()
    train_with_estimator(features, labels, args)
    print()
    solve_with_estimator(features, labels)


if __name__ == "__main__":
    main()
