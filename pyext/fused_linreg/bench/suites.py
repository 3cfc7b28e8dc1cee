"""The suites of ``python -m fused_linreg.bench``: for each, the benches at the sizes
of the run, each with its implementations side by side on the same inputs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import fused_linreg

from .baselines import (
    book_epoch,
    book_linreg,
    book_loss_sum,
    book_sgd,
    book_squared_loss,
    book_squared_loss_sum,
    compiled_step_epoch,
    hand_derived_step,
    module_epoch,
)
from .cases import (
    BOOK_LR,
    BOOK_TRUE_B,
    BOOK_TRUE_W,
    COPY_OP,
    GEMM_OP,
    INPLACE_OP,
    READ_OP,
    SUITES,
    Bench,
    Context,
    Fn,
    Impl,
    Traffic,
    grads_of,
    static_compiled,
)

__all__ = ["build_benches", "estimator_data"]

# Buffers each bandwidth is averaged over (measured here: 27 and 41 GB/s reading two
# 256 MiB buffers of one process, repeatably).
_BANDWIDTH_BUFFERS = 3


# ---------------------------------------------------------------------------
# bandwidth: the rates every floor is computed from.
# ---------------------------------------------------------------------------


def _bandwidth_benches(ctx: Context) -> list[Bench]:
    n = ctx.sizes.bandwidth_elems
    nbytes = 4 * n
    shape = f"{nbytes >> 20} MiB float32"
    device = ctx.device

    def read_setup() -> Mapping[str, Fn]:
        x = torch.randn(n, device=device)
        return {"x.amax()": x.amax}

    def copy_setup() -> Mapping[str, Fn]:
        src = torch.randn(n, device=device)
        dst = torch.empty_like(src)
        return {"dst.copy_(src)": lambda: dst.copy_(src)}

    def inplace_setup() -> Mapping[str, Fn]:
        x, y = torch.randn(n, device=device), torch.randn(n, device=device)
        return {"x.add_(y)": lambda: x.add_(y, alpha=1e-9)}

    g = ctx.sizes.gemm
    remark = (f"bandwidth: each rate is the mean over {_BANDWIDTH_BUFFERS} separately allocated buffers, since on "
              "some machines (VMs) the bandwidth differs between allocations; the step suite also times its floor "
              "on its own X, right beside ours.")

    # The compute roof: float32 matmuls for the half types, which our kernels compute in
    # float32 (and whose own matmul can be far slower, e.g. float16 on a CPU).
    gemm_dtype = torch.float32 if ctx.dtype in (torch.float16, torch.bfloat16) else ctx.dtype

    def gemm_setup() -> Mapping[str, Fn]:
        a, b = (torch.randn(g, g, device=device, dtype=gemm_dtype) for _ in range(2))
        return {"torch.mm": lambda: torch.mm(a, b)}

    return [
        Bench("bandwidth", READ_OP, shape, (Impl("x.amax()"),), read_setup, nbytes, Traffic(read=nbytes),
              rotate=False, remark=remark, min_copies=_BANDWIDTH_BUFFERS),
        Bench("bandwidth", COPY_OP, shape, (Impl("dst.copy_(src)"),), copy_setup, 2 * nbytes,
              Traffic(read=nbytes, write=nbytes), rotate=False, min_copies=_BANDWIDTH_BUFFERS),
        Bench("bandwidth", INPLACE_OP, f"2 x {shape}", (Impl("x.add_(y)"),), inplace_setup, 2 * nbytes,
              Traffic(read=2 * nbytes, write=nbytes, inplace=True), rotate=False, min_copies=_BANDWIDTH_BUFFERS),
        Bench("bandwidth", GEMM_OP, f"{g}x{g}x{g} {str(gemm_dtype).removeprefix('torch.')}", (Impl("torch.mm"),),
              gemm_setup, 3 * g * g * gemm_dtype.itemsize, Traffic(read=0, flops=2 * g**3), rotate=False),
    ]


# ---------------------------------------------------------------------------
# overhead: calls so small that the time is the call path, not the kernel.
# ---------------------------------------------------------------------------

_OVERHEAD_LINEAR = (10, 2, 1)
_OVERHEAD_SGD = (200, 1)


def _overhead_linear_setup(ctx: Context, no_grad: bool) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        rows, inp, out = _OVERHEAD_LINEAR
        x, w, b = ctx.randn(rows, inp), ctx.randn(out, inp, requires_grad=True), ctx.randn(out, requires_grad=True)

        def under_no_grad(fn: Callable[[], Tensor]) -> Fn:
            def call() -> Tensor:
                with torch.no_grad():
                    return fn()
            return call

        fns: dict[str, Callable[[], Tensor]] = {
            "F.linear": lambda: F.linear(x, w, b), _OURS_LINEAR: lambda: fused_linreg.linear(x, w, b)}
        return {name: under_no_grad(fn) for name, fn in fns.items()} if no_grad else fns

    return setup


def _overhead_step_setup(ctx: Context) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        rows, inp, out = _OVERHEAD_LINEAR
        x, y = ctx.randn(rows, inp), ctx.randn(rows, out)
        w, b = ctx.randn(out, inp, requires_grad=True), ctx.randn(out, requires_grad=True)
        return {
            "F.linear + F.mse_loss": lambda: torch.autograd.grad(F.mse_loss(F.linear(x, w, b), y), (w, b)),
            "fused_linreg.linear + mse_loss": lambda: torch.autograd.grad(
                fused_linreg.mse_loss(fused_linreg.linear(x, w, b), y), (w, b)),
        }

    return setup


def _overhead_sgd_setup(ctx: Context) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        count, numel = _OVERHEAD_SGD
        lists = [([ctx.randn(numel) for _ in range(count)], [ctx.randn(numel) for _ in range(count)],
                  [ctx.randn(numel) for _ in range(count)]) for _ in range(2)]
        (params, grads, bufs), (our_params, our_grads, our_bufs) = lists
        our_buffers: list[Tensor | None] = list(our_bufs)  # existing buffers: a steady-state step
        return {
            "torch._fused_sgd_": lambda: torch._fused_sgd_(
                params, grads, bufs, weight_decay=0.0, momentum=0.9, lr=1e-3, dampening=0.0, nesterov=False,
                maximize=False, is_first_step=False),
            "sgd_": lambda: fused_linreg.sgd_(our_params, our_grads, our_buffers, lr=1e-3, momentum=0.9),
        }

    return setup


def _overhead_benches(ctx: Context) -> list[Bench]:
    rows, inp, out = _OVERHEAD_LINEAR
    count, numel = _OVERHEAD_SGD
    shape = f"{rows}x{inp} -> {out}"
    linear = (Impl("F.linear"), Impl(_OURS_LINEAR, ours=True))
    footprint = (rows * inp + out * inp + rows * out) * ctx.itemsize
    remark = ("overhead: calls too small for the kernel to matter; the time is the call path (Python, dispatcher, "
              "autograd), measured on the same inputs call after call, as a training loop makes them. "
              "`sgd_ 200 x 1` is a steady-state momentum step (buffers exist), against torch's raw multi-tensor "
              "kernel `torch._fused_sgd_` (what `SGD(fused=True)` calls).")
    return [
        Bench("overhead", "linear fwd, grad recorded", shape, linear, _overhead_linear_setup(ctx, False), footprint,
              rotate=False, remark=remark),
        Bench("overhead", "linear fwd, no_grad", shape, linear, _overhead_linear_setup(ctx, True), footprint,
              rotate=False),
        Bench("overhead", "linear + mse_loss fwd+bwd", shape,
              (Impl("F.linear + F.mse_loss"), Impl("fused_linreg.linear + mse_loss", ours=True)),
              _overhead_step_setup(ctx), footprint, rotate=False, note="grads of W and b"),
        Bench("overhead", "sgd_ momentum 0.9", f"{count} x {numel}",
              (Impl("torch._fused_sgd_"), Impl("sgd_", ours=True)), _overhead_sgd_setup(ctx),
              3 * count * numel * ctx.itemsize, rotate=False),
    ]


# ---------------------------------------------------------------------------
# linear: forward and forward+backward over a sweep from skinny to square.
# ---------------------------------------------------------------------------

_OURS_LINEAR = "fused_linreg.linear"
_BOOK_LINEAR = "x @ w + b (book)"
_COMPILED_BOOK_LINEAR = "torch.compile(x @ w + b)"
# csrc/linear_shapes.h: more outputs than this go to the vendor GEMM.
_SKINNY_MAX_OUT = {"cpu": fused_linreg._C.SKINNY_MAX_OUT_CPU, "cuda": fused_linreg._C.SKINNY_MAX_OUT_CUDA}


def _linear_traffic(rows: int, inp: int, out: int, itemsize: int, backward: bool) -> Traffic:
    """Forward: read x, W, b, write y. Backward adds: read x, W and grad_y once, write dx, dW, db."""
    x, w, y, b = rows * inp * itemsize, out * inp * itemsize, rows * out * itemsize, out * itemsize
    flops = 2 * rows * inp * out
    if not backward:
        return Traffic(read=x + w + b, write=y, flops=flops)
    return Traffic(read=2 * x + 2 * w + b + y, write=y + x + w + b, flops=3 * flops)


def _linear_setup(ctx: Context, rows: int, inp: int, out: int, backward: bool) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        x = ctx.randn(rows, inp, requires_grad=backward)
        w = ctx.randn(out, inp, requires_grad=backward)
        b = ctx.randn(out, requires_grad=backward)
        w_col = w.detach().t().contiguous().requires_grad_(backward)  # the book keeps w as a (d, k) column
        compiled_linreg = static_compiled(book_linreg)
        forwards: dict[str, tuple[Callable[[], Tensor], tuple[Tensor, ...]]] = {
            "F.linear": (lambda: F.linear(x, w, b), (x, w, b)),
            _BOOK_LINEAR: (lambda: book_linreg(x, w_col, b), (x, w_col, b)),
            _COMPILED_BOOK_LINEAR: (lambda: compiled_linreg(x, w_col, b), (x, w_col, b)),
            _OURS_LINEAR: (lambda: fused_linreg.linear(x, w, b), (x, w, b)),
        }
        if not backward:
            return {name: fwd for name, (fwd, _) in forwards.items()}
        grad_out = ctx.randn(rows, out)
        return {name: grads_of(fwd, inputs, grad_out) for name, (fwd, inputs) in forwards.items()}

    return setup


def _linear_benches(ctx: Context) -> list[Bench]:
    benches = []
    for backward in (False, True):
        for rows, inp, out in ctx.sizes.linear:
            impls = [Impl("F.linear"), Impl(_BOOK_LINEAR), Impl(_OURS_LINEAR, ours=True)]
            if (rows, inp, out) == ctx.sizes.linear_compiled:
                impls.insert(2, Impl(_COMPILED_BOOK_LINEAR, compiled=True))
            traffic = _linear_traffic(rows, inp, out, ctx.itemsize, backward)
            footprint = (rows * inp + out * inp + rows * out) * ctx.itemsize
            notes = ["grads of x, W and b"] if backward else []
            if out > _SKINNY_MAX_OUT[ctx.device.type]:
                notes.append("a GEMM: ours calls the vendor BLAS (at::addmm)")
            benches.append(Bench(
                "linear", "linear fwd+bwd" if backward else "linear fwd", f"{rows}x{inp} -> {out}",
                tuple(impls), _linear_setup(ctx, rows, inp, out, backward), footprint, traffic, note="; ".join(notes),
            ))
    return benches


# ---------------------------------------------------------------------------
# loss: squared_loss and mse_loss, forward+backward.
# ---------------------------------------------------------------------------

_BOOK_LOSS = "book ((y^ - y)**2 / 2).sum()"
_COMPILED_BOOK_LOSS = "torch.compile(book loss)"


def _loss_setup(ctx: Context, n: int) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        y_hat = ctx.randn(n, 1, requires_grad=True)
        y = ctx.randn(n, 1)
        compiled_loss = static_compiled(book_squared_loss_sum)
        forwards: dict[str, Callable[[], Tensor]] = {
            _BOOK_LOSS: lambda: book_squared_loss_sum(y_hat, y),
            _COMPILED_BOOK_LOSS: lambda: compiled_loss(y_hat, y),
            "squared_loss(sum)": lambda: fused_linreg.squared_loss(y_hat, y, "sum"),
            "F.mse_loss": lambda: F.mse_loss(y_hat, y),
            "fused_linreg.mse_loss": lambda: fused_linreg.mse_loss(y_hat, y),
        }
        return {name: grads_of(fwd, (y_hat,), None) for name, fwd in forwards.items()}

    return setup


def _loss_benches(ctx: Context) -> list[Bench]:
    benches = []
    for n in ctx.sizes.loss:
        size = ctx.itemsize * n
        traffic = Traffic(read=4 * size, write=size)  # forward reads y^ and y; backward reads both, writes grad
        squared = [Impl(_BOOK_LOSS), Impl("squared_loss(sum)", ours=True)]
        if n == max(ctx.sizes.loss):
            squared.insert(1, Impl(_COMPILED_BOOK_LOSS, compiled=True))
        setup = _loss_setup(ctx, n)
        benches.append(Bench("loss", "squared_loss fwd+bwd", f"{n}x1", tuple(squared), setup, 2 * size, traffic))
        benches.append(Bench("loss", "mse_loss fwd+bwd", f"{n}x1",
                             (Impl("F.mse_loss"), Impl("fused_linreg.mse_loss", ours=True)), setup, 2 * size,
                             traffic))
    return benches


# ---------------------------------------------------------------------------
# sgd: sgd_ and optim.SGD against torch.optim.SGD's three implementations.
# ---------------------------------------------------------------------------

_TORCH_SGD = {"torch SGD forloop": {"foreach": False}, "torch SGD foreach": {"foreach": True},
              "torch SGD fused=True": {"fused": True}}


def _params_with_grads(ctx: Context, count: int, numel: int, grads: Sequence[Tensor]) -> list[Tensor]:
    params = [ctx.randn(numel, requires_grad=True) for _ in range(count)]
    for p, g in zip(params, grads):
        p.grad = g
    return params


def _sgd_setup(ctx: Context, count: int, numel: int, momentum: float) -> Callable[[], Mapping[str, Fn]]:
    lr = 1e-3

    def setup() -> Mapping[str, Fn]:
        grads = [ctx.randn(numel) for _ in range(count)]
        fns: dict[str, Fn] = {}
        for name, kwargs in _TORCH_SGD.items():
            fns[name] = torch.optim.SGD(_params_with_grads(ctx, count, numel, grads), lr=lr, momentum=momentum,
                                        **kwargs).step
        fns["optim.SGD"] = fused_linreg.optim.SGD(_params_with_grads(ctx, count, numel, grads), lr=lr,
                                                  momentum=momentum).step
        # The optimizer's kind of parameters (leaves that require grad, made the same way), so
        # that the two rows differ only by what optim.SGD does around the op.
        params = _params_with_grads(ctx, count, numel, grads)
        buffers: list[Tensor | None] = [None] * count

        def raw_sgd() -> None:
            with torch.no_grad():
                fused_linreg.sgd_(params, grads, buffers, lr=lr, momentum=momentum)

        fns["sgd_"] = raw_sgd
        return fns

    return setup


def _sgd_benches(ctx: Context) -> list[Bench]:
    impls = (*(Impl(name) for name in _TORCH_SGD), Impl("optim.SGD", ours=True), Impl("sgd_", ours=True))
    pairs = (*((name, "optim.SGD") for name in _TORCH_SGD), ("torch SGD fused=True", "sgd_"))
    benches = []
    for count, numel in ctx.sizes.sgd:
        size = count * numel * ctx.itemsize
        for momentum in (0.0, 0.9):
            # param and grad read, param written in place; with momentum the buffer is read and written too
            traffic = Traffic(read=(3 if momentum else 2) * size, write=(2 if momentum else 1) * size, inplace=True)
            op = f"SGD step, momentum {momentum:g}"
            benches.append(Bench("sgd", op, f"{count} x {numel}", impls, _sgd_setup(ctx, count, numel, momentum),
                                 (3 if momentum else 2) * size, traffic, pairs))
    return benches


# ---------------------------------------------------------------------------
# book: the book's training epoch (1000x2, batch 10), every way.
# ---------------------------------------------------------------------------

_BOOK_CODE = "book code (eager)"
_TORCH_NN = "torch nn.Linear+MSELoss+SGD"
_COMPILED_STEP = "torch.compile(hand-derived step)"
_SKLEARN = "sklearn SGDRegressor.partial_fit"
_D2L = "fused_linreg.d2l"
_DROP_INS = "fused_linreg nn+optim drop-ins"
_EPOCH = "linreg_epoch_"
_EPOCH_BATCH1 = "linreg_epoch_ batch 1"
_ESTIMATOR = "LinearRegression.partial_fit"


def _book_data(ctx: Context, n: int) -> tuple[Tensor, Tensor]:
    features, labels = fused_linreg.d2l.synthetic_data(torch.tensor(BOOK_TRUE_W), BOOK_TRUE_B, n)
    return features.to(ctx.device, ctx.dtype), labels.to(ctx.device, ctx.dtype)


def _book_params(ctx: Context, d: int, requires_grad: bool) -> tuple[Tensor, Tensor]:
    """The book's initial ``w`` (a ``(d, 1)`` column) and ``b``."""
    w = torch.normal(0, 0.01, size=(d, 1)).to(ctx.device, ctx.dtype).requires_grad_(requires_grad)
    return w, torch.zeros(1, device=ctx.device, dtype=ctx.dtype, requires_grad=requires_grad)


