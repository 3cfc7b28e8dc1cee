"""The output of ``python -m fused_linreg.bench``: the rows, their floors, and the files.

A row compares one baseline with one of ours on one shape. Its floor is the time a
perfect implementation would take on this machine: the bytes that must move at the
measured bandwidth or the flops at the measured matmul rate, whichever is longer.
Bytes: for an in-place update (SGD) all of them at the rate of ``x.add_(y)``; otherwise
the reads beyond the writes at the read rate (``x.amax()``) and each written byte with
a read byte at the copy rate (``dst.copy_(src)``). The floor is a measured reference,
not a bound: an op that streams better than those kernels shows more than 100%.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import SUITES, Traffic

__all__ = ["Rates", "Report", "Row", "Warmup", "floor_seconds", "markdown", "write_report"]

# A row counts as a loss for us below this speed-up (timing noise is a few percent).
SLOWER = 0.95
# A time this far below its floor (% of floor above it) cannot be right: the floor's rates or the
# time were measured while something else ran.
IMPLAUSIBLE_PCT_OF_FLOOR = 150.0


@dataclass(frozen=True)
class Rates:
    """The machine's measured rates: read, copy and in-place bandwidth (GB/s of bytes read + written),
    matmul GFLOP/s."""

    read_gbs: float
    copy_gbs: float
    inplace_gbs: float
    gflops: float


def floor_seconds(traffic: Traffic, rates: Rates) -> float:
    """The least time ``traffic`` can take at ``rates`` (see the module docstring)."""
    if traffic.inplace:
        memory = (traffic.read + traffic.write) / (rates.inplace_gbs * 1e9)
    else:
        unpaired_reads = max(traffic.read - traffic.write, 0)
        memory = unpaired_reads / (rates.read_gbs * 1e9) + 2 * traffic.write / (rates.copy_gbs * 1e9)
    return max(memory, traffic.flops / (rates.gflops * 1e9))


@dataclass(frozen=True)
class Row:
    """One line of the table: a baseline and (except in the bandwidth suite) one of ours."""

    suite: str
    op: str
    shape: str
    dtype: str
    footprint_bytes: int
    baseline: str
    baseline_ms: float
    baseline_iqr_ms: float
    baseline_runs: int
    ours: str | None
    ours_ms: float | None
    ours_iqr_ms: float | None
    ours_runs: int | None
    speedup: float | None
    floor_ms: float | None
    baseline_pct_of_floor: float | None
    ours_pct_of_floor: float | None
    note: str
    reference: bool = False
    # False when the run was disturbed (a busy machine, implausible rates) or this row's time is
    # implausible: the table then says "unreliable" instead of its ratios.
    reliable: bool = True


@dataclass(frozen=True)
class Warmup:
    """The first call of a torch.compile implementation (compilation included), excluded from its timing."""

    op: str
    shape: str
    impl: str
    first_call_s: float
    steady_ms: float


@dataclass
class Report:
    """Everything a run produced."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    rates: Rates
    rows: list[Row]
    warmups: list[Warmup]
    notes: list[str]
    errors: list[str]
    # Why the timings may not describe the machine; shown above the table and in the plot titles.
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "warnings": self.warnings,
            "rates": dataclasses.asdict(self.rates),
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "compile_warmups": [dataclasses.asdict(w) for w in self.warmups],
            "notes": self.notes,
            "errors": self.errors,
        }


def format_time(ms: float | None) -> str:
    """``ms`` milliseconds with a unit that keeps three significant digits."""
    if ms is None or math.isnan(ms):
        return "—"
    if ms >= 1000:
        return f"{ms / 1000:.3g} s"
    if ms >= 1:
        return f"{ms:.3g} ms"
    return f"{ms * 1000:.3g} µs"


def mark_unreliable(rows: Sequence[Row], whole_run: bool) -> list[Row]:
    """The rows with ``reliable`` cleared: all of them when ``whole_run`` (the run was disturbed),
    else those whose time is implausibly far below their floor."""
    return [dataclasses.replace(r, reliable=False) if whole_run or _implausible(r) else r for r in rows]


def _implausible(row: Row) -> bool:
    return any(pct is not None and pct > IMPLAUSIBLE_PCT_OF_FLOOR
               for pct in (row.ours_pct_of_floor, None if row.reference else row.baseline_pct_of_floor))


def _pct(row: Row) -> str:
    if not row.reliable:
        return "unreliable"
    return "—" if row.ours_pct_of_floor is None else f"{row.ours_pct_of_floor:.0f}%"


