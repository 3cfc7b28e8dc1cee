"""The scripts in examples/ run as a user runs them (small arguments) and learn the book's
parameters."""

import pathlib
import re
import subprocess
import sys


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def learned_errors(output: str) -> list[float]:
    """|learned - true| of every w and b the script reports ("learned w: [..], true w: [..]",
    "learned b: .., true b: ..")."""
    pairs = re.findall(r"learned w: \[([^]]*)\], true w: \[([^]]*)\]", output)
    pairs += re.findall(r"learned b: ([-0-9.e]+), true b: ([-0-9.e]+)", output)
    return [abs(float(a) - float(b)) for learned, true in pairs for a, b in zip(learned.split(","), true.split(","))]


def test_book_linear_regression():
    output = run_example("book_linear_regression.py")
    errors = learned_errors(output)
    assert len(errors) == 9, output  # w (2) and b: the epoch op, the estimator's SGD and its exact solver
    assert max(errors) < 0.1, output


def test_ddp_linear_regression_with_two_processes():
    output = run_example("ddp_linear_regression.py", "--world-size", "2")
    errors = learned_errors(output)
    assert len(errors) == 3 and max(errors) < 0.1, output
    assert "largest parameter difference between them: 0" in output
