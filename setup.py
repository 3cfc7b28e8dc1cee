"""Builds fused_linreg._C: the ops' fronts from csrc/*.cpp, their CPU kernels from
csrc/cpu/*.cpp and, when a CUDA toolkit and a CUDA build of torch are present,
their CUDA kernels from csrc/cuda/*.cu.

The CPU kernels are compiled once per CPU capability, as ATen compiles its own:
for any x86-64 (DEFAULT) and, on x86-64, again for AVX2+FMA and AVX-512; the
binary runs everywhere and picks the best its CPU supports when it loads
(fused_linreg.cpu_capability says which).

Environment switches:
  FUSED_LINREG_CPU_ONLY=1   never build the CUDA kernels.
  FORCE_CUDA=1              build them even if torch sees no GPU; fail if impossible.
  TORCH_CUDA_ARCH_LIST      GPU architectures (default "8.0;9.0;10.0;12.0+PTX" when no GPU is visible).
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
DEFAULT_CUDA_ARCHS = "8.0;9.0;10.0;12.0+PTX"


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


# The CPU capabilities compiled beside DEFAULT on x86-64: their flags for the
# compiler and for at::vec::Vectorized (CPU_CAPABILITY_*, as ATen defines them).
CPU_CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
}


def capability_defines(name: str) -> list[str]:
    return [f"-DCPU_CAPABILITY={name}", f"-DCPU_CAPABILITY_{name}"]


def cpu_variants() -> dict[str, list[str]]:
    """The capabilities to compile beside DEFAULT: none off x86-64 or in a sanitizer build."""
    if platform.machine() not in ("x86_64", "AMD64") or env_flag("FUSED_LINREG_SANITIZE"):
        return {}
    return CPU_CAPABILITY_FLAGS


CPU_KERNEL_SOURCES = sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, which also compiles the CPU kernels once per capability
    (with ninja, like the rest) and links them after the DEFAULT objects: an inline
    function that several capabilities emit then resolves to the least demanding copy."""

    def build_extension(self, ext):
        variant_objects = []
        for name, flags in cpu_variants().items():
            base = [f for f in ext.extra_compile_args["cxx"] if not f.startswith("-DCPU_CAPABILITY")]
            variant_objects += self.compiler.compile(
                CPU_KERNEL_SOURCES, output_dir=os.path.join(self.build_temp, name.lower()),
                include_dirs=ext.include_dirs, extra_postargs={"cxx": [*base, *flags, *capability_defines(name)]},
            )
        ext.extra_objects = [*ext.extra_objects, *variant_objects]
        super().build_extension(ext)


def extension():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp"))) + CPU_KERNEL_SOURCES
    sanitize = env_flag("FUSED_LINREG_SANITIZE")
    # Sanitized: -O1 and frame pointers give exact stack traces in the reports (and a faster build).
    sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"] if sanitize else []
    cxx_flags = ["-O1" if sanitize else "-O3", "-fopenmp", "-fno-math-errno", *capability_defines("DEFAULT"),
                 *sanitizers]
    if cpu_variants():
        cxx_flags.append("-DFUSED_LINREG_CPU_VARIANTS")
    extra = {"cxx": cxx_flags}
    link = ["-fopenmp", *sanitizers]
    if want_cuda():
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # torch's arch detection fails without a visible GPU. Every GPU generation nvcc 13
            # builds for (A100, H100/H200, B200, RTX 50), and PTX of the newest, which the driver
            # compiles for GPUs that come later.
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
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
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