def _modules(ctx: Context, nn: ModuleType, optim: ModuleType, d: int, k: int = 1, **sgd_kwargs: bool
             ) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """``nn.Linear(d, k)``, ``nn.MSELoss()`` and ``optim.SGD`` from the given modules (torch's or ours).

    MSELoss has no ½: half the book's learning rate gives the book's update."""
    model = nn.Linear(d, k).to(ctx.device, ctx.dtype)
    return model, nn.MSELoss(), optim.SGD(model.parameters(), lr=BOOK_LR / 2, **sgd_kwargs)


def _sklearn_epoch(features: Tensor, labels: Tensor) -> Fn:
    from sklearn.linear_model import SGDRegressor

    reg = SGDRegressor(max_iter=1, tol=None, shuffle=True, learning_rate="constant", eta0=BOOK_LR, penalty=None,
                       random_state=0)
    X, y = features.double().cpu().numpy(), labels.double().cpu().numpy().ravel()
    return lambda: reg.partial_fit(X, y)


def _estimator_epoch(ctx: Context, features: Tensor, labels: Tensor, batch: int) -> Fn:
    est = fused_linreg.LinearRegression(solver="sgd", lr=BOOK_LR, batch_size=batch, device=ctx.device,
                                        dtype=ctx.dtype, random_state=0)
    X, y = features.double().cpu().numpy(), labels.double().cpu().numpy().ravel()  # as sklearn gets them
    return lambda: est.partial_fit(X, y)


