"""Intake benchmark: HTTP POST -> queued in Redis -> offered to a seat -> accepted -> submitted.

Processes (the machine is small and shared, so they are few): redis-server (AOF everysec, as in
production), the gateway (`hotline-gateway run`, its own process), the agents (M seats, one process)
and the load generator (one process); this process only orchestrates and polls Redis.

Phase 1, throughput: N tickets posted with a bounded number in flight; tickets/s accepted (202) and
tickets/s fully submitted (all N in the `submitted` stream). Phase 2, latency: a fixed rate for a few
seconds, paced by schedule; post-to-offer latency (offer receive time at the seat minus the POST send
time, joined by ticket id) and 202 latency. Then the baseline: redis-benchmark XADD on the same
redis-server, so tickets/s can be read as a ratio against what Redis alone does on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import BenchError
from bench.common.procs import CpuMeter, spawn_logged, start_profiler, stop_process, stop_profiler, tail
from bench.common.workers import Worker
from bench.intake.agents import agents_process
from bench.intake.figures import Options, Raw, figures
from bench.intake.load import load_process
from bench.intake.report import render as render
from bench.intake.setup import (
    KEY_PREFIX,
    Credentials,
    GatewayProcess,
    redis_benchmark_binary,
    start_gateway,
    triage_command,
    write_config,
    xadd_baseline,
)
from gateway.shell.embedded_redis import EmbeddedRedis, free_port

NAME = "intake"
TITLE = "Intake: HTTP POST → seat offer → submitted"
SUBMITTED_KEY = f"{KEY_PREFIX}:submitted"
BASELINE_RUNS = 3  # the median is used: one run disturbed by another process does not skew the ratio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("intake")
    defaults = Options()
    group.add_argument(
        "--tickets", type=int, default=defaults.tickets, help="phase 1: tickets posted (%(default)s)"
    )
    group.add_argument(
        "--agents", type=int, default=defaults.agents, help="seats taking offers (%(default)s)"
    )
    group.add_argument("--rate", type=int, default=defaults.rate, help="phase 2: tickets/s (%(default)s)")
    group.add_argument(
        "--seconds", type=float, default=defaults.seconds, help="phase 2: duration (%(default)s)"
    )
    group.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="phase 1: requests in flight (%(default)s)",
    )
    group.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="profile the gateway: FILE.prof = cProfile of the whole run (heavy), "
        "any other name = py-spy samples of both phases (collapsed stacks)",
    )
    group.add_argument("--raw", type=Path, metavar="FILE", help="also save every measurement (JSON) to FILE")


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if min(options.tickets, options.agents, options.concurrency, options.rate * options.seconds) < 1:
        raise BenchError("--tickets, --agents, --concurrency and --rate × --seconds must be at least 1")
    redis_benchmark_binary()  # fail before anything starts if the baseline cannot be measured
    with contextlib.ExitStack() as stack:
        raw = measure(stack, options)
    if options.raw_out:
        options.raw_out.write_text(json.dumps(dataclasses.asdict(raw)))
    return {"bench": NAME, **figures(options, raw)}


def progress(message: str) -> None:
    print(f"[intake] {message}", file=sys.stderr, flush=True)


@dataclass
class Running:
    """The processes of one run; each is stopped by the ExitStack that started it."""

    server: EmbeddedRedis
    client: redis.Redis
    gateway: GatewayProcess
    agents: Worker
    load: Worker

    def check_alive(self) -> None:
        """A process that died mid-run makes the figures meaningless: stop at once, saying which."""
        code = self.gateway.process.poll()
        if code is not None:
            raise BenchError(f"the gateway exited with status {code}:\n{self.gateway.stderr_tail()}")
        for worker in (self.agents, self.load):
            if not worker.process.is_alive():
                raise BenchError(f"the {worker.name} process exited with status {worker.process.exitcode}")


def start_all(stack: contextlib.ExitStack, options: Options) -> Running:
    """Redis, gateway, agents, load generator; each stop is registered before its start."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-intake-")))
    server, client = start_redis(stack, tmp)
    creds = Credentials.fresh(options.agents)
    config = write_config(tmp, server.url, creds, options.triage_catalogue)
    gateway = start_gateway(tmp, config, server.url, options.cprofile)
    stack.callback(stop_gateway, gateway)
    if options.triage_catalogue is not None:
        triage = spawn_logged(triage_command(config, server.url), tmp / "triage.out", tmp / "triage.err")
        stack.callback(stop_process, triage)
    agents, load = start_agents_and_load(stack, gateway, creds)
    if options.submit_category:
        agents.call({"op": "mode", "category": options.submit_category}, timeout=10)
    return Running(server, client, gateway, agents, load)


def start_redis(stack: contextlib.ExitStack, directory: Path) -> tuple[EmbeddedRedis, redis.Redis]:
    """An embedded Redis (AOF, fsync every second) under `directory` and a client of it; the stack
    stops both."""
    server = EmbeddedRedis(port=free_port(), data_dir=directory / "redis", appendfsync="everysec")
    stack.callback(stop_redis, server)
    server.start()
    client = redis.Redis.from_url(server.url)
    stack.callback(client.close)
    return server, client


