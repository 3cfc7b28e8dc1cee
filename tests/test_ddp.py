"""Data-parallel training with torch.distributed: two processes (gloo), each computing
linreg_grad on its shard of every minibatch, all_reduce of the weighted gradients, then the
same sgd_ on every rank, train as one process does with linreg_step_ on whole minibatches."""

import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fused_linreg

from conftest import make_problem

DDP_ROWS, DDP_FEATURES, DDP_OUTPUTS, DDP_BATCH, DDP_STEPS = 600, 5, 2, 20, 30
DDP_SHARDS = (13, 7)  # rows of every minibatch on rank 0 and rank 1: unequal, so the average is weighted
DDP_HYPER = dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01)


def ddp_problem():
    """Identical on every process: seeded data, parameters and minibatch order."""
    generator = torch.Generator().manual_seed(7)
    X, y, weight, bias = make_problem(DDP_ROWS, DDP_FEATURES, DDP_OUTPUTS, generator=generator)
    order = torch.randperm(DDP_ROWS, generator=generator)
    return X, y, weight, bias, order.reshape(-1, DDP_BATCH)[:DDP_STEPS]


def data_parallel_worker(rank, world_size, init_file, out_file):
    """One rank: the gradient of its shard of each minibatch, averaged over the ranks with
    weights shard_rows / batch_rows (all_reduce SUM), then the same sgd_ on every rank."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        X, y, weight, bias, batches = ddp_problem()
        begin = sum(DDP_SHARDS[:rank])
        buffers = [None, None]
        for batch in batches:
            rows = batch[begin:begin + DDP_SHARDS[rank]]
            _, grad_weight, grad_bias = fused_linreg.linreg_grad(X[rows], y[rows], weight, bias)
            grads = [g * (len(rows) / len(batch)) for g in (grad_weight, grad_bias)]
            for g in grads:
                dist.all_reduce(g)
            fused_linreg.sgd_([weight, bias], grads, buffers, **DDP_HYPER)
        if rank == 0:
            torch.save({"weight": weight, "bias": bias}, out_file)
    finally:
        dist.destroy_process_group()


def test_data_parallel_training_equals_single_process_training(tmp_path):
    context = mp.start_processes(data_parallel_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out.pt")),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, "the data-parallel processes did not finish in 120 s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    parallel = torch.load(tmp_path / "out.pt")

    X, y, weight, bias, batches = ddp_problem()
    state = {}
    for batch in batches:
        fused_linreg.linreg_step_(X[batch], y[batch], weight, bias, state=state, **DDP_HYPER)
    assert not torch.equal(weight, ddp_problem()[2]), "training moved the weights"
    torch.testing.assert_close(parallel["weight"], weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parallel["bias"], bias, rtol=1e-5, atol=1e-5)
