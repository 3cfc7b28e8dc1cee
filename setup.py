"""Builds fused_linreg._C: the ops' fronts from csrc/*.cpp, their CPU kernels from
csrc/cpu/*.cpp and, when a CUDA toolkit and a CUDA build of torch are present,
their CUDA kernels from csrc/cuda/*.cu.

Environment switches:
  FUSED_LINREG_CPU_ONLY=1   never build the CUDA kernels.
  FORCE_CUDA=1              build them even if torch sees no GPU; fail if impossible.
  FUSED_LINREG_PORTABLE=1   no host-specific ISA flags (binaries that run on any x86-64).
  TORCH_CUDA_ARCH_LIST      GPU architectures (default "8.0;9.0" when no GPU is visible).
  FUSED_LINREG_SANITIZE=1   the CPU kernels only, with AddressSanitizer and UndefinedBehaviorSanitizer
                            (`make sanitize` builds this into build/sanitize/ and runs the tests).
"""

import glob
import os
import platform

# torch guesses CUDA_HOME from `which nvcc`; on these machines that is a wrapper in
# /usr/local/bin, so prefer the real toolkit before torch's build helpers load.
if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def want_cuda() -> bool:
    if env_flag("FUSED_LINREG_CPU_ONLY") or env_flag("FUSED_LINREG_SANITIZE"):
        return False
    have_toolkit = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if env_flag("FORCE_CUDA"):
        if not have_toolkit:
            raise RuntimeError(
                "FORCE_CUDA=1 but CUDA cannot be built: "
                f"CUDA_HOME={cpp_extension.CUDA_HOME!r}, torch.version.cuda={torch.version.cuda!r}"
            )
        return True
    return have_toolkit


def cpu_isa_flags() -> list[str]:
    """Flags that let at::vec::Vectorized use AVX-512 or AVX2 on the build host.

    Without CPU_CAPABILITY_* ATen's Vectorized is the generic scalar version."""
    if env_flag("FUSED_LINREG_PORTABLE") or platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "avx2"}
    if avx512.issubset(flags):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if {"avx2", "fma"}.issubset(flags):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def extension():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    sanitize = env_flag("FUSED_LINREG_SANITIZE")
    # Sanitized: -O1 and frame pointers give exact stack traces in the reports (and a faster build).
    sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"] if sanitize else []
    cxx_flags = ["-O1" if sanitize else "-O3", "-fopenmp", "-fno-math-errno", *cpu_isa_flags(), *sanitizers]
    extra = {"cxx": cxx_flags}
    link = ["-fopenmp", *sanitizers]
    if want_cuda():
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # torch's arch detection fails without a visible GPU.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        extra["nvcc"] = ["-O3", "-lineinfo", "-DFUSED_LINREG_WITH_CUDA"]
        cxx_flags.append("-DFUSED_LINREG_WITH_CUDA")
        return cpp_extension.CUDAExtension(
            "fused_linreg._C", sources, extra_compile_args=extra, extra_link_args=link,
            include_dirs=[os.path.join(ROOT, "csrc")], py_limited_api=False,
        )
    return cpp_extension.CppExtension(
        "fused_linreg._C", sources, extra_compile_args=extra, extra_link_args=link,
        include_dirs=[os.path.join(ROOT, "csrc")],
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