def start_agents_and_load(
    stack: contextlib.ExitStack, gateway: GatewayProcess, creds: Credentials
) -> tuple[Worker, Worker]:
    """The agents' and the load generator's processes against this gateway, returned once every
    agent is ready; the stack stops them."""
    agents = Worker("agents", agents_process, gateway.seats_url, creds.agents)
    stack.callback(agents.stop)
    load = Worker("loadgen", load_process, gateway.http_url, creds.api_key)
    stack.callback(load.stop)
    agents.start()
    load.start()
    agents.call({"op": "ready", "timeout": 20.0}, timeout=30)
    return agents, load


def measure(stack: contextlib.ExitStack, options: Options) -> Raw:
    """Both phases (optionally under py-spy), then the baseline with the gateway stopped."""
    run = start_all(stack, options)
    pids = {"gateway": run.gateway.process.pid, "agents": run.agents.pid, "loadgen": run.load.pid}
    profiler = start_profiler(run.gateway.process.pid, options.pyspy) if options.pyspy else None
    if profiler is not None:
        stack.callback(stop_profiler, profiler)
    run.client.config_resetstat()
    raw = run_phases(options, run, CpuMeter(pids, {"redis": lambda: redis_cpu_seconds(run.client)}))
    raw.redis_commands = command_stats(run.client)
    if profiler is not None:
        stop_profiler(profiler)
        progress(f"gateway profile (py-spy, collapsed stacks): {options.profile}")
    elif options.profile:
        progress(f"gateway profile (cProfile, written when the gateway stops): {options.profile}")
    # The baseline gets the machine to itself, as the gateway had it (other users of the machine aside).
    for stop in (run.agents.stop, run.load.stop, run.gateway.stop):
        stop()
    progress(f"baseline: redis-benchmark XADD, {BASELINE_RUNS} runs")
    raw.xadd_runs = [xadd_baseline(run.server.port) for _ in range(BASELINE_RUNS)]
    raw.redis_version = str(run.client.info("server")["redis_version"])
    raw.redis_rejected_connections = int(run.client.info("stats")["rejected_connections"])
    return raw


def run_phases(options: Options, run: Running, meter: CpuMeter) -> Raw:
    progress(f"phase 1: {options.tickets} tickets, {options.concurrency} in flight, {options.agents} agents")
    burst = run.load.call(
        {"op": "burst", "first": 0, "count": options.tickets, "concurrency": options.concurrency},
        timeout=max(60.0, options.tickets / 50),
    )
    expected = accepted_count(burst)
    wait_submitted(run, expected)
    cpu = {"throughput": meter.lap()}
    progress(f"phase 2: {options.rate} tickets/s for {options.seconds:g}s")
    paced = run.load.call(
        {"op": "paced", "first": options.tickets, "rate": options.rate, "seconds": options.seconds},
        timeout=options.seconds + 60,
    )
    expected += accepted_count(paced)
    in_stream = wait_submitted(run, expected)
    cpu["latency"] = meter.lap()
    seats = run.agents.call({"op": "report"}, timeout=30)
    return Raw(burst, paced, seats, in_stream, cpu)


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_stats(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Redis's own count and time of each command since CONFIG RESETSTAT (this process's polls left out)."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): {"calls": int(value["calls"]), "usec": int(value["usec"])}
        for name, value in stats.items()
        if name not in ("cmdstat_xlen", "cmdstat_info", "cmdstat_config|resetstat")
    }


# What every redis-server start and stop logs at level warning: not worth showing.
_ROUTINE_REDIS_LOG = (
    "Redis version=", "Configuration loaded", "Server initialized", "Memory overcommit", "Received SIGTERM",
    "User requested shutdown", "ready to exit", "Calling fsync", "Saving the final", "DB saved",
    "Removing the pid", "oO0OoO0OoO0Oo",
)  # fmt: skip


def stop_redis(server: EmbeddedRedis) -> None:
    server.stop()
    lines = tail(server.data_dir / "redis.log", 50).splitlines()
    notable = [line for line in lines if line.strip() and not any(m in line for m in _ROUTINE_REDIS_LOG)]
    if notable:
        progress("redis.log:\n" + "\n".join(notable[-20:]))


def stop_gateway(gateway: GatewayProcess) -> None:
    gateway.stop()
    errors = gateway.stderr_tail()
    if errors:
        progress(f"gateway stderr (last lines):\n{errors}")


def accepted_count(records: dict[str, Any]) -> int:
    return sum(1 for status in records["status"] if status == 202)


def wait_submitted(run: Running, target: int, stall: float = 15.0, poll: float = 0.05) -> int:
    """Poll XLEN of the submitted stream until `target`; give up after `stall` seconds without progress."""
    count, last_change = -1, time.monotonic()
    while True:
        run.check_alive()
        now_count = int(run.client.xlen(SUBMITTED_KEY))
        if now_count >= target:
            return now_count
        if now_count != count:
            count, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change > stall:
            progress(f"submitted stream stuck at {count}/{target} for {stall:.0f}s; going on")
            return count
        time.sleep(poll)
