"""GPU benchmarks of the fused_linreg CUDA kernels against PyTorch, side by side
in one process: medians of CUDA-event timings, speed-ups, and achieved bandwidth
as a fraction of this GPU's measured copy bandwidth.

    python benchmarks/gpu_bench.py --out DIR      (writes gpu_bench.md / .json)
"""

import argparse
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import fused_linreg

ops = torch.ops.fused_linreg


def median_ms(fn: Callable[[], object], calls_per_sample: int = 10, samples: int = 15) -> float:
    """Median over samples of the mean time of `calls_per_sample` back-to-back calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls_per_sample):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls_per_sample)
    return statistics.median(times)


def measure_bandwidth_gbs() -> dict:
    """Read (a max-reduction) and copy bandwidth over 2 GiB, in GB/s."""
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB of float32
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    read = nbytes / (median_ms(lambda: src.amax(), 3, 7) * 1e-3) / 1e9
    copy = 2 * nbytes / (median_ms(lambda: dst.copy_(src), 3, 7) * 1e-3) / 1e9
    del src, dst
    return {"read": read, "copy": copy}


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    baseline: str
    baseline_ms: float
    ours_ms: float
    speedup: float
    floor_bytes: int
    fraction_of_read_bw: float


ROWS: list[Row] = []


def compare(op: str, shape: str, dtype: torch.dtype, baseline: str, base_fn, ours_fn, floor_bytes: int,
            read_gbs: float, calls: int = 10) -> None:
    base = median_ms(base_fn, calls)
    ours = median_ms(ours_fn, calls)
    floor_ms = floor_bytes / (read_gbs * 1e9) * 1e3
    ROWS.append(Row(op, shape, str(dtype).replace("torch.", ""), baseline, base, ours, base / ours, floor_bytes,
                    floor_ms / ours))
    print(f"{op:28s} {shape:22s} {ROWS[-1].dtype:9s} {baseline:24s} {base:9.4f} ms  ours {ours:9.4f} ms  "
          f"x{base / ours:5.2f}  {100 * floor_ms / ours:5.1f}% of read bw", flush=True)


def bench_linear(dtype: torch.dtype, read_gbs: float) -> None:
    shapes = [(1 << 22, 64, 1), (1 << 22, 64, 4), (1 << 20, 256, 16), (1 << 16, 1024, 1), (1 << 20, 2, 1),
              (8192, 4096, 4096)]
    for rows, inp, out in shapes:
        x = torch.randn(rows, inp, device="cuda", dtype=dtype)
        w = torch.randn(out, inp, device="cuda", dtype=dtype)
        b = torch.randn(out, device="cuda", dtype=dtype)
        g = torch.randn(rows, out, device="cuda", dtype=dtype)
        size = x.element_size()
        shape = f"{rows}x{inp}->{out}"
        io = (x.numel() + w.numel() + rows * out) * size
        compare("linear forward", shape, dtype, "F.linear", lambda: F.linear(x, w, b), lambda: ops.linear(x, w, b),
                io, read_gbs)
        compare("linear forward", shape, dtype, "x @ w.T + b (book)", lambda: x @ w.t() + b,
                lambda: ops.linear(x, w, b), io, read_gbs)
        compare("linear grad x", shape, dtype, "g @ w", lambda: g @ w, lambda: ops.linear_backward_input(g, w),
                io, read_gbs)
        compare("linear grad w,b", shape, dtype, "g.T @ x, g.sum(0)", lambda: (g.t() @ x, g.sum(0)),
                lambda: ops.linear_backward_params(g, x), io, read_gbs)


def bench_losses(dtype: torch.dtype, read_gbs: float) -> None:
    n = 1 << 26
    x = torch.randn(n, device="cuda", dtype=dtype, requires_grad=True)
    t = torch.randn(n, device="cuda", dtype=dtype)
    size = x.element_size()

    def step(loss_fn):
        def run():
            loss_fn().backward()
            x.grad = None
        return run

    compare("mse_loss fwd+bwd", f"{n}", dtype, "F.mse_loss", step(lambda: F.mse_loss(x, t)),
            step(lambda: fused_linreg.mse_loss(x, t)), 5 * n * size, read_gbs, calls=3)
    compare("squared_loss fwd+bwd", f"{n}", dtype, "book ((y^-y)**2/2).sum()",
            step(lambda: ((x - t.reshape(x.shape)) ** 2 / 2).sum()),
            step(lambda: fused_linreg.squared_loss(x, t, "sum")), 5 * n * size, read_gbs, calls=3)


def bench_sgd(read_gbs: float) -> None:
    for count, numel in ((200, 1000), (8, 1 << 22)):
        params = [torch.randn(numel, device="cuda", requires_grad=True) for _ in range(count)]
        for p in params:
            p.grad = torch.randn_like(p)
        shape = f"{count}x{numel}"
        floor = 5 * count * numel * 4  # param read+write, grad read, buffer read+write
        ours = fused_linreg.optim.SGD(params, lr=1e-3, momentum=0.9)
        for name, kwargs in (("optim.SGD fused=True", {"fused": True}), ("optim.SGD foreach", {"foreach": True})):
            theirs = torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kwargs)
            compare("sgd momentum", shape, torch.float32, name, theirs.step, ours.step, floor, read_gbs)


def hand_derived_step(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lr: float) -> torch.Tensor:
    """The book's step with the gradients written out: two passes over X."""
    r = X @ w.t() + b - y
    n = X.shape[0]
    w.sub_(lr * (r.t() @ X) / n)
    b.sub_(lr * r.sum(0) / n)
    return (r * r).sum() / (2 * n)


