"""Importing the package and starting the bench CLI print nothing of torch's build helpers, and a
library that does not load under the installed torch says which torch it was built for."""

import subprocess
import sys

import torch

import fused_linreg


def stderr_of(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, timeout=120)
    return proc.stderr


def test_import_and_bench_cli_print_no_build_helper_warning():
    for args in (("-c", "import fused_linreg"), ("-m", "fused_linreg.bench", "--help")):
        stderr = stderr_of(*args)
        assert "CUDA_HOME" not in stderr and "No CUDA runtime" not in stderr, stderr


def test_a_library_built_for_another_torch_says_so_and_how_to_rebuild(monkeypatch):
    built = ".".join(torch.__version__.split("+")[0].split(".")[:3])
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    message = fused_linreg._load_failure(ImportError("_C.so: undefined symbol: _ZN3c104impl"))
    assert f"built against torch {built} but torch 9.9.9 is installed" in message
    assert "undefined symbol" in message
    assert "pip install --no-build-isolation --force-reinstall --no-deps ." in message


def test_a_load_failure_under_the_same_torch_keeps_its_cause():
    message = fused_linreg._load_failure(ImportError("libcudart.so.13: cannot open shared object file"))
    assert message == "fused_linreg: its compiled library failed to load: libcudart.so.13: cannot open shared object file"
