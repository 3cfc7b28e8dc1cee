"""GPU benchmarks: the suite of ``python -m fused_linreg.bench --device cuda``, with its
files named gpu_bench.* (the names benchmarks/gpu_check.sh collects).

    python benchmarks/gpu_bench.py --out DIR [other options of fused_linreg.bench]

writes DIR/gpu_bench.md, .csv, .json and the plots (default DIR: benchmarks/results/gpu).
"""

import sys
from pathlib import Path

from fused_linreg.bench.report import markdown, write_report
from fused_linreg.bench.runner import parse_args, run


def main() -> None:
    args = parse_args(["--device", "cuda", *sys.argv[1:]])
    report = run(args)
    files = write_report(report, args.out or Path("benchmarks/results/gpu"), stem="gpu_bench")
    print(markdown(report))
    print("wrote " + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
