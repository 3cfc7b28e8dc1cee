"""The benchmark suite: every fused_linreg op against the book's code, idiomatic PyTorch,
torch.compile and the machine's bandwidth floor.

Run ``python -m fused_linreg.bench`` (or ``fused-linreg-bench``)::

    python -m fused_linreg.bench                      # the default CPU suite, a few minutes on 2 cores
    python -m fused_linreg.bench --quick              # tiny sizes, few repeats: a smoke run
    python -m fused_linreg.bench --device cuda --suite step,sgd --out results/

The memory bandwidth is measured first (read: ``x.amax()``; copy into a
preallocated buffer; in-place update ``x.add_(y)``) with the matmul rate; every
row's floor is the bytes (or flops) that must move at those rates. After a warm-up, the
implementations of a bench are timed side by side: rounds in which each runs one block of calls
(the GPU synchronised around it), the median and IQR over its blocks, so that a machine whose
speed drifts slows them all alike. Inputs smaller than four last-level caches
are rotated among copies, so that every call reads its data from memory as in
training over real data. torch.compile's first call (the compilation) is excluded and
reported separately. A Markdown table goes to stdout; the table, CSV, JSON (with the
machine's description) and PNG plots go to ``--out``.

Layout: ``cases`` (what a bench is, sizes), ``baselines`` (the book's code and the
other eager baselines), ``suites`` (the benches of each suite), ``runner`` (timing,
the machine, the command line), ``report`` (table, CSV, JSON, plots).
"""

from .runner import main

__all__ = ["main"]
