"""Small statistics and the machine description shared by the benchmarks."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary_ms(durations_ns: Sequence[int]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds; all zero for no samples (the counts elsewhere show that)."""
    if not durations_ns:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(durations_ns)
    return {
        "p50": round(percentile(ordered, 0.50) / 1e6, 2),
        "p99": round(percentile(ordered, 0.99) / 1e6, 2),
        "max": round(ordered[-1] / 1e6, 2),
    }


def per_second(count: int, start_ns: int, end_ns: int) -> float:
    seconds = (end_ns - start_ns) / 1e9
    return round(count / seconds, 1) if seconds > 0 else 0.0


def cpu_model() -> str:
    with contextlib.suppress(OSError):  # not Linux: fall back to what platform knows
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, str | int]:
    return {
        "cpu": cpu_model(),
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