def _book_setup(ctx: Context, n: int, batch: int, sklearn: bool) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        features, labels = _book_data(ctx, n)
        d = features.shape[1]
        d2l = fused_linreg.d2l
        w0, b0 = _book_params(ctx, d, True)
        w1, b1 = _book_params(ctx, d, True)
        weight, bias = (t.detach().t().contiguous() for t in _book_params(ctx, d, False))
        weight_c, bias_c = weight.clone(), bias.clone()
        weight_1, bias_1 = weight.clone(), bias.clone()
        torch_model = _modules(ctx, torch.nn, torch.optim, d)
        our_model = _modules(ctx, fused_linreg.nn, fused_linreg.optim, d)
        step = static_compiled(hand_derived_step)
        fns: dict[str, Fn] = {
            _BOOK_CODE: lambda: book_epoch(features, labels, w0, b0, batch, d2l.data_iter, book_linreg,
                                           book_squared_loss, book_sgd),
            _D2L: lambda: book_epoch(features, labels, w1, b1, batch, d2l.data_iter, d2l.linreg, d2l.squared_loss,
                                     d2l.sgd),
            _TORCH_NN: lambda: module_epoch(features, labels, *torch_model, batch),
            _DROP_INS: lambda: module_epoch(features, labels, *our_model, batch),
            _COMPILED_STEP: lambda: compiled_step_epoch(step, features, labels, weight_c, bias_c, batch),
            _EPOCH: lambda: fused_linreg.linreg_epoch_(features, labels, weight, bias, lr=BOOK_LR, batch_size=batch),
            _EPOCH_BATCH1: lambda: fused_linreg.linreg_epoch_(features, labels, weight_1, bias_1, lr=BOOK_LR,
                                                              batch_size=1),
            _ESTIMATOR: _estimator_epoch(ctx, features, labels, batch),
        }
        if sklearn:
            fns[_SKLEARN] = _sklearn_epoch(features, labels)
        return fns

    return setup