def _speedup(row: Row) -> str:
    if row.speedup is None:
        return "—"
    if not row.reliable:
        return "unreliable"
    if row.reference:
        return f"{row.speedup:.0%} of it"
    text = f"{row.speedup:.2f}×"
    return f"**{text}**" if row.speedup < SLOWER else text


def _header(report: Report) -> list[str]:
    m, r = report.machine, report.rates
    device = m.get("gpu") or (f"{m['cpu']} ({m['cores']} cores, {m['threads']} threads used; CPU kernels "
                              f"{m.get('fused_linreg_cpu_capability', '?')})")
    return [
        f"fused_linreg benchmarks — {device}; torch {m['torch']}, {report.settings['dtype']}, {m['date']}",
        "",
        (f"Measured rates: read {r.read_gbs:.1f} GB/s, copy {r.copy_gbs:.1f} GB/s and in-place update "
         f"{r.inplace_gbs:.1f} GB/s (bytes read + written), matmul {r.gflops:.0f} GFLOP/s. Times are medians "
         "(IQR in the CSV/JSON); the floor is the time the bytes that must move (or the flops) take at those "
         "rates, and % of floor = floor / our time (above 100%: the op streams better than the reference "
         f"kernel); speed-up = baseline / ours (bold: we are slower, below {SLOWER}×)."),
        "",
    ]


def _table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| suite | op | shape | baseline | baseline time | ours | ours time | speed-up | % of floor | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.suite} | {r.op} | {r.shape} | {r.baseline} | {format_time(r.baseline_ms)} | {r.ours or '—'} | "
            f"{format_time(r.ours_ms)} | {_speedup(r)} | {_pct(r)} | {r.note} |"
        )
    return lines


def _warmup_table(warmups: Sequence[Warmup]) -> list[str]:
    if not warmups:
        return []
    caption = ("torch.compile warm-up (first call, compilation included, excluded from the times above; "
               "torch.compile's on-disk cache shortens it on later runs):")
    lines = ["", caption, "",
             "| op | shape | implementation | first call | steady median |", "|---|---|---|---|---|"]
    for w in warmups:
        lines.append(f"| {w.op} | {w.shape} | {w.impl} | {w.first_call_s:.2f} s | {format_time(w.steady_ms)} |")
    return lines


def _losses(rows: Sequence[Row]) -> list[str]:
    """The summary under the table. Only rows marked reliable (see ``mark_unreliable``) count: a
    claim about the others would be a claim about the disturbance, so they are counted, not judged."""
    compared = [r for r in rows if r.speedup is not None and not r.reference]
    reliable = [r for r in compared if r.reliable]
    left_out = len(compared) - len(reliable)
    if not compared:
        return ["", "No row of this run compares ours with a baseline."]
    if not reliable:
        return ["", f"No reliable comparison in this run: all {left_out} rows that compare ours with a baseline "
                "are marked unreliable (the machine was disturbed, see the warnings above); rerun on a quiet "
                "machine."]
    unjudged = (f" {left_out} row(s) marked unreliable are left out; rerun on a quiet machine to judge them."
                if left_out else "")
    slower = [r for r in reliable if r.speedup is not None and r.speedup < SLOWER]
    if not slower:
        scope = f"in the {len(reliable)} reliable row(s) of this run" if left_out else "in this run"
        return ["", f"We are not slower than any baseline {scope}.{unjudged}"]
    lines = ["", f"Rows where we are slower (speed-up below {SLOWER}×):", ""]
    lines += [f"- {r.op} {r.shape}: {r.ours} {format_time(r.ours_ms)} vs {r.baseline} "
              f"{format_time(r.baseline_ms)} ({r.speedup:.2f}×)" for r in slower]
    return lines + (["", unjudged.strip()] if left_out else [])


def markdown(report: Report) -> str:
    """The report as Markdown: header with machine and rates, the warnings, the table, compile
    warm-ups, notes."""
    warnings = [f"> **WARNING: {w}**" for w in report.warnings]
    lines = _header(report)[:1] + ([""] + warnings if warnings else []) + _header(report)[1:]
    lines += _table(report.rows) + _warmup_table(report.warmups) + _losses(report.rows)
    extra = report.notes + [f"error: {e}" for e in report.errors]
    if extra:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in extra]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in dataclasses.fields(Row)])
    writer.writeheader()
    for r in rows:
        writer.writerow(dataclasses.asdict(r))
    return buffer.getvalue()


