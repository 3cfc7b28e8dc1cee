"""Calls every fused_linreg CUDA op once per dtype on awkward shapes (tails,
unaligned views, empty tensors), checking each result against the CPU kernel.

Meant to run under compute-sanitizer (memcheck, racecheck) from gpu_check.sh;
--small uses fewer, smaller shapes because racecheck is slow."""

import argparse

import torch

import fused_linreg

ops = torch.ops.fused_linreg
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    got, want = got.double().cpu(), want.double().cpu()
    if not torch.equal(got.isnan(), want.isnan()):
        raise AssertionError(f"{what} {dtype}: NaN in different places")
    got, want = got.nan_to_num(0.0), want.nan_to_num(0.0)  # e.g. the mean of an empty loss
    scale = want.abs().max().item() if want.numel() else 0.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    if not err <= TOLERANCE[dtype] * max(scale, 1.0):
        raise AssertionError(f"{what} {dtype}: max error {err:.3e} (scale {scale:.3e})")


def linear_cases(small: bool):
    shapes = [(1, 1, 1), (7, 3, 2), (33, 5, 17), (0, 4, 3), (6, 0, 2)]
    if not small:
        shapes += [(1000, 2, 1), (513, 129, 16), (4097, 1024, 4), (300, 64, 40)]
    return shapes


def check_linear(dtype: torch.dtype, small: bool) -> None:
    for rows, inp, out in linear_cases(small):
        x = torch.randn(rows, inp + 1, dtype=dtype)[:, 1:]  # an unaligned, strided view
        w = torch.randn(out, inp, dtype=dtype)
        b = torch.randn(out, dtype=dtype)
        g = torch.randn(rows, out, dtype=dtype)
        xc, wc, bc, gc = (t.cuda() for t in (x, w, b, g))
        close(ops.linear(xc, wc, bc), ops.linear(x, w, b), dtype, f"linear {rows}x{inp}->{out}")
        close(ops.linear(xc, wc, None), ops.linear(x, w, None), dtype, "linear without bias")
        close(ops.linear_backward_input(gc, wc), ops.linear_backward_input(g, w), dtype, "linear_backward_input")
        for got, want in zip(ops.linear_backward_params(gc, xc), ops.linear_backward_params(g, x)):
            close(got, want, dtype, f"linear_backward_params {rows}x{inp}->{out}")


def check_losses(dtype: torch.dtype, small: bool) -> None:
    sizes = [1, 5, 1027] if small else [0, 1, 5, 1027, 1 << 20]
    for n in sizes:
        x = torch.randn(n + 1, dtype=dtype)[1:]
        t = torch.randn(n, dtype=dtype)
        xc, tc = x.cuda(), t.cuda()
        for reduction in ("none", "sum", "mean"):
            g = torch.randn(n if reduction == "none" else (), dtype=dtype)
            for name in ("squared_loss", "mse_loss"):
                forward, backward = getattr(ops, name), getattr(ops, name + "_backward")
                close(forward(xc, tc, reduction), forward(x, t, reduction), dtype, f"{name} {reduction} n={n}")
                close(backward(g.cuda(), xc, tc, reduction), backward(g, x, t, reduction), dtype,
                      f"{name}_backward {reduction} n={n}")


def check_sgd(dtype: torch.dtype, small: bool) -> None:
    sizes = [1, 3, 1000, 4099] if small else [1, 3, 1000, 4099, 70000, 1 << 20]
    for momentum, nesterov, first in ((0.0, False, False), (0.9, False, True), (0.9, True, False)):
        params = [torch.randn(n, dtype=dtype) for n in sizes]
        grads = [torch.randn(n, dtype=dtype) for n in sizes]
        bufs = [torch.randn(n, dtype=dtype) for n in sizes] if momentum else []
        first_steps = [first] * len(sizes) if momentum else []
        cuda = [[t.cuda() for t in ts] for ts in (params, grads, bufs)]
        kwargs = dict(lr=0.1, weight_decay=0.01, momentum=momentum, nesterov=nesterov)
        scale = torch.tensor(4.0)
        ops.sgd_(*cuda, first_steps, grad_scale=scale.cuda(), found_inf=torch.tensor(0.0).cuda(), **kwargs)
        ops.sgd_(params, grads, bufs, first_steps, grad_scale=scale, found_inf=torch.tensor(0.0), **kwargs)
        for got_list, want_list, what in zip(cuda, (params, grads, bufs), ("param", "grad", "buffer")):
            for got, want in zip(got_list, want_list):
                close(got, want, dtype, f"sgd_ {what} momentum={momentum}")
        before = [t.clone() for t in cuda[0]]
        ops.sgd_.tensor_lr(*cuda, first_steps, lr=torch.tensor(0.1).cuda(), found_inf=torch.tensor(1.0).cuda(),
                           momentum=momentum, nesterov=nesterov)
        assert all(torch.equal(a, b) for a, b in zip(before, cuda[0])), "a skipped step changed a parameter"


