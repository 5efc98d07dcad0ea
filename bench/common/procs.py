"""Child processes of a benchmark: start, profile, measure CPU, and always stop (terminate, then kill)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import BenchError

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def die_with_parent() -> None:
    """Run in a child before exec: it gets SIGTERM if the bench dies, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_logged(command: list[str], out_path: Path, err_path: Path) -> subprocess.Popen[bytes]:
    """Start `command` with no stdin, its output and errors written to these files, dying with the bench."""
    with out_path.open("wb") as out, err_path.open("wb") as err:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=die_with_parent)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After "pid (comm) ", field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all CPUs, not idle or waiting on I/O), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_profiler(pid: int, output: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into a collapsed-stacks file (`--format raw`) until stop_profiler()."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        raise BenchError("--profile needs py-spy: `.venv/bin/pip install py-spy`")
    args = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    args += ["--output", str(output)]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent
    )


def stop_profiler(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """py-spy writes its file when interrupted, like after Ctrl-C."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class CpuMeter:
    """CPU use (% of one core) of each process between laps.

    `pids` are measured from /proc; `others` are callables returning CPU seconds of processes that
    report their own (redis-server's INFO cpu). `other` is what the rest of the machine used meanwhile
    (the orchestrating process, and anything else running): when it is high, the run was disturbed.
    """

    def __init__(self, pids: dict[str, int], others: dict[str, Callable[[], float]]) -> None:
        self._pids = pids
        self._others = others
        self._last = self._snapshot()

    def _snapshot(self) -> tuple[float, dict[str, float]]:
        times = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        times |= {name: read() for name, read in self._others.items()}
        times["machine"] = machine_busy_seconds()
        return time.monotonic(), times

    def lap(self) -> dict[str, float]:
        """{"wall_s": seconds since the last lap, process name: % of one core, ..., "other": ...}."""
        (start, before), (end, after) = self._last, self._snapshot()
        self._last = (end, after)
        used = {name: 100 * (after[name] - before[name]) / (end - start) for name in after}
        machine_busy = used.pop("machine")
        used["other"] = max(0.0, machine_busy - sum(used.values()))
        return {"wall_s": round(end - start, 3)} | {name: round(value, 1) for name, value in used.items()}
