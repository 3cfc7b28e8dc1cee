"""Trains the book's linear regression (D2L ch. 3.2) with the fused operators.

Run ``python -m fused_linreg.demo [--device cuda] [--epochs 3] ...``: prints the
training loss after each epoch, the learned parameters next to the true ones, and
the wall time of the training loop.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from .d2l import data_iter, linreg, sgd, squared_loss, synthetic_data

__all__ = ["main"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fused_linreg.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device to train on (default: cpu)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--num-examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seeds torch and python's random")
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: wait for them before reading the clock.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    """Runs the book's training loop, unchanged except for the functions it calls."""
    args = _parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    true_w, true_b = torch.tensor([2, -3.4]), 4.2
    features, labels = synthetic_data(true_w, true_b, args.num_examples)
    features, labels = features.to(device), labels.to(device)
    w = torch.normal(0, 0.01, size=(2, 1), device=device, requires_grad=True)
    b = torch.zeros(1, device=device, requires_grad=True)
    net, loss = linreg, squared_loss

    _sync(device)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        for X, y in data_iter(args.batch_size, features, labels):
            l = loss(net(X, w, b), y)  # noqa: E741  (the book's name)
            l.sum().backward()
            sgd([w, b], args.lr, args.batch_size)
        with torch.no_grad():
            train_l = loss(net(features, w, b), labels)
            print(f"epoch {epoch + 1}, loss {float(train_l.mean()):f}")
    _sync(device)
    elapsed = time.perf_counter() - start

    print(f"learned w: {w.detach().reshape(-1).cpu().tolist()}, true w: {true_w.tolist()}")
    print(f"learned b: {b.item():.6f}, true b: {true_b}")
    print(f"error in estimating w: {(true_w - w.detach().cpu().reshape(true_w.shape)).tolist()}")
    print(f"error in estimating b: {true_b - b.item():.6f}")
    print(f"wall time of {args.epochs} epochs on {device} (with the per-epoch evaluation): {elapsed * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
