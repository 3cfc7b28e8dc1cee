"""The benchmark report cannot be misread: a disturbed run warns above the table and in the plot
titles, its rows say "unreliable" instead of a ratio, the summary judges only reliable rows, and the
time-vs-size plot joins only sizes of one series, keeps its legends off the data and its tick labels
apart."""

import dataclasses
import importlib.util
import itertools

import pytest

from fused_linreg.bench.report import Rates, Report, Row, _plot_time_vs_size, mark_unreliable, markdown, write_report

NOT_SLOWER = "We are not slower than any baseline"


def row(op="linear fwd", shape="1000x64 -> 1", footprint=1 << 20, base_ms=2.0, ours_ms=1.0, ours_pct=80.0,
        baseline="F.linear"):
    return Row(suite="linear", op=op, shape=shape, dtype="float32", footprint_bytes=footprint, baseline=baseline,
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


def test_a_disturbed_run_claims_nothing_about_speed():
    text = markdown(report(mark_unreliable([row(), row(shape="4000x64 -> 1")], whole_run=True),
                           ["other processes kept 1.50 cores busy"]))
    assert NOT_SLOWER not in text
    assert "No reliable comparison in this run: all 2 rows" in text and "rerun on a quiet machine" in text


def test_rows_implausible_one_by_one_claim_nothing_either():
    rows = mark_unreliable([row(ours_pct=22535.0), row(shape="10x2 -> 1", ours_pct=9000.0)], whole_run=False)
    text = markdown(report(rows))
    assert NOT_SLOWER not in text and "No reliable comparison in this run" in text


def test_the_claim_is_limited_to_the_reliable_rows_and_counts_the_others():
    rows = mark_unreliable([row(), row(shape="4000x64 -> 1"), row(shape="10x2 -> 1", ours_pct=22535.0)],
                           whole_run=False)
    text = markdown(report(rows))
    assert f"{NOT_SLOWER} in the 2 reliable row(s) of this run." in text
    assert "1 row(s) marked unreliable are left out" in text
    assert f"{NOT_SLOWER} in this run." not in text


def test_a_slower_reliable_row_is_listed_and_the_unreliable_ones_counted():
    rows = mark_unreliable([row(base_ms=1.0, ours_ms=2.0), row(shape="10x2 -> 1", base_ms=1.0, ours_ms=2.0,
                                                                ours_pct=22535.0)], whole_run=False)
    text = markdown(report(rows))
    assert NOT_SLOWER not in text
    listed = text[text.index("Rows where we are slower"):].splitlines()
    assert [line for line in listed if line.startswith("- ")] == [
        "- linear fwd 1000x64 -> 1: fused_linreg.linear 2 ms vs F.linear 1 ms (0.50×)"]
    assert "1 row(s) marked unreliable are left out" in text


def test_a_quiet_run_that_never_loses_says_so():
    text = markdown(report(mark_unreliable([row(), row(shape="4000x64 -> 1")], whole_run=False)))
    assert f"{NOT_SLOWER} in this run." in text and "unreliable" not in text


def test_a_run_without_comparisons_claims_nothing():
    bandwidth_only = dataclasses.replace(row(), ours=None, ours_ms=None, ours_iqr_ms=None, ours_runs=None,
                                         speedup=None, ours_pct_of_floor=None)
    text = markdown(report([bandwidth_only]))
    assert NOT_SLOWER not in text and "No row of this run compares ours with a baseline" in text


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
def test_time_vs_size_with_many_implementations_keeps_legend_off_the_data_and_ticks_apart(tmp_path):
    """linreg step's shape: 8 implementations in 3 series (-> 1, 4, 16) at sizes under one decade apart
    (a legend entry per implementation and series made 27 entries over the data, and matplotlib
    labelled the minor ticks on top of each other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = ((100_000, 270_000_000, 9.0), (120_000, 330_000_000, 11.0))  # rows, footprint, our ms
    rows = [row(op="linreg step", shape=f"{n}x64 -> {k}", footprint=footprint, base_ms=ms * (1 + b), ours_ms=ms,
                baseline=f"baseline number {b}")
            for (n, footprint, ms), k, b in itertools.product(sizes, (1, 4, 16), range(7))]
    figure = _plot_time_vs_size(rows, plt)
    figure.savefig(tmp_path / "time_vs_size.png", dpi=90, bbox_inches="tight")
    assert (tmp_path / "time_vs_size.png").stat().st_size > 0
    figure.canvas.draw()
    ax = figure.axes[0]
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 8 + 1 + 3  # implementations, the floor, the series
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())
    for axis in ("x", "y"):
        gaps = _tick_label_gaps(ax, axis)
        assert gaps and min(gaps) >= 4, (axis, gaps)  # at least two labels, 4 pixels apart
    plt.close(figure)


def _tick_label_gaps(ax, axis):
    """Pixels between neighbouring tick labels of ``ax``'s ``axis`` ("x" or "y") within the panel
    (matplotlib keeps labels of ticks outside the view too); negative where they overlap."""
    start, end = ("x0", "x1") if axis == "x" else ("y0", "y1")
    inside = ax.get_window_extent()
    boxes = [t.get_window_extent() for t in getattr(ax, f"get_{axis}ticklabels")(which="both")
             if t.get_visible() and t.get_text()]
    boxes = sorted((b for b in boxes
                    if getattr(inside, start) <= (getattr(b, start) + getattr(b, end)) / 2 <= getattr(inside, end)),
                   key=lambda b: getattr(b, start))
    return [getattr(b, start) - getattr(a, end) for a, b in zip(boxes, boxes[1:])]


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