def _book_benches(ctx: Context) -> list[Bench]:
    n, batch = ctx.sizes.book
    sklearn = importlib.util.find_spec("sklearn") is not None
    if not sklearn:
        ctx.notes.append("scikit-learn is not installed: the SGDRegressor rows are skipped (pip install scikit-learn)")
    impls = [Impl(_BOOK_CODE), Impl(_TORCH_NN), Impl(_COMPILED_STEP, compiled=True), Impl(_D2L, ours=True),
             Impl(_DROP_INS, ours=True), Impl(_EPOCH, ours=True), Impl(_EPOCH_BATCH1, ours=True),
             Impl(_ESTIMATOR, ours=True)]
    pairs = [(_BOOK_CODE, _D2L), (_BOOK_CODE, _DROP_INS), (_TORCH_NN, _DROP_INS), (_BOOK_CODE, _EPOCH),
             (_COMPILED_STEP, _EPOCH)]
    if sklearn:
        impls.append(Impl(_SKLEARN))
        pairs += [(_SKLEARN, _EPOCH), (_SKLEARN, _EPOCH_BATCH1), (_SKLEARN, _ESTIMATOR)]
    footprint = n * 3 * ctx.itemsize
    remark = (f"book epoch: one epoch of the book's training loop (it trains 3), lr {BOOK_LR}, each way shuffling "
              "the rows. The nn/optim loops use MSELoss (no ½) with lr/2, which makes the same update. "
              f"SGDRegressor (max_iter=1, tol=None, shuffle, learning_rate='constant', eta0={BOOK_LR}, "
              f"penalty=None) updates per example ({n} updates per epoch, float64 numpy, always on the CPU); "
              f"`linreg_epoch_ batch 1` makes as many updates; LinearRegression.partial_fit gets the same "
              "float64 numpy arrays as sklearn (converted on each call).")
    return [Bench("book", "book epoch", f"{n}x2, batch {batch}", tuple(impls), _book_setup(ctx, n, batch, sklearn),
                  footprint, None, tuple(pairs), rotate=False, remark=remark), *_estimator_benches(ctx)]


