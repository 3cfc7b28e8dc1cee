"""The benchmark suite's smoke run: ``python -m fused_linreg.bench --quick`` on the CPU.

No timing is asserted (CI machines are noisy); the run must finish, write its files,
and have rows for every suite with no implementation failing.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from fused_linreg.bench.cases import SUITES


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "fused_linreg.bench", "--quick", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def test_writes_table_csv_json(quick_run):
    out, _ = quick_run
    for name in ("bench.md", "bench.csv", "bench.json"):
        assert (out / name).stat().st_size > 0, name


def test_plots_when_matplotlib_is_installed(quick_run):
    out, _ = quick_run
    plots = sorted(p.name for p in out.glob("*.png"))
    expected = ["bench_speedup.png", "bench_time_vs_size.png"] if importlib.util.find_spec("matplotlib") else []
    assert plots == expected


def test_every_suite_has_rows_and_nothing_failed(quick_run):
    out, _ = quick_run
    report = json.loads((out / "bench.json").read_text())
    assert report["errors"] == []
    assert {row["suite"] for row in report["rows"]} == set(SUITES)
    assert all(row["baseline_ms"] > 0 for row in report["rows"])
    compared = [row for row in report["rows"] if row["suite"] != "bandwidth"]
    assert all(row["ours_ms"] > 0 and row["speedup"] > 0 for row in compared)
    rates = report["rates"]
    assert all(rates[key] > 0 for key in ("read_gbs", "copy_gbs", "inplace_gbs", "gflops"))
    for key in ("cpu", "cores", "torch", "date"):
        assert report["machine"][key], key


def test_stdout_table_has_a_row_per_suite(quick_run):
    _, stdout = quick_run
    table = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| suite")]
    assert {line.split("|")[1].strip() for line in table} == set(SUITES)


def test_sklearn_rows_follow_its_installation(quick_run):
    out, _ = quick_run
    report = json.loads((out / "bench.json").read_text())
    has_sklearn_rows = any("SGDRegressor" in row["baseline"] for row in report["rows"])
    assert has_sklearn_rows == (importlib.util.find_spec("sklearn") is not None)


def test_one_suite_alone(tmp_path):
    # The bandwidth suite alone has no comparison: its table and files, but no plot, and no error.
    proc = subprocess.run(
        [sys.executable, "-m", "fused_linreg.bench", "--quick", "--suite", "bandwidth", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {row["suite"] for row in report["rows"]} == {"bandwidth"}
    assert not list(tmp_path.glob("*_speedup.png"))


def test_unknown_suite_is_rejected():
    proc = subprocess.run([sys.executable, "-m", "fused_linreg.bench", "--suite", "nope"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown suite" in proc.stderr
