"""The gateway's benchmarks: `make bench` (= `python -m bench`) runs them all, rewrites docs/benchmarks.md.

A benchmark is a module listed in `BENCHMARKS` that provides the `Benchmark` protocol: its command line
flags, `run(args) -> dict` (the figures, printed by `bench.__main__` as one JSON line) and `render(result)`
(its markdown section of docs/benchmarks.md). Modules are imported only when they run, so a benchmark
with heavy dependencies (voice, asr) costs nothing to the others.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Protocol, cast

# name -> module; the order is the order of the sections in docs/benchmarks.md.
BENCHMARKS: dict[str, str] = {
    "intake": "bench.intake",
    "voice": "bench.voice",
    "front": "bench.front",
    "asr": "bench.asr",
    "sms": "bench.sms",
    "knowledge": "bench.knowledge",
    "triage": "bench.triage",
    "console": "bench.console",
}


class BenchError(Exception):
    """A benchmark could not run, or ran and produced invalid figures; the message says why."""


class Benchmark(Protocol):
    NAME: str
    TITLE: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace | None = None) -> dict[str, Any]: ...

    def render(self, result: dict[str, Any]) -> str: ...


def load(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise BenchError(f"no benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return cast(Benchmark, importlib.import_module(BENCHMARKS[name]))