_FIT_EPOCHS = 3
_FIT_PAUSE_S = 0.3
_OURS_FIT = "LinearRegression().fit (defaults: normal equations)"
_OURS_SGD_FIT = f"LinearRegression(solver='sgd').fit ({_FIT_EPOCHS} epochs)"
_SGD_FIT = f"sklearn SGDRegressor.fit ({_FIT_EPOCHS} epochs)"
_CLOSED_FORM = "sklearn LinearRegression"
_SKLEARNEX = "sklearnex LinearRegression"


def estimator_data(n: int, d: int, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal numpy features and ``y = X @ w + 1 + noise`` (noise of std 1, so R² < 1)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 1.0 + rng.standard_normal(n)
    return X.astype(dtype), y.astype(dtype)


def _estimator_fit_models(ctx: Context, dtype: str) -> dict[str, Any]:
    """The estimators of an estimator-fit bench, by row name: SGD rows only on float64 data
    (SGDRegressor takes nothing else), scikit-learn-intelex's where it is installed."""
    from sklearn.linear_model import LinearRegression as ClosedForm
    from sklearn.linear_model import SGDRegressor

    models: dict[str, Any] = {_OURS_FIT: fused_linreg.LinearRegression(device=ctx.device), _CLOSED_FORM: ClosedForm()}
    if dtype == "float64":
        models[_OURS_SGD_FIT] = fused_linreg.LinearRegression(solver="sgd", max_iter=_FIT_EPOCHS, tol=None,
                                                              random_state=0, device=ctx.device)
        models[_SGD_FIT] = SGDRegressor(max_iter=_FIT_EPOCHS, tol=None, random_state=0)
    if importlib.util.find_spec("sklearnex") is not None:
        from sklearnex.linear_model import LinearRegression as IntelexLinearRegression

        models[_SKLEARNEX] = IntelexLinearRegression()
    return models


def _estimator_fit_setup(ctx: Context, n: int, d: int, dtype: str) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        X, y = estimator_data(n, d, dtype)
        return {name: (lambda model=model: model.fit(X, y))
                for name, model in _estimator_fit_models(ctx, dtype).items()}

    return setup


def _estimator_fit_r2(ctx: Context, n: int, d: int, dtype: str) -> str:
    """The training R² of each, for the remark (each fitted once, as timed)."""
    X, y = estimator_data(n, d, dtype)
    scores = ", ".join(f"{name} {model.fit(X, y).score(X, y):.7f}"
                       for name, model in _estimator_fit_models(ctx, dtype).items())
    return f"training R²: {scores}"


def _estimator_benches(ctx: Context) -> list[Bench]:
    """``fit`` on numpy, as a scikit-learn user calls it (needs scikit-learn; scikit-learn-intelex,
    in the bench extra, adds its row)."""
    if importlib.util.find_spec("sklearn") is None:
        return []
    benches = []
    for n, d, dtype in ctx.sizes.estimator:
        names = list(_estimator_fit_models(ctx, dtype))
        impls = tuple(Impl(name, ours=name in (_OURS_FIT, _OURS_SGD_FIT)) for name in names)
        pairs = [(base, _OURS_FIT) for base in (_SKLEARNEX, _CLOSED_FORM) if base in names]
        if _SGD_FIT in names:
            pairs.append((_SGD_FIT, _OURS_SGD_FIT))
        remark = (f"estimator fit: {n}x{d} {dtype} numpy (whatever --dtype says): our defaults solve the normal "
                  "equations (one pass over X, float64 sums, Cholesky), as exact as scikit-learn's and "
                  "scikit-learn-intelex's LinearRegression"
                  + (f"; our SGD solver and SGDRegressor run {_FIT_EPOCHS} epochs each (max_iter={_FIT_EPOCHS}, "
                     "tol=None; batch 32 against per-example updates)" if dtype == "float64" else "")
                  + f"; {_estimator_fit_r2(ctx, n, d, dtype)}. Each timed block follows a {_FIT_PAUSE_S} s pause: "
                  "a BLAS's threads spin for a while after a call returns and would take the cores from whatever "
                  "ran next, making it look slower than it is.")
        itemsize = np.dtype(dtype).itemsize
        benches.append(Bench("book", "estimator fit", f"{n}x{d} {dtype}", impls,
                             _estimator_fit_setup(ctx, n, d, dtype), n * d * itemsize, None, tuple(pairs),
                             rotate=False, remark=remark, pause_s=_FIT_PAUSE_S))
    return benches


# ---------------------------------------------------------------------------
# train: one step of the idiomatic training loop with the drop-ins.
# ---------------------------------------------------------------------------

_TORCH_TRAIN = "torch nn+optim (SGD fused=True)"
_OURS_TRAIN = "fused_linreg nn+optim"
_TRAIN_MOMENTUM = 0.9


def _train_step(ctx: Context, nn: ModuleType, optim: ModuleType, batch: int, d: int, k: int, mode: str,
                **sgd_kwargs: bool) -> Fn:
    """One step of ``nn.Linear(d, k)`` + ``MSELoss`` + ``SGD(momentum=0.9)`` on a fresh minibatch.

    ``mode``: "eager"; "scaler" (``torch.amp.GradScaler``: scaled backward, unscale/inf check, update);
    "compile" (forward+loss and ``optimizer.step`` each under ``torch.compile``, backward eager)."""
    model = nn.Linear(d, k).to(ctx.device, ctx.dtype)
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=1e-3, momentum=_TRAIN_MOMENTUM, **sgd_kwargs)
    X, y = ctx.randn(batch, d), ctx.randn(batch, k)

    def forward() -> Tensor:
        return loss_fn(model(X), y)

    if mode == "scaler":
        scaler = torch.amp.GradScaler(ctx.device.type)

        def scaled_step() -> None:
            optimizer.zero_grad()
            scaler.scale(forward()).backward()
            scaler.step(optimizer)
            scaler.update()

        return scaled_step
    compiled = mode == "compile"
    loss_of = static_compiled(forward) if compiled else forward
    update = static_compiled(optimizer.step) if compiled else optimizer.step

    def step() -> None:
        optimizer.zero_grad()
        loss_of().backward()
        update()

    return step


