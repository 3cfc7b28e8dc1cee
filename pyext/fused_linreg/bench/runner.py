"""The benchmark suite: every fused_linreg op against the book's code, idiomatic PyTorch,
torch.compile and the machine's bandwidth floor.

The runner: measures the machine (bandwidths, matmul rate, caches, other load),
times every bench of the chosen suites, and writes the report; the command line
of ``python -m fused_linreg.bench``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

import fused_linreg

from .report import (
    IMPLAUSIBLE_PCT_OF_FLOOR,
    Rates,
    Report,
    Row,
    Warmup,
    floor_seconds,
    mark_unreliable,
    markdown,
    write_report,
)
from .cases import COPY_OP, GEMM_OP, INPLACE_OP, READ_OP, SUITES, Bench, Context, Traffic, sizes_for
from .suites import build_benches


__all__ = ["machine_info", "machine_tag", "main", "parse_args", "run"]

# Rotated inputs add up to this many last-level caches: a victim L3 (AMD's) keeps part
# of a working set that is only a little larger than itself.
_CACHES_OF_DATA = 4

# Relative change of the read bandwidth between the start and the end of a run above
# which the report warns that the floors are uncertain.
_DRIFT = 0.15

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TimingSettings:
    """How long to measure: warm-up calls; each implementation's run time (``min_run_time``, or
    ``rounds`` calls when longer, at most ``max_run_time``); the rounds it is split into."""

    warmup: int
    min_run_time: float
    rounds: int
    max_run_time: float
    max_copies: int


_DEFAULT_TIMING = TimingSettings(warmup=3, min_run_time=0.5, rounds=21, max_run_time=4.0, max_copies=64)
# GPU kernels take microseconds to milliseconds: a shorter window still holds hundreds of runs.
_CUDA_TIMING = TimingSettings(warmup=3, min_run_time=0.2, rounds=21, max_run_time=2.0, max_copies=64)
_QUICK_TIMING = TimingSettings(warmup=1, min_run_time=0.02, rounds=3, max_run_time=0.2, max_copies=4)


@dataclass(frozen=True)
class Timing:
    """One implementation's measurement."""

    median_s: float
    iqr_s: float
    runs: int
    first_call_s: float


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_call(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _timed_block(fn: Callable[[], object], number: int, device: torch.device) -> float:
    """Seconds per call of ``number`` calls in a row."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / number


@dataclass
class _Candidate:
    """One implementation being timed: its calls per block and the per-call time of each block."""

    name: str
    fn: Callable[[], object]
    first_call_s: float
    number: int
    per_call_s: list[float]

    def timing(self) -> Timing:
        """The median and IQR over the blocks."""
        ordered = sorted(self.per_call_s)

        def quantile(q: float) -> float:
            return ordered[round(q * (len(ordered) - 1))]

        return Timing(quantile(0.5), quantile(0.75) - quantile(0.25), len(ordered) * self.number, self.first_call_s)


def _prepared(name: str, fn: Callable[[], object], device: torch.device, settings: TimingSettings,
              warmup: int) -> _Candidate:
    """``fn`` called once (its first call, timed on its own) and ``warmup`` times more, with the
    calls per block that make ``settings.rounds`` blocks last its run time."""
    first = _timed_call(fn, device)
    estimate = first
    for _ in range(warmup):
        estimate = min(estimate, _timed_call(fn, device))
    run_time = min(max(settings.min_run_time, settings.rounds * estimate), settings.max_run_time)
    number = max(1, round(run_time / settings.rounds / max(estimate, 1e-9)))
    return _Candidate(name, fn, first, number, [])


def measure_side_by_side(candidates: list[_Candidate], device: torch.device, settings: TimingSettings,
                         errors: Callable[[str, Exception], None], pause_s: float = 0.0) -> None:
    """Times the candidates in ``settings.rounds`` rounds of one block each, so that every
    implementation of a bench sees the same moments of a machine whose speed drifts (a shared
    VM's did by ±30–50% over seconds); a candidate that fails is reported and dropped.
    ``pause_s`` is slept before each block (see ``Bench.pause_s``)."""
    for _ in range(settings.rounds):
        for candidate in list(candidates):
            time.sleep(pause_s)
            try:
                candidate.per_call_s.append(_timed_block(candidate.fn, candidate.number, device))
            except Exception as exc:  # noqa: BLE001  (one failing implementation must not end the run)
                errors(candidate.name, exc)
                candidates.remove(candidate)


def last_level_cache_bytes(device: torch.device) -> int:
    """The GPU's L2, or the CPU's largest cache (sysfs), or 32 MiB when neither is known."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).L2_cache_size)
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        match = re.fullmatch(r"(\d+)([KMG]?)", path.read_text().strip())
        if match:
            sizes.append(int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2]])
    return max(sizes, default=32 << 20)