def bench_fused_step(read_gbs: float) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        rows, features, outputs = 1 << 22, 64, 1
        X = torch.randn(rows, features, device="cuda", dtype=dtype)
        y = torch.randn(rows, outputs, device="cuda", dtype=dtype)
        w = torch.zeros(outputs, features, device="cuda", dtype=dtype)
        b = torch.zeros(outputs, device="cuda", dtype=dtype)
        shape = f"{rows}x{features}->{outputs}"
        floor = X.numel() * X.element_size()

        def book_eager():
            wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
            loss = ((X @ wg.t() + bg - y) ** 2 / 2).sum() / rows
            loss.backward()
            with torch.no_grad():
                wg -= 1e-3 * wg.grad
                bg -= 1e-3 * bg.grad

        ours = lambda: fused_linreg.linreg_step_(X, y, w, b, lr=1e-3)
        compare("linreg_step_ (one step)", shape, dtype, "book eager + autograd", book_eager, ours, floor, read_gbs, 3)
        compiled = torch.compile(hand_derived_step)
        compare("linreg_step_ (one step)", shape, dtype, "torch.compile hand-derived", lambda: compiled(X, y, w, b, 1e-3),
                ours, floor, read_gbs, 3)
        compare("linreg_grad", shape, dtype, "hand-derived eager", lambda: hand_derived_step(X, y, w.clone(), b.clone(), 0.0),
                lambda: fused_linreg.linreg_grad(X, y, w, b), floor, read_gbs, 3)

    features, labels = fused_linreg.d2l.synthetic_data(torch.tensor([2.0, -3.4]), 4.2, 1000)
    features, labels = features.cuda(), labels.cuda()
    w, b = torch.zeros(1, 2, device="cuda"), torch.zeros(1, device="cuda")
    order = torch.randperm(1000, device="cuda")

    def book_epoch():
        wg, bg = torch.zeros(2, 1, device="cuda", requires_grad=True), torch.zeros(1, device="cuda", requires_grad=True)
        for start in range(0, 1000, 10):
            idx = order[start:start + 10]
            loss = ((features[idx] @ wg + bg - labels[idx]) ** 2 / 2).sum()
            loss.backward()
            with torch.no_grad():
                for param in (wg, bg):
                    param -= 0.03 * param.grad / 10
                    param.grad.zero_()

    compare("linreg_epoch_ (book epoch)", "1000x2, batch 10", torch.float32, "book eager loop", book_epoch,
            lambda: fused_linreg.linreg_epoch_(features, labels, w, b, lr=0.03, batch_size=10, indices=order),
            features.numel() * 4, read_gbs, 1)


def write(out: Path, bandwidth: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "bandwidth_gbs": bandwidth}
    (out / "gpu_bench.json").write_text(json.dumps({"machine": machine, "rows": [asdict(r) for r in ROWS]}, indent=1))
    lines = [f"GPU: {machine['gpu']}, torch {machine['torch']}, CUDA {machine['cuda']}; measured read "
             f"{bandwidth['read']:.0f} GB/s, copy {bandwidth['copy']:.0f} GB/s (read+write bytes)", "",
             "| op | shape | dtype | baseline | baseline ms | ours ms | speed-up | % of read-bw floor |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ROWS:
        lines.append(f"| {r.op} | {r.shape} | {r.dtype} | {r.baseline} | {r.baseline_ms:.4f} | {r.ours_ms:.4f} | "
                     f"{r.speedup:.2f}x | {100 * r.fraction_of_read_bw:.0f}% |")
    (out / "gpu_bench.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    args = parser.parse_args()
    torch.manual_seed(0)
    bandwidth = measure_bandwidth_gbs()
    print(f"bandwidth: read {bandwidth['read']:.0f} GB/s, copy {bandwidth['copy']:.0f} GB/s", flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        bench_linear(dtype, bandwidth["read"])
        bench_losses(dtype, bandwidth["read"])
    bench_sgd(bandwidth["read"])
    bench_fused_step(bandwidth["read"])
    write(args.out, bandwidth)


if __name__ == "__main__":
    main()
