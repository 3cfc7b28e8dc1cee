"""The CPU step's time per row when d is not a whole number of vectors:

    python benchmarks/cpu_feature_tails.py [--before DIR]

One thread, 8192 float32 rows (they stay in cache), `linreg_step_` with 1, 4 and 16 outputs, for
d = 64 and 80 (whole AVX2 and AVX-512 vectors) and d = 72, 100, 120, 127 (4 to 15 features past
the last vector), under every CPU capability this machine runs. Prints a markdown table of median
nanoseconds per row. With --before, DIR (a directory holding another build of the package) runs
the same cases, each timed in processes alternating with the current build's.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

FEATURES = (64, 72, 80, 100, 120, 127)
OUTPUTS = (1, 4, 16)
ROWS = 8192
ROUNDS = 3  # processes per build and capability, alternating; the table shows their median


def time_cases() -> list[float]:
    """ns per row of each (d, k) case, in FEATURES x OUTPUTS order, in this process."""
    import torch

    import fused_linreg

    torch.set_num_threads(1)
    times = []
    for d in FEATURES:
        for k in OUTPUTS:
            X, y = torch.randn(ROWS, d), torch.randn(ROWS, k)
            weight, bias = torch.randn(k, d) * 0.01, torch.zeros(k)
            samples = []
            for _ in range(40):
                start = time.perf_counter()
                fused_linreg.linreg_step_(X, y, weight, bias, lr=1e-9)
                samples.append(time.perf_counter() - start)
            times.append(statistics.median(samples[8:]) * 1e9 / ROWS)
    return times


def run_build(path: str | None, capability: str) -> list[float]:
    env = dict(os.environ, FUSED_LINREG_CPU_CAPABILITY=capability)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True, capture_output=True, text=True)
    return [float(v) for v in out.stdout.split()]


def capabilities() -> list[str]:
    import fused_linreg

    order = ["default", "avx2", "avx512"]
    return order[:order.index(fused_linreg.cpu_capability) + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="a directory holding another build of fused_linreg, timed beside this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(" ".join(f"{t:.2f}" for t in time_cases()))
        return
    builds = {"before": args.before, "after": None} if args.before else {"ns/row": None}
    header = ["capability", "d", "k", *builds]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for capability in capabilities():
        runs = {name: [] for name in builds}
        for _ in range(ROUNDS):
            for name, path in builds.items():
                runs[name].append(run_build(path, capability))
        medians = {name: [statistics.median(case) for case in zip(*rounds)] for name, rounds in runs.items()}
        cases = [(d, k) for d in FEATURES for k in OUTPUTS]
        for i, (d, k) in enumerate(cases):
            print(f"| {capability} | {d} | {k} | " + " | ".join(f"{medians[name][i]:.1f}" for name in builds) + " |")


if __name__ == "__main__":
    main()