def _copies(bench: Bench, cache_bytes: int, settings: TimingSettings) -> int:
    """How many input sets to rotate: enough for ``_CACHES_OF_DATA`` caches of data, at least ``min_copies``."""
    working_set = _CACHES_OF_DATA * cache_bytes
    if not bench.rotate or bench.footprint >= working_set:
        return bench.min_copies
    return max(bench.min_copies, min(settings.max_copies, math.ceil(working_set / max(bench.footprint, 1))))


def _round_robin(fns: Sequence[Callable[[], object]]) -> Callable[[], object]:
    if len(fns) == 1:
        return fns[0]
    cycle = itertools.cycle(fns)
    return lambda: next(cycle)()


@contextmanager
def _released(device: torch.device) -> Iterator[None]:
    """Frees what a bench allocated once it is done (its inputs can be hundreds of MB)."""
    try:
        yield
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_bench(bench: Bench, device: torch.device, settings: TimingSettings, cache_bytes: int,
              progress: _Progress, errors: list[str]) -> dict[str, Timing]:
    """Times every implementation of ``bench`` on the same inputs, side by side; failures go to ``errors``."""

    def failed(name: str, exc: Exception) -> None:
        side = "ours" if any(impl.ours for impl in bench.impls if impl.name == name) else "baseline"
        errors.append(f"{side} {name} ({bench.op} {bench.shape}): {type(exc).__name__}: {exc}")

    with _released(device):
        copies = _copies(bench, cache_bytes, settings)
        instances = [bench.setup() for _ in range(copies)]
        candidates = []
        for impl in bench.impls:
            progress.start(f"{impl.name} | {bench.op} {bench.shape}")
            if impl.compiled:
                torch.compiler.reset()  # its first call is then a full compilation, reported as such
            fn = _round_robin([instance[impl.name] for instance in instances])
            try:
                candidates.append(_prepared(impl.name, fn, device, settings, settings.warmup + copies - 1))
            except Exception as exc:  # noqa: BLE001
                failed(impl.name, exc)
            progress.advance()
        # A later reset dropped the earlier compiled code: recompiled here, not in a timed block.
        for candidate in list(candidates):
            try:
                for _ in range(copies):
                    candidate.fn()
            except Exception as exc:  # noqa: BLE001
                failed(candidate.name, exc)
                candidates.remove(candidate)
        measure_side_by_side(candidates, device, settings, failed, bench.pause_s)
        del instances
    return {candidate.name: candidate.timing() for candidate in candidates}


# ---------------------------------------------------------------------------
# Rows.
# ---------------------------------------------------------------------------


def rates_from(measured: Sequence[tuple[Bench, dict[str, Timing]]]) -> Rates:
    """The machine's rates from the bandwidth suite's timings."""
    by_op = {bench.op: (bench, next(iter(timings.values()))) for bench, timings in measured if timings}
    missing = {READ_OP, COPY_OP, INPLACE_OP, GEMM_OP} - by_op.keys()
    if missing:
        raise RuntimeError(f"fused_linreg.bench: the bandwidth suite failed ({', '.join(sorted(missing))})")

    def rate(op: str, amount: Callable[[Traffic], int]) -> float:
        bench, timing = by_op[op]
        assert bench.traffic is not None
        return amount(bench.traffic) / timing.median_s / 1e9

    return Rates(read_gbs=rate(READ_OP, lambda t: t.read), copy_gbs=rate(COPY_OP, lambda t: t.read + t.write),
                 inplace_gbs=rate(INPLACE_OP, lambda t: t.read + t.write), gflops=rate(GEMM_OP, lambda t: t.flops))


def _rate_note(bench: Bench, rates: Rates) -> str:
    return {READ_OP: f"{rates.read_gbs:.1f} GB/s", COPY_OP: f"{rates.copy_gbs:.1f} GB/s (read + written)",
            INPLACE_OP: f"{rates.inplace_gbs:.1f} GB/s (read + written)",
            GEMM_OP: f"{rates.gflops:.0f} GFLOP/s"}.get(bench.op, bench.note)


def _row_note(bench: Bench, rates: Rates) -> str:
    note = _rate_note(bench, rates)
    if bench.suite == "bandwidth" or bench.traffic is None:
        return note
    memory_floor = floor_seconds(replace(bench.traffic, flops=0), rates)
    if floor_seconds(bench.traffic, rates) > memory_floor:
        note = "; ".join(filter(None, [note, "compute-bound: floor from the matmul rate"]))
    return note


def _pct(floor_ms: float | None, ms: float | None) -> float | None:
    return None if floor_ms is None or not ms else 100.0 * floor_ms / ms


