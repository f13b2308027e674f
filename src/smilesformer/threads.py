"""How many CPU threads to use: the cores this process may run on, less those other processes keep busy.

PyTorch starts one thread per core. When another CPU-bound process runs, two processes with a thread per core
each oversubscribe the cores, and threads that wait for each other at every parallel region (OpenMP) turn a 2x
slowdown into 5-13x (measured on 2 cores, see BENCHMARKS.md). Taking only the cores that are free when work
starts keeps the slowdown in proportion to the load.

"auto" keeps an ``OMP_NUM_THREADS`` that is set (torchrun sets 1 per process); otherwise it reads the cores from
the CPU affinity mask and the busy ones from the CPU time used in a fifth of a second (Linux; elsewhere the
1-minute load average). A number sets the count. The CLI applies the policy to every
command (``--threads``, or ``SMILESFORMER_THREADS``); from Python, call ``set_threads("auto")``.
"""

from __future__ import annotations

import os

__all__ = ["THREADS_ENV", "usable_cores", "busy_cores", "choose_threads", "set_threads"]

THREADS_ENV = "SMILESFORMER_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat (Linux), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal


def busy_cores(window: float = 0.2) -> float:
    """Cores kept busy by other processes now: CPU time used over ``window`` seconds (Linux /proc/stat), else the
    1-minute load average (which still counts work that ended up to a minute ago)."""
    import time

    before = _cpu_times()
    if before is not None:
        time.sleep(window)
        after = _cpu_times()
        total = after[1] - before[1]
        if total > 0:
            return (1 - (after[0] - before[0]) / total) * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_threads(setting: str | int | None = "auto") -> int:
    """The thread count for a setting: a positive number as given; "auto" (or None) ``OMP_NUM_THREADS`` where it is
    set (by the user, or by a launcher such as torchrun), else the usable cores less the busy ones, rounded, at
    least 1.

    Raises:
        ValueError: a setting that is neither "auto" nor a positive whole number.
    """
    if setting is None or str(setting).strip().lower() == "auto":
        chosen = os.environ.get("OMP_NUM_THREADS", "").strip()
        if chosen.isdigit() and int(chosen) >= 1:  # set by the user or a launcher (torchrun sets 1 per process)
            return int(chosen)
        cores = usable_cores()
        return max(1, min(cores, round(cores - busy_cores())))
    try:
        n = int(setting)
    except ValueError:
        raise ValueError(f"threads must be 'auto' or a whole number >= 1, got {setting!r}") from None
    if n < 1:
        raise ValueError(f"threads must be 'auto' or a whole number >= 1, got {setting!r}")
    return n


def set_threads(setting: str | int | None = "auto") -> int:
    """Use ``choose_threads(setting)`` threads for PyTorch in this process and for the descriptor workers it starts
    (through ``SMILESFORMER_DESCRIPTOR_WORKERS`` unless already set); returns the count."""
    import torch

    n = choose_threads(setting)
    torch.set_num_threads(n)
    os.environ.setdefault("SMILESFORMER_DESCRIPTOR_WORKERS", str(n))
    return n
