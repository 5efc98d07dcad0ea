"""CPU and RSS of a few processes, sampled every second from /proc (the voice benchmark's meter)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.procs import cpu_seconds, machine_busy_seconds


def rss_kib(pid: int) -> int:
    """Resident set size of a live process (VmRSS in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command) of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            found[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), comm)
    return found


def children_named(name: str) -> set[int]:
    """Pids of this process's children whose command is `name` (SIPp, started by peers.sip)."""
    me = os.getpid()
    return {pid for pid, (parent, comm) in processes().items() if parent == me and comm == name}


def _label(pid: int, comm: str) -> str:
    """The command, and what a Python child is for when its command line says (multiprocessing)."""
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for hint, what in (("resource_tracker", "multiprocessing resource tracker"), ("spawn_main", "spawned worker")):
            if hint in cmdline:
                return f"{comm}, {what}"
    return comm


def descendants(root: int) -> dict[int, str]:
    """pid -> description of every process below `root` (the media worker's ASR processes, say)."""
    table, found, frontier = processes(), {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, comm) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = _label(pid, comm)
                frontier.append(pid)
    return found


@dataclass
class Series:
    """One process's samples: wall time (ns), CPU seconds so far, RSS (KiB)."""

    at_ns: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    def cpu_pct(self, start_ns: int | None = None, end_ns: int | None = None) -> float:
        """Average CPU use (% of one core) between the samples nearest the window's ends."""
        picked = [i for i, at in enumerate(self.at_ns) if (start_ns or at) <= at <= (end_ns or at)]
        if len(picked) < 2:
            return 0.0
        first, last = picked[0], picked[-1]
        wall = (self.at_ns[last] - self.at_ns[first]) / 1e9
        return 100 * (self.cpu_s[last] - self.cpu_s[first]) / wall if wall > 0 else 0.0

    def window(self, start_ns: int, end_ns: int) -> tuple[int, int]:
        """The first and last sample times inside the window (what cpu_pct measures over)."""
        inside = [at for at in self.at_ns if start_ns <= at <= end_ns]
        return (inside[0], inside[-1]) if inside else (start_ns, end_ns)

    def pct_at(self, at_ns: int) -> float | None:
        """CPU use (% of one core) over the sampling interval that contains `at_ns`."""
        for i in range(1, len(self.at_ns)):
            if self.at_ns[i - 1] <= at_ns <= self.at_ns[i] and self.at_ns[i] > self.at_ns[i - 1]:
                return 100 * (self.cpu_s[i] - self.cpu_s[i - 1]) / ((self.at_ns[i] - self.at_ns[i - 1]) / 1e9)
        return None

    def per_second_pct(self, start_ns: int, end_ns: int) -> list[float]:
        """CPU use over each sampling interval inside the window (short ones, such as the last
        sample taken when the meter stops, are left out: one clock tick would look like a spike)."""
        return [
            100 * (self.cpu_s[i] - self.cpu_s[i - 1]) / ((self.at_ns[i] - self.at_ns[i - 1]) / 1e9)
            for i in range(1, len(self.at_ns))
            if start_ns <= self.at_ns[i - 1]
            and self.at_ns[i] <= end_ns
            and self.at_ns[i] - self.at_ns[i - 1] >= 500_000_000
        ]


class Meter:
    """Samples every `interval` s, as an asyncio task, until stopped; a process that exits stops
    being sampled (its last sample stays). The processes below each of `trees` (by name) are
    sampled too, each as its own series named `<tree>/<command>/<pid>`."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0, trees: tuple[str, ...] = ()) -> None:
        self.pids = dict(pids)
        self.series = {name: Series() for name in pids}
        self.interval = interval
        self.trees = {name: pids[name] for name in trees}
        self.machine = Series()  # the whole machine's busy CPU time (all CPUs), at the same times
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for tree, root in self.trees.items():
            for pid, comm in descendants(root).items():
                name = f"{tree}/{comm}/{pid}"
                if name not in self.series:
                    self.pids[name] = pid
                    self.series[name] = Series()
        now = time.time_ns()
        self.machine.at_ns.append(now)
        self.machine.cpu_s.append(machine_busy_seconds())
        self.machine.rss_kib.append(0)
        for name, pid in list(self.pids.items()):
            try:
                cpu, rss = cpu_seconds(pid), rss_kib(pid)
            except (OSError, ValueError, IndexError):
                del self.pids[name]
                continue
            series = self.series[name]
            series.at_ns.append(now)
            series.cpu_s.append(cpu)
            series.rss_kib.append(rss)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.sample()
            due += self.interval
            await asyncio.sleep(max(0.0, due - loop.time()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample()
