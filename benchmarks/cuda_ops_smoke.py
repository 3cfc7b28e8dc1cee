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
    torch.cuda.synchronize()
    print(f"every CUDA op ran and matched the CPU kernels ({fused_linreg.__name__}, dtypes {dtypes})")


if __name__ == "__main__":
    main()