def bench_rows(bench: Bench, timings: Mapping[str, Timing], rates: Rates, dtype: str) -> list[Row]:
    """The table rows of one bench (pairs whose timings failed are left out)."""
    floor_ms = None if bench.traffic is None else 1e3 * floor_seconds(bench.traffic, rates)
    note = _row_note(bench, rates)
    references = {impl.name for impl in bench.impls if impl.reference}
    rows = []
    for baseline, ours in bench.rows():
        base, mine = timings.get(baseline), (timings.get(ours) if ours else None)
        if base is None or (ours is not None and mine is None):
            continue
        base_ms, ours_ms = 1e3 * base.median_s, (1e3 * mine.median_s if mine else None)
        rows.append(Row(
            suite=bench.suite, op=bench.op, shape=bench.shape, dtype=dtype, footprint_bytes=bench.footprint,
            baseline=baseline, baseline_ms=base_ms, baseline_iqr_ms=1e3 * base.iqr_s, baseline_runs=base.runs,
            ours=ours, ours_ms=ours_ms, ours_iqr_ms=1e3 * mine.iqr_s if mine else None,
            ours_runs=mine.runs if mine else None, speedup=base_ms / ours_ms if ours_ms else None,
            floor_ms=floor_ms, baseline_pct_of_floor=_pct(floor_ms, base_ms), ours_pct_of_floor=_pct(floor_ms, ours_ms),
            note="floor timed beside ours" if baseline in references else note, reference=baseline in references,
        ))
    return rows


def _warmups(bench: Bench, timings: Mapping[str, Timing]) -> list[Warmup]:
    return [Warmup(bench.op, bench.shape, impl.name, timings[impl.name].first_call_s,
                   1e3 * timings[impl.name].median_s) for impl in bench.impls if impl.compiled and impl.name in timings]


