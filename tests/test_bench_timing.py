"""How the benchmark suite times a bench: its implementations side by side (a block of each per
round, not one after the other), a failing one reported and dropped while the others are timed,
and a bench's pause slept before each block. No timing is asserted."""

import torch

from fused_linreg.bench import runner
from fused_linreg.bench.cases import Bench, Impl

SETTINGS = runner.TimingSettings(warmup=1, min_run_time=0.001, rounds=4, max_run_time=0.01, max_copies=1)
CPU = torch.device("cpu")


def bench_of(fns, pause_s=0.0):
    impls = (Impl("base"), *(Impl(name, ours=True) for name in fns if name != "base"))
    return Bench("test", "op", "shape", impls, lambda: fns, footprint=1 << 30, rotate=False, pause_s=pause_s)


def timed(bench):
    errors = []
    timings = runner.run_bench(bench, CPU, SETTINGS, cache_bytes=1 << 20, progress=runner._Progress(0),
                               errors=errors)
    return timings, errors


def test_implementations_take_turns_in_rounds():
    calls = []
    timings, errors = timed(bench_of({"base": lambda: calls.append("base"), "ours": lambda: calls.append("ours")}))
    assert errors == [] and set(timings) == {"base", "ours"}
    switches = sum(1 for a, b in zip(calls, calls[1:]) if a != b)
    # First calls and warm-ups: base then ours (1 switch); the settling calls (2 more); then the
    # rounds, base and ours in each (8 more). Timed one after the other, they would switch once.
    assert switches >= 2 * SETTINGS.rounds
    assert all(t.median_s > 0 and t.runs >= SETTINGS.rounds for t in timings.values())


def test_a_failing_implementation_is_reported_and_the_others_timed():
    count = [0]

    def fails_later():
        count[0] += 1
        if count[0] > 5:
            raise RuntimeError("boom")

    timings, errors = timed(bench_of({"base": lambda: None, "ours": fails_later}))
    assert set(timings) == {"base"}
    assert len(errors) == 1 and errors[0].startswith("ours ours (op shape): RuntimeError: boom")


def test_the_pause_is_slept_before_every_block(monkeypatch):
    slept = []
    monkeypatch.setattr(runner.time, "sleep", slept.append)
    timed(bench_of({"base": lambda: None, "ours": lambda: None}, pause_s=0.25))
    assert slept == [0.25] * (2 * SETTINGS.rounds)