def linreg_cases(small: bool):
    # (rows, features, outputs): one block and one-block epochs, several blocks,
    # an unaligned tail, narrow tiles (up to 128 floats, k <= 4), wide tiles for
    # k = 1 / 4 / 16, and rows too long for registers (the composed path: more
    # than 32 * kCols features, or k > 16).
    shapes = [(1, 1, 1), (10, 2, 1), (37, 5, 3)]
    if not small:
        shapes += [(300, 7, 16), (70000, 9, 1), (20000, 64, 4), (2000, 300, 1), (700, 200, 4), (513, 1500, 1),
                   (600, 130, 16), (50, 6, 20)]
    return shapes


def check_linreg(dtype: torch.dtype, small: bool) -> None:
    for rows, features, outputs in linreg_cases(small):
        # lr below 1 / features keeps the many steps of an epoch from diverging.
        sgd = dict(lr=0.5 / features, weight_decay=0.01, momentum=0.9, dampening=0.1, nesterov=False, maximize=False)
        X = torch.randn(rows, features + 1, dtype=dtype)[:, 1:]
        y = torch.randn(rows, outputs, dtype=dtype)
        cpu = [torch.randn(outputs, features, dtype=dtype), torch.randn(outputs, dtype=dtype),
               torch.randn(outputs, features, dtype=dtype), torch.randn(outputs, dtype=dtype)]
        gpu = [t.cuda() for t in cpu]
        Xc, yc = X.cuda(), y.cuda()
        what = f"{rows}x{features}->{outputs}"
        for got, want in zip(ops.linreg_grad(Xc, yc, *gpu[:2]), ops.linreg_grad(X, y, *cpu[:2])):
            close(got, want, dtype, f"linreg_grad {what}")
        close(ops.linreg_step_(Xc, yc, *gpu, True, **sgd), ops.linreg_step_(X, y, *cpu, True, **sgd), dtype,
              f"linreg_step_ loss {what}")
        for batch_size in (10, 300):
            indices = torch.randperm(rows)[:2000]  # at most 200 steps: rounding differences stay small
            close(ops.linreg_epoch_(Xc, yc, indices.cuda(), batch_size, *gpu, False, **sgd),
                  ops.linreg_epoch_(X, y, indices, batch_size, *cpu, False, **sgd), dtype,
                  f"linreg_epoch_ losses {what} batch {batch_size}")
        for got, want in zip(gpu, cpu):
            close(got, want, dtype, f"linreg parameters and buffers after the steps {what}")


def check_gram(dtype: torch.dtype, small: bool) -> None:
    """linreg_gram (float64 sums) against the CPU kernel, weighted and not."""
    for rows, features, outputs in linreg_cases(small):
        X = torch.randn(rows, features + 1, dtype=dtype)[:, 1:]
        y = torch.randn(rows, outputs, dtype=dtype)
        weight = torch.rand(rows, dtype=torch.float64)
        x_shift, y_shift = torch.randn(features, dtype=torch.float64), torch.randn(outputs, dtype=torch.float64)
        for w in (None, weight):
            got = ops.linreg_gram(X.cuda(), y.cuda(), None if w is None else w.cuda(), x_shift.cuda(), y_shift.cuda())
            # The sums are float64 on both devices; the CPU multiplies narrow types in float32.
            close(got, ops.linreg_gram(X, y, w, x_shift, y_shift), torch.float32 if dtype != torch.float64 else dtype,
                  f"linreg_gram {rows}x{features}->{outputs} {dtype} weighted={w is not None}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="fewer, smaller shapes (for racecheck)")
    args = parser.parse_args()
    torch.manual_seed(0)
    dtypes = DTYPES[:2] if args.small else DTYPES
    for dtype in dtypes:
        check_linear(dtype, args.small)
        check_losses(dtype, args.small)
        check_sgd(dtype, args.small)
        check_linreg(dtype, args.small)
        check_gram(dtype, args.small)
    torch.cuda.synchronize()
    print(f"every CUDA op ran and matched the CPU kernels ({fused_linreg.__name__}, dtypes {dtypes})")


if __name__ == "__main__":
    main()
