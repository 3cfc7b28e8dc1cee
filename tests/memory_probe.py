"""Peak extra anonymous memory of a piece of work, for the tests that stream memory maps.

The probes run in a subprocess of their own (``run_probe``): a fresh interpreter whose memory
holds nothing but the probe. RssAnon counts the process's own memory, not the file's page
cache that reading a memory map fills."""

import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable


def anon_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon"))


def peak_extra_mib(work: Callable[[], object]) -> float:
    """MiB of anonymous memory above the level before ``work``, at its peak while it ran."""
    baseline, peak, done = anon_kib(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anon_kib())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        work()
    finally:
        done.set()
        thread.join()
    return (max(peak[0], anon_kib()) - baseline) / 1024


def run_probe(script: str, *args: str, timeout: float = 300) -> str:
    """Runs ``script`` (which may ``import memory_probe``) in a fresh interpreter; its stdout.

    glibc raises its mmap threshold after a large block is freed and then keeps freed blocks in
    its heap, so RssAnon would count what the allocator retains rather than what the work holds;
    fixed thresholds give freed memory back at once."""
    tests = str(pathlib.Path(__file__).resolve().parent)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072",
               PYTHONPATH=os.pathsep.join([tests, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                          check=True, env=env).stdout