def _train_setup(ctx: Context, mode: str) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        batch, d, k = ctx.sizes.train
        return {
            _TORCH_TRAIN: _train_step(ctx, torch.nn, torch.optim, batch, d, k, mode, fused=True),
            _OURS_TRAIN: _train_step(ctx, fused_linreg.nn, fused_linreg.optim, batch, d, k, mode),
        }

    return setup


def _train_benches(ctx: Context) -> list[Bench]:
    batch, d, k = ctx.sizes.train
    shape = f"{batch}x{d} -> {k}"
    footprint = (batch * d + batch * k + 3 * d * k) * ctx.itemsize
    remark = (f"train: one step of the idiomatic loop (zero_grad, nn.Linear({d}, {k}), MSELoss, backward, "
              f"SGD(momentum={_TRAIN_MOMENTUM}) step) on a {batch}-row minibatch, torch's modules with "
              "SGD(fused=True) against our drop-ins; with GradScaler (scale, unscale and inf check, update), and "
              "with the forward+loss and optimizer.step each under torch.compile (backward eager; compilation "
              "excluded).")
    benches = []
    for mode, op in (("eager", "train step"), ("scaler", "train step, GradScaler"),
                     ("compile", "train step, torch.compile")):
        compiled = mode == "compile"
        impls = (Impl(_TORCH_TRAIN, compiled=compiled), Impl(_OURS_TRAIN, ours=True, compiled=compiled))
        benches.append(Bench("train", op, shape, impls, _train_setup(ctx, mode), footprint, rotate=False,
                             remark=remark if mode == "eager" else ""))
    return benches


