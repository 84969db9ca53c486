"""The machine's state, as the benchmark's logs and results record it."""

from __future__ import annotations


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as the kernel prints them ("?" where there is none):
    timings on a shared machine are read beside it."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"
