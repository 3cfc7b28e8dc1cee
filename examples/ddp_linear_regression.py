"""Data-parallel training of the book's linear regression with ``torch.distributed``.

Every process holds the same data and parameters and draws the same minibatch order. Each
minibatch is split across the processes; each computes the loss and gradients of its shard
in one pass with ``fused_linreg.linreg_grad``, the processes average them with one
``all_reduce`` (weighted by shard size, so unequal shards give the exact minibatch
gradient), and every process applies the same update with ``fused_linreg.sgd_``. The
parameters therefore stay identical everywhere, and equal those of single-process training
on the whole minibatches. Backend: NCCL when CUDA is available (one GPU per process),
gloo on the CPU otherwise.

Run with torchrun::

    torchrun --nproc-per-node 2 examples/ddp_linear_regression.py

or let the script start the processes itself::

    python examples/ddp_linear_regression.py --world-size 2
"""

from __future__ import annotations

import argparse
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fused_linreg
from fused_linreg.d2l import synthetic_data

TRUE_W, TRUE_B = torch.tensor([2, -3.4]), 4.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=None,
                        help="start this many processes (without it, the script expects torchrun's environment)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=10, help="rows per minibatch, over all processes")
    parser.add_argument("--num-examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_for(local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def averaged_gradients(
    X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, batch_rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss and gradients of the whole minibatch from this process's shard ``(X, y)``.

    Each shard's values are means over its rows: weighted by rows / batch_rows and summed
    over the processes (in one flat all_reduce), they are the minibatch's means. A process
    with an empty shard contributes zeros."""
    k, d = weight.shape
    flat = torch.zeros(1 + k * d + k, dtype=weight.dtype, device=weight.device)
    if X.shape[0] > 0:
        loss, grad_weight, grad_bias = fused_linreg.linreg_grad(X, y, weight, bias)
        torch.cat([loss.reshape(1), grad_weight.reshape(-1), grad_bias], out=flat)
        flat *= X.shape[0] / batch_rows
    dist.all_reduce(flat)
    return flat[0], flat[1:1 + k * d].view(k, d), flat[1 + k * d:]


def train(rank: int, world_size: int, local_rank: int, args: argparse.Namespace) -> None:
    device = device_for(local_rank)
    # Same seed everywhere: identical data, initial parameters and minibatch order.
    torch.manual_seed(args.seed)
    features, labels = synthetic_data(TRUE_W, TRUE_B, args.num_examples)
    features, labels = features.to(device), labels.to(device)
    weight = torch.normal(0, 0.01, size=(1, features.shape[1])).to(device)
    bias = torch.zeros(1, device=device)
    momentum_buffers: list[torch.Tensor | None] = [None, None]
    generator = torch.Generator().manual_seed(args.seed)

    for epoch in range(args.epochs):
        order = torch.randperm(args.num_examples, generator=generator).to(device)
        losses = []
        for batch in order.split(args.batch_size):
            rows = batch.tensor_split(world_size)[rank]
            loss, grad_weight, grad_bias = averaged_gradients(features[rows], labels[rows], weight, bias, len(batch))
            fused_linreg.sgd_([weight, bias], [grad_weight, grad_bias], momentum_buffers, lr=args.lr,
                              momentum=args.momentum)
            losses.append(loss)
        if rank == 0:
            print(f"epoch {epoch + 1}, mean minibatch loss {float(torch.stack(losses).mean()):f}")

    # Every process applied the same updates: check that the parameters agree.
    params = torch.cat([weight.reshape(-1), bias])
    spread = params.clone()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    spread -= params
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(f"learned w: {weight.reshape(-1).tolist()}, true w: {TRUE_W.tolist()}")
        print(f"learned b: {bias.item():.6f}, true b: {TRUE_B}")
        print(f"{world_size} processes ({dist.get_backend()}), largest parameter difference between them: "
              f"{float(spread.max()):g}")


def run(rank: int, world_size: int, local_rank: int, args: argparse.Namespace, init_method: str) -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(minutes=2))
    try:
        train(rank, world_size, local_rank, args)
    finally:
        dist.destroy_process_group()


def spawned(rank: int, world_size: int, args: argparse.Namespace, init_method: str) -> None:
    """Entry point of a process started by --world-size (one machine: local rank = rank)."""
    run(rank, world_size, rank, args, init_method)


def main() -> None:
    args = parse_args()
    if args.world_size is not None:
        init_method = f"tcp://127.0.0.1:{free_port()}"
        mp.spawn(spawned, args=(args.world_size, args, init_method), nprocs=args.world_size)
    elif "RANK" in os.environ:
        run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), args, "env://")
    else:
        raise SystemExit("start with torchrun, or pass --world-size N (see --help)")


if __name__ == "__main__":
    main()