# ---------------------------------------------------------------------------
# step: one full-batch step on a large X.
# ---------------------------------------------------------------------------

_BOOK_STEP = "book eager + autograd"
_HAND_STEP = "hand-derived step (eager)"
_COMPILED_BOOK_STEP = "torch.compile(book loss) + autograd"
_NN_FOREACH = "nn.Linear+MSELoss+SGD foreach"
_NN_FUSED = "nn.Linear+MSELoss+SGD fused=True"
_OURS_STEP = "linreg_step_"
_READ_X = "X.amax() (one read of X)"


def _book_step(loss_sum: Callable[..., Tensor], X: Tensor, y: Tensor, w: Tensor, b: Tensor) -> None:
    """The book's full-batch step: forward, summed loss, autograd backward, the book's sgd."""
    loss_sum(X, y, w, b).backward()
    book_sgd([w, b], BOOK_LR, X.shape[0])


def _nn_step(ctx: Context, X: Tensor, y: Tensor, nn: ModuleType, optim: ModuleType, **sgd_kwargs: bool) -> Fn:
    """One full-batch step of the idiomatic loop: zero_grad, MSELoss, backward, optimizer step."""
    model, loss_fn, optimizer = _modules(ctx, nn, optim, X.shape[1], y.shape[1], **sgd_kwargs)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()

    return step