# ---------------------------------------------------------------------------
# The machine.
# ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _optional_version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, GPU, library versions, date."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels
        "fused_linreg_cpu_capability": fused_linreg.cpu_capability,  # ours
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fused_linreg": fused_linreg.__version__,
        "numpy": _optional_version("numpy"),
        "sklearn": _optional_version("sklearn"),
        "last_level_cache_bytes": last_level_cache_bytes(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return info


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_tag(device: torch.device) -> str:
    """A folder name for the results: the GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return "cuda-" + _slug(torch.cuda.get_device_name(device))
    return f"cpu-{_slug(_cpu_model())}-{os.cpu_count()}c"


class _OtherLoad:
    """How many cores other processes kept busy while the suite ran (Linux; None elsewhere).

    The machine's busy CPU time (/proc/stat) minus this process's own, over the wall
    time: a build or test run beside the benchmark shows up here, and the report says
    that its timings are unreliable."""

    BUSY = 0.25  # cores; above this the report carries a warning

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        mine = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        return busy, mine, time.monotonic()

    def cores(self) -> float | None:
        """Average cores used by other processes since construction."""
        end = self._sample()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        other = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return max(other, 0.0) / (end[2] - self.start[2])


# ---------------------------------------------------------------------------
# Progress.
# ---------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on stderr when tqdm is installed, else one counter line per measurement."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, file=sys.stderr, unit="impl", dynamic_ncols=True)

    def start(self, label: str) -> None:
        """Announces the next measurement."""
        if self.bar is not None:
            self.bar.set_description_str(label[:70])
        else:
            print(f"[{self.done + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        """Counts a measurement as done."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------


def _suites(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown suite(s) {unknown or text!r}; choose from {', '.join(SUITES)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m fused_linreg.bench``."""
    parser = argparse.ArgumentParser(prog="python -m fused_linreg.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="float32",
                        help="dtype of the tensors (default: float32; the bandwidth is always measured in float32)")
    parser.add_argument("--suite", type=_suites, default=list(SUITES), metavar="LIST",
                        help=f"comma-separated suites among {','.join(SUITES)} (default: all; "
                             "bandwidth always runs first: it gives the floors)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: a smoke run (CI)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time the torch.compile baselines (default: yes, except with --quick)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the table, CSV, JSON and plots (default: benchmarks/results/<machine tag>)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    if args.compile is None:
        args.compile = not args.quick
    return args


def run(args: argparse.Namespace) -> Report:
    """Runs the suites that ``args`` (from :func:`parse_args`) name and returns the report."""
    device = torch.device(args.device)
    dtype = _DTYPES[args.dtype]
    torch.manual_seed(0)
    ctx = Context(device, dtype, sizes_for(device, args.quick), args.compile)
    if args.quick:
        ctx.notes.append("--quick: tiny sizes (they sit in cache) and few repeats, a smoke run: its times, rates "
                         "and floors do not describe this machine")
    benches = build_benches(ctx, args.suite)
    settings = _QUICK_TIMING if args.quick else _CUDA_TIMING if device.type == "cuda" else _DEFAULT_TIMING
    cache_bytes = last_level_cache_bytes(device)
    read_bench = next(b for b in benches if b.op == READ_OP)
    progress = _Progress(sum(len(b.impls) for b in benches) + 1)
    errors: list[str] = []
    other_load = _OtherLoad()
    measured = [(bench, run_bench(bench, device, settings, cache_bytes, progress, errors)) for bench in benches]
    read_at_end = run_bench(read_bench, device, settings, cache_bytes, progress, errors)
    progress.close()
    busy = other_load.cores()
    rates = rates_from([(b, t) for b, t in measured if b.suite == "bandwidth"])
    end_gbs = read_bench.footprint / read_at_end["x.amax()"].median_s / 1e9 if read_at_end else None
    disturbances = _disturbances(busy, rates)
    warnings = [*disturbances]
    drift = _drift(rates.read_gbs, end_gbs)
    if drift is not None and drift[1]:
        warnings.append(drift[0])
    elif drift is not None:
        ctx.notes.insert(0, drift[0])
    rows = [row for bench, timings in measured for row in bench_rows(bench, timings, rates, args.dtype)]
    rows = mark_unreliable(rows, whole_run=bool(disturbances))
    implausible = [r for r in rows if not r.reliable and not disturbances]
    if implausible:
        warnings.append(f"{len(implausible)} row(s) ran faster than {IMPLAUSIBLE_PCT_OF_FLOOR:.0f}% of their floor, "
                        "which cannot be: the machine was disturbed while they or the rates were measured; they say "
                        "\"unreliable\"")
    return Report(
        machine={**machine_info(device), "other_processes_cores": busy, "read_gbs_at_end": end_gbs},
        settings={"device": args.device, "dtype": args.dtype, "suites": args.suite, "quick": args.quick,
                  "compile": args.compile, "timing": asdict(settings)},
        rates=rates,
        rows=rows,
        warmups=[w for bench, timings in measured for w in _warmups(bench, timings)],
        notes=[*ctx.notes, *dict.fromkeys(b.remark for b in benches if b.remark)],
        errors=errors,
        warnings=warnings,
    )


# Below this read bandwidth (GB/s) or matmul rate (GFLOP/s) the rates cannot describe any
# machine this suite runs on: they were measured while something else ran.
_IMPLAUSIBLE_RATE = 1.0


def _disturbances(busy_cores: float | None, rates: Rates) -> list[str]:
    """Why none of the run's timings can be trusted: other processes kept the CPU busy, or the
    machine's rates came out implausible."""
    found = []
    if busy_cores is not None and busy_cores > _OtherLoad.BUSY:
        found.append(f"other processes kept {busy_cores:.2f} cores busy on average during this run; its timings "
                     "are unreliable (run it again on a quiet machine)")
    if min(rates.read_gbs, rates.copy_gbs, rates.inplace_gbs) < _IMPLAUSIBLE_RATE or rates.gflops < _IMPLAUSIBLE_RATE:
        found.append(f"implausible machine rates (read {rates.read_gbs:.2f}, copy {rates.copy_gbs:.2f}, in-place "
                     f"{rates.inplace_gbs:.2f} GB/s, matmul {rates.gflops:.2f} GFLOP/s): the run was disturbed, and "
                     "no floor or ratio of it can be trusted")
    return found


def _drift(read_gbs: float, read_gbs_at_end: float | None) -> tuple[str, bool] | None:
    """The read bandwidth measured again at the end, and whether it drifted enough to warn."""
    if read_gbs_at_end is None:
        return None
    drift = read_gbs_at_end / read_gbs - 1
    message = (f"read bandwidth measured again at the end: {read_gbs_at_end:.1f} GB/s "
               f"({drift:+.0%} from the {read_gbs:.1f} GB/s the floors use)")
    if abs(drift) > _DRIFT:
        return f"{message}; the floors are uncertain by that much", True
    return message, False


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m fused_linreg.bench``: runs, prints the Markdown table, writes the files."""
    args = parse_args(argv)
    device = torch.device(args.device)
    out = args.out if args.out is not None else Path("benchmarks") / "results" / machine_tag(device)
    report = run(args)
    files = write_report(report, out)
    print(markdown(report))
    print("wrote " + ", ".join(str(f) for f in files))
    if any(e.startswith("ours ") for e in report.errors):
        sys.exit(1)  # a baseline that torch cannot run (e.g. in some dtype) is a note; ours failing is a bug

