"""Every fused_linreg operator is a real torch op with a kernel per device, a fake kernel
for torch.compile, and autograd where it is differentiable."""

import pytest
import torch

import fused_linreg

FOUNDATION_OPS = [
    "linear", "linear_backward_input", "linear_backward_params", "squared_loss", "squared_loss_backward",
    "mse_loss", "mse_loss_backward", "sgd_", "sgd_.tensor_lr",
]
DIFFERENTIABLE_OPS = ["linear", "squared_loss", "mse_loss"]


def registered_ops() -> list[str]:
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("fused_linreg::"))


def has_kernel(name: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)


def build_has_cuda_kernels() -> bool:
    """Whether the compiled library contains device code (nvcc's fat binary section)."""
    with open(fused_linreg._C.__file__, "rb") as library:
        return b".nv_fatbin" in library.read()


def test_foundation_ops_are_registered():
    assert {f"fused_linreg::{name}" for name in FOUNDATION_OPS} <= set(registered_ops())
    assert isinstance(torch.ops.fused_linreg.sgd_, torch._ops.OpOverloadPacket)


@pytest.mark.parametrize("name", registered_ops())
def test_every_op_has_a_cpu_kernel_and_a_fake_kernel(name):
    assert has_kernel(name, "CPU")
    assert has_kernel(name, "Meta"), f"{name} has no fake kernel (torch.library.register_fake)"


@pytest.mark.parametrize("name", DIFFERENTIABLE_OPS)
def test_differentiable_ops_have_autograd_and_autocast(name):
    qualified = f"fused_linreg::{name}"
    assert has_kernel(qualified, "Autograd")
    assert has_kernel(qualified, "AutocastCPU") and has_kernel(qualified, "AutocastCUDA")


@pytest.mark.skipif(torch.version.cuda is None or not build_has_cuda_kernels(),
                    reason="this build of fused_linreg has no CUDA kernels")
@pytest.mark.parametrize("name", registered_ops())
def test_every_op_has_a_cuda_kernel_when_built_with_cuda(name):
    assert has_kernel(name, "CUDA")


@pytest.mark.cuda
def test_a_gpu_machine_runs_a_cuda_build():
    """With a visible GPU the CUDA tests need CUDA kernels: a CPU-only build fails here first."""
    assert build_has_cuda_kernels()