def _step_setup(ctx: Context, rows: int, d: int, k: int) -> Callable[[], Mapping[str, Fn]]:
    def setup() -> Mapping[str, Fn]:
        X = ctx.randn(rows, d)
        y = X @ ctx.randn(d, k) + 0.01 * ctx.randn(rows, k)
        w_cols = [ctx.randn(d, k).mul_(0.01).requires_grad_() for _ in range(2)]
        b_cols = [torch.zeros(k, device=ctx.device, dtype=ctx.dtype, requires_grad=True) for _ in range(2)]
        weights = [w_cols[0].detach().t().contiguous() for _ in range(3)]
        biases = [torch.zeros(k, device=ctx.device, dtype=ctx.dtype) for _ in range(3)]
        compiled_step, compiled_loss = static_compiled(hand_derived_step), static_compiled(book_loss_sum)
        return {
            _READ_X: X.amax,
            _BOOK_STEP: lambda: _book_step(book_loss_sum, X, y, w_cols[0], b_cols[0]),
            _COMPILED_BOOK_STEP: lambda: _book_step(compiled_loss, X, y, w_cols[1], b_cols[1]),
            _HAND_STEP: lambda: hand_derived_step(X, y, weights[0], biases[0], BOOK_LR),
            _COMPILED_STEP: lambda: compiled_step(X, y, weights[1], biases[1], BOOK_LR),
            _NN_FOREACH: _nn_step(ctx, X, y, torch.nn, torch.optim, foreach=True),
            _NN_FUSED: _nn_step(ctx, X, y, torch.nn, torch.optim, fused=True),
            _DROP_INS: _nn_step(ctx, X, y, fused_linreg.nn, fused_linreg.optim),
            _OURS_STEP: lambda: fused_linreg.linreg_step_(X, y, weights[2], biases[2], lr=BOOK_LR),
        }

    return setup


def _step_benches(ctx: Context) -> list[Bench]:
    impls = (Impl(_READ_X, reference=True), Impl(_BOOK_STEP), Impl(_COMPILED_BOOK_STEP, compiled=True), Impl(_HAND_STEP),
             Impl(_COMPILED_STEP, compiled=True), Impl(_NN_FOREACH), Impl(_NN_FUSED),
             Impl(_DROP_INS, ours=True), Impl(_OURS_STEP, ours=True))
    pairs = tuple((b.name, _OURS_STEP) for b in impls if not b.ours) + ((_NN_FOREACH, _DROP_INS),)
    remark = ("linreg step: one full-batch SGD step (forward, loss, backward, update) on a large X; the floor is "
              "one read of X and y. The row against `X.amax()` times that read on the same X right beside ours "
              "(immune to bandwidth drift): its speed-up is ours' fraction of the read floor. The nn loops use "
              "MSELoss with lr/2 (the same update); torch.compile's compilation is excluded (see its table). "
              "With several outputs the step does 4·n·d·k flops (forward and gradient), which at k = 16 take "
              "longer than the read on a CPU: % of floor then uses the matmul rate.")
    benches = []
    for rows, d, k in ctx.sizes.step:
        x_bytes, y_bytes = rows * d * ctx.itemsize, rows * k * ctx.itemsize
        traffic = Traffic(read=x_bytes + y_bytes, flops=4 * rows * d * k)
        benches.append(Bench("step", "linreg step", f"{rows}x{d} -> {k}", impls, _step_setup(ctx, rows, d, k),
                             x_bytes + y_bytes, traffic, pairs, rotate=False, remark=remark))
    return benches


_BUILDERS: dict[str, Callable[[Context], list[Bench]]] = {
    "bandwidth": _bandwidth_benches,
    "overhead": _overhead_benches,
    "linear": _linear_benches,
    "loss": _loss_benches,
    "sgd": _sgd_benches,
    "book": _book_benches,
    "train": _train_benches,
    "step": _step_benches,
}


def build_benches(ctx: Context, suites: Sequence[str]) -> list[Bench]:
    """The benches of ``suites``, in suite order; the bandwidth suite always comes first (it gives the floors)."""
    wanted = ["bandwidth", *(s for s in SUITES if s in suites and s != "bandwidth")]
    if not ctx.compile:
        ctx.notes.append("torch.compile rows were not run (--no-compile, the default with --quick)")
    benches = [bench for suite in wanted for bench in _BUILDERS[suite](ctx)]
    if ctx.compile:
        return benches
    # A bench of compiled implementations only (the compiled train step) goes entirely.
    return [_without_compiled(bench) for bench in benches if not all(i.compiled for i in bench.impls)]


def _without_compiled(bench: Bench) -> Bench:
    """The bench without its torch.compile implementations (and the rows that use them)."""
    compiled = {i.name for i in bench.impls if i.compiled}
    impls = tuple(i for i in bench.impls if not i.compiled)
    pairs = tuple(p for p in bench.pairs if not compiled.intersection(p))
    return replace(bench, impls=impls, pairs=pairs)