def write_report(report: Report, out: Path, stem: str = "bench") -> list[Path]:
    """Writes ``<stem>.md``, ``.csv``, ``.json`` and (with matplotlib) the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, out, stem)  # first: a missing matplotlib adds a note to the text files
    files = {out / f"{stem}.md": markdown(report), out / f"{stem}.csv": _csv(report.rows),
             out / f"{stem}.json": json.dumps(report.to_json(), indent=1) + "\n"}
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return [*files, *plots]


# ---------------------------------------------------------------------------
# Plots (matplotlib is optional).
# ---------------------------------------------------------------------------


def _plots(report: Report, out: Path, stem: str) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        report.notes.append("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, draw in (("speedup", _plot_speedups), ("time_vs_size", _plot_time_vs_size)):
        figure = draw(report.rows, plt)
        if figure is None:
            continue
        if report.warnings:
            figure.suptitle("WARNING: " + "; ".join(report.warnings), color="tab:red", fontsize=8, wrap=True)
            figure.tight_layout()
        paths.append(out / f"{stem}_{name}.png")
        figure.savefig(paths[-1], dpi=90, bbox_inches="tight")
        plt.close(figure)
    return paths


_SPEEDUP_TICKS = (0.01, 0.03, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 100, 300, 1000, 3000)


def _plot_speedups(rows: Sequence[Row], plt: Any) -> Any:
    """One horizontal bar per row (log scale), a subplot per suite; red where we are slower, grey
    against a reference (the floor timed beside ours), light grey and so labelled where the row is
    unreliable. None when no row compares."""
    compared = [r for r in rows if r.speedup is not None]
    if not compared:
        return None
    suites = [s for s in SUITES if any(r.suite == s for r in compared)]
    heights = [sum(r.suite == s for r in compared) for s in suites]
    figure, axes = plt.subplots(len(suites), 1, figsize=(11, 0.28 * sum(heights) + 1.2 * len(suites)),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, suite in zip(axes[:, 0], suites):
        data = [r for r in compared if r.suite == suite]
        labels = [f"{r.op} {r.shape}: {r.ours} vs {r.baseline}" + ("" if r.reliable else " (unreliable)")
                  for r in data]
        values = [r.speedup for r in data if r.speedup is not None]
        colors = ["lightgray" if not r.reliable else "tab:gray" if r.reference else
                  "tab:green" if v >= SLOWER else "tab:red" for r, v in zip(data, values)]
        ax.barh(range(len(data)), values, color=colors)
        ax.set_yticks(range(len(data)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ticks = [t for t in _SPEEDUP_TICKS if min(values) / 2 <= t <= max(values) * 2]
        ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
        ax.xaxis.set_minor_formatter("")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(suite, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("speed-up (baseline time / our time), log scale")
    figure.tight_layout()
    return figure


def _series_of(shape: str) -> str:
    """The series a shape belongs to: its output count ("-> 4") where it has one. Only sizes of one
    series are joined by lines: "16384x64 -> 1" and "4096x16 -> 4" are different problems."""
    return shape.split("->", 1)[1].strip() if "->" in shape else ""


# Series are told apart by marker, implementations by colour (the same in every series of a panel).
_SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# At most this many labelled ticks on an axis of the time-vs-size plot: more overlap.
_MOST_X_TICKS = 6
_MOST_Y_TICKS = 8


def _plot_time_vs_size(rows: Sequence[Row], plt: Any) -> Any:
    """Median time against the bytes each shape must move (log-log), a subplot per op measured at
    several shapes; lines join the sizes of one implementation within one series (one output
    count), and the floor is dashed. None when no op has several shapes.

    An implementation keeps its colour across series and a series its marker, so each panel's
    legend lists implementations and series once each (not their product), below the panel where
    it covers no data."""
    from matplotlib.lines import Line2D

    ops = [op for op in dict.fromkeys(r.op for r in rows) if len({r.shape for r in rows if r.op == op}) > 1]
    if not ops:
        return None
    columns = min(3, len(ops))
    nrows = math.ceil(len(ops) / columns)
    legends = [_time_vs_size_legend([r for r in rows if r.op == op], plt) for op in ops]
    # Room under each row of panels for the tallest legend (about 0.15 in per line of 7-point text).
    legend_in = 0.15 * max(math.ceil(len(entries) / 2) for entries in legends) + 0.6
    figure, axes = plt.subplots(nrows, columns, figsize=(5.5 * columns, (3.6 + legend_in) * nrows), squeeze=False)
    for ax, op, entries in zip(axes.flat, ops, legends):
        data = sorted((r for r in rows if r.op == op), key=lambda r: r.footprint_bytes)
        series = list(dict.fromkeys(_series_of(r.shape) for r in data))
        colors = _impl_colors(data, plt)
        for key, marker in zip(series, _SERIES_MARKERS * len(series)):
            members = [r for r in data if _series_of(r.shape) == key]
            points: dict[str, dict[int, float]] = {}
            for r in members:
                for name, ms in ((r.baseline, r.baseline_ms), (r.ours, r.ours_ms)):
                    if name is not None and ms is not None:
                        points.setdefault(name, {})[r.footprint_bytes] = ms
            for name, by_size in points.items():
                ax.plot(list(by_size), list(by_size.values()), marker=marker, markersize=3, color=colors[name],
                        label=f"{name} (-> {key})" if key else name)
            floors = {r.footprint_bytes: r.floor_ms for r in members if r.floor_ms is not None}
            if floors:
                ax.plot(list(floors), list(floors.values()), linestyle="--", color="black", marker=marker,
                        markersize=2, label=f"floor (-> {key})" if key else "floor")
        ax.set(xscale="log", yscale="log", title=op, xlabel="bytes the shape must move (footprint)",
               ylabel="median time")
        sizes = [r.footprint_bytes for r in data]
        xlim, xticks = _log_ticks(min(sizes), max(sizes), _MOST_X_TICKS)
        ax.set(xlim=xlim, xticks=xticks, xticklabels=[_format_bytes(t) for t in xticks])
        times = [ms for line in ax.get_lines() for ms in line.get_ydata() if ms > 0 and math.isfinite(ms)]
        if times:
            ylim, yticks = _log_ticks(min(times), max(times), _MOST_Y_TICKS)
            ax.set(ylim=ylim, yticks=yticks, yticklabels=[format_time(t) for t in yticks])
        # Matplotlib labels the minor ticks of a range under a decade, and those labels overlap.
        ax.xaxis.set_minor_formatter("")
        ax.yaxis.set_minor_formatter("")
        handles = [Line2D([], [], color=color, marker=marker, linestyle=style, markersize=4, label=label)
                   for label, color, marker, style in entries]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7,
                  frameon=False)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    figure.tight_layout()
    return figure


def _impl_colors(data: Sequence[Row], plt: Any) -> dict[str, Any]:
    """A colour per implementation in ``data`` (black is the floor's)."""
    names = list(dict.fromkeys(name for r in data for name in (r.baseline, r.ours) if name is not None))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _time_vs_size_legend(data: Sequence[Row], plt: Any) -> list[tuple[str, Any, str, str]]:
    """(label, colour, marker, line style) of each legend entry of the panel of ``data`` (one op's
    rows): its implementations, the floor, then (with several series) a grey marker per series."""
    entries = [(name, color, "", "-") for name, color in _impl_colors(data, plt).items()]
    if any(r.floor_ms is not None for r in data):
        entries.append(("floor", "black", "", "--"))
    series = list(dict.fromkeys(_series_of(r.shape) for r in data))
    if len(series) > 1:
        entries += [(f"shapes … -> {key}", "gray", marker, "")
                    for key, marker in zip(series, _SERIES_MARKERS * len(series))]
    return entries


def _log_ticks(low: float, high: float, most: int) -> tuple[tuple[float, float], list[float]]:
    """The limits and ticks of a log axis showing ``low`` to ``high``: ticks at 1-2-5 steps, or at
    sparser powers of ten where that would make more than ``most``. The limits reach a little past
    the neighbouring 1-2-5 values, so that even a range under one decade gets two ticks."""
    low, high = _step_125(low, down=True), _step_125(high, down=False)
    for mantissas, every in (((1, 2, 5), 1), ((1,), 1), ((1,), 2), ((1,), 3), ((1,), 5)):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 if e % every == 0 for m in mantissas if low <= m * 10.0 ** e <= high]
        if len(ticks) <= most:
            break
    return (low / 1.2, high * 1.2), ticks


def _step_125(value: float, down: bool) -> float:
    """The nearest value of the form 1, 2 or 5 times a power of ten at or below (``down``) or at or
    above ``value``."""
    exponent = math.floor(math.log10(value))
    steps = [m * 10.0 ** e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
    # The tolerance keeps 1000.0000001 (float noise) from moving a limit a whole step.
    if down:
        return max(s for s in steps if s <= value * (1 + 1e-9))
    return min(s for s in steps if s >= value * (1 - 1e-9))


def _format_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"
