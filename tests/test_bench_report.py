"""The benchmark report cannot be misread: a disturbed run warns above the table and in the plot
titles, its rows say "unreliable" instead of a ratio, and the time-vs-size plot joins only sizes of
one series."""

import importlib.util

import pytest

from fused_linreg.bench.report import Rates, Report, Row, _plot_time_vs_size, mark_unreliable, markdown, write_report


def row(op="linear fwd", shape="1000x64 -> 1", footprint=1 << 20, base_ms=2.0, ours_ms=1.0, ours_pct=80.0):
    return Row(suite="linear", op=op, shape=shape, dtype="float32", footprint_bytes=footprint, baseline="F.linear",
               baseline_ms=base_ms, baseline_iqr_ms=0.01, baseline_runs=10, ours="fused_linreg.linear",
               ours_ms=ours_ms, ours_iqr_ms=0.01, ours_runs=10, speedup=base_ms / ours_ms, floor_ms=0.8,
               baseline_pct_of_floor=40.0, ours_pct_of_floor=ours_pct, note="")


def report(rows, warnings=()):
    return Report(machine={"cpu": "test CPU", "cores": 2, "threads": 2, "torch": "x", "date": "today"},
                  settings={"dtype": "float32"}, rates=Rates(30.0, 30.0, 50.0, 150.0), rows=list(rows),
                  warmups=[], notes=[], errors=[], warnings=list(warnings))


def test_a_disturbed_run_warns_above_the_table_and_no_row_shows_a_ratio():
    text = markdown(report(mark_unreliable([row(), row(shape="4000x64 -> 1")], whole_run=True),
                           ["other processes kept 1.50 cores busy"]))
    assert text.index("WARNING: other processes kept 1.50 cores busy") < text.index("| suite |")
    table = [line for line in text.splitlines() if line.startswith("| linear")]
    assert len(table) == 2 and all("unreliable" in line and "×" not in line and "%" not in line for line in table)
    assert "Rows where we are slower" not in text


def test_only_an_implausible_row_is_unreliable_in_a_quiet_run():
    rows = mark_unreliable([row(), row(shape="10x2 -> 1", ours_pct=22535.0)], whole_run=False)
    assert [r.reliable for r in rows] == [True, False]
    lines = [line for line in markdown(report(rows)).splitlines() if line.startswith("| linear")]
    assert "2.00×" in lines[0] and "80%" in lines[0]
    assert "unreliable" in lines[1] and "×" not in lines[1]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed")
def test_time_vs_size_joins_only_one_series():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row(shape="16384x64 -> 1", footprint=1 << 22), row(shape="65536x64 -> 1", footprint=1 << 24),
            row(shape="4096x16 -> 4", footprint=1 << 18)]
    figure = _plot_time_vs_size(rows, plt)
    sizes = {1 << 22: "1", 1 << 24: "1", 1 << 18: "4"}
    for line in figure.axes[0].lines:
        assert len({sizes[int(x)] for x in line.get_xdata()}) == 1, line.get_label()
    plt.close(figure)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed")
def test_plot_titles_carry_the_warning(tmp_path, monkeypatch):
    titles = []
    import matplotlib.figure

    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, text, **kw: titles.append(text) or original(self, text, **kw))
    rows = mark_unreliable([row(), row(shape="4000x64 -> 1", footprint=1 << 22)], whole_run=True)
    write_report(report(rows, ["implausible machine rates"]), tmp_path)
    assert titles and all("WARNING: implausible machine rates" in t for t in titles)


def test_gemm_labels_follow_each_devices_skinny_bound():
    """csrc/linear_shapes.h's bounds, read through fused_linreg._C: the CPU's 16, CUDA's 4."""
    import torch

    import fused_linreg
    from fused_linreg.bench import cases, suites

    assert (fused_linreg._C.SKINNY_MAX_OUT_CPU, fused_linreg._C.SKINNY_MAX_OUT_CUDA) == (16, 4)
    for device, bound in (("cpu", 16), ("cuda", 4)):
        ctx = cases.Context(torch.device(device), torch.float32, cases.sizes_for(torch.device(device), False), False)
        for bench in suites._linear_benches(ctx):
            out = int(bench.shape.split("->")[1])
            assert ("vendor BLAS" in bench.note) == (out > bound), (device, bench.shape)
