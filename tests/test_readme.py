"""Every ```python block of README.md runs, in order, in one namespace (as a reader would paste
them), so the snippets cannot rot. Blocks that use CUDA are skipped without a GPU."""

import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    """(line number, source) of each ```python block."""
    text = README.read_text()
    return [(text.count("\n", 0, match.start()) + 2, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 5


def test_every_python_block_runs_in_order():
    namespace: dict[str, object] = {"__name__": "readme"}
    ran = 0
    for line, source in python_blocks():
        if "cuda" in source and not torch.cuda.is_available():
            continue
        try:
            exec(compile(source, f"README.md:{line}", "exec"), namespace)  # noqa: S102  (the README's own code)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"README.md block at line {line} failed: {type(exc).__name__}: {exc}\n{source}")
        ran += 1
    assert ran >= 5
