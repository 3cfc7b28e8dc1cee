"""Runtime CPU dispatch: the CPU kernels are compiled for any x86-64 (DEFAULT), AVX2 and AVX-512,
and the best one the CPU supports runs unless FUSED_LINREG_CPU_CAPABILITY forces a lower one.
Each capability's results agree with PyTorch and with each other within the dtype's tolerance."""

import io
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

import fused_linreg

CAPABILITIES = ["default", "avx2", "avx512"]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def best_capability() -> str:
    if platform.machine() not in ("x86_64", "AMD64"):
        return "default"
    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "default"


def run_with_capability(capability: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FUSED_LINREG_CPU_CAPABILITY=capability)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_best_supported_capability_runs_unless_forced():
    forced = os.environ.get("FUSED_LINREG_CPU_CAPABILITY")
    expected = best_capability()
    if forced:
        expected = min(forced.lower(), expected, key=CAPABILITIES.index)
    assert fused_linreg.cpu_capability == expected


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_a_forced_capability_is_lowered_to_what_the_cpu_supports(capability):
    result = run_with_capability(capability, "import fused_linreg; print(fused_linreg.cpu_capability)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == min(capability, best_capability(), key=CAPABILITIES.index)


def test_an_unknown_capability_name_raises_at_import():
    result = run_with_capability("sse9", "import fused_linreg")
    assert result.returncode != 0
    assert "FUSED_LINREG_CPU_CAPABILITY must be default, avx2 or avx512, got 'sse9'" in result.stderr


# Every CPU kernel once (linear forward and both backwards, both losses and their backwards, sgd_
# with momentum, linreg_grad, linreg_step_ and linreg_epoch_), float32 and float64; prints the
# results as a list of float64 tensors for the parent to compare.
EVERY_KERNEL = """
import io, sys, torch, fused_linreg as fl
results = []
for dtype in (torch.float32, torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 37, generator=g, dtype=dtype)
    y = torch.randn(300, 3, generator=g, dtype=dtype)
    w = torch.randn(3, 37, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=dtype, requires_grad=True)
    out = fl.linear(x.requires_grad_(), w, b)
    loss = fl.mse_loss(out, y) + fl.squared_loss(out, y, "sum")
    loss.backward()
    results += [out, loss, x.grad, w.grad, b.grad]
    params = [w.detach().clone(), b.detach().clone()]
    buffers = [None, None]
    for _ in range(3):
        fl.sgd_(params, [w.grad, b.grad], buffers, lr=0.01, momentum=0.9, weight_decay=0.01)
    results += params + buffers
    results += list(fl.linreg_grad(x.detach(), y, *params))
    weight, bias = params[0].clone(), params[1].clone()
    results.append(fl.linreg_step_(x.detach(), y, weight, bias, lr=0.01))
    state = {}
    results.append(fl.linreg_epoch_(x.detach(), y, weight, bias, lr=0.01, batch_size=32, momentum=0.9, state=state,
                                    indices=torch.randperm(300, generator=g)))
    results += [weight, bias]
buffer = io.BytesIO()
torch.save([r.detach().double() for r in results], buffer)
sys.stdout.buffer.write(buffer.getvalue())
"""


def test_every_capability_computes_what_the_default_kernels_compute():
    """The kernels of each capability the CPU supports, run in a subprocess each, agree with the
    DEFAULT (generic, scalar-vector) kernels within float32's tolerance (the order of the sums
    differs with the vector width) and to 1e-10 in float64."""
    results = {}
    for capability in CAPABILITIES[: CAPABILITIES.index(best_capability()) + 1]:
        env = dict(os.environ, FUSED_LINREG_CPU_CAPABILITY=capability)
        done = subprocess.run([sys.executable, "-c", EVERY_KERNEL], env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        results[capability] = torch.load(io.BytesIO(done.stdout))
    reference = results["default"]
    half = len(reference) // 2  # float32 results first, then float64
    for capability, got in results.items():
        for i, (a, b) in enumerate(zip(got, reference)):
            tolerance = 1e-4 if i < half else 1e-10
            torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance, msg=f"{capability}, result {i}")
