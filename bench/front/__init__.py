"""Front benchmark: the whole voice stack through Kamailio, at capacity, over it, and SIPp's own cost.

Processes (all real): redis-server; the core (`hotline-gateway run`, front and workers off in its
copy of the config); N media workers (`hotline-gateway media-worker`, 2 callers each, the ids and
ports `worker_specs` gives, the shipped flow config/flows/12345.toml, ASR off); Kamailio rendered
from the same config by `write_front`; SIPp calling Kamailio only. See bench/front/setup.py.

1. Load: SIPp places 2 x N calls at `--front-rate` calls/s (`-l` = capacity), each lasting
   `--front-call-seconds`, so every worker ends up holding its 2 callers for the rest of the call.
   Every call is the voice benchmark's: RTP from a pcap for its whole length, the digit 0 two
   seconds into the main menu (the ticket is queued, the hold prompt loops until SIPp hangs up).
   CPU and RSS of every process are sampled every second; Kamailio's DLGLOAD and the workers'
   heartbeats every 2 s; SIP between SIPp and Kamailio is captured for the whole run, RTP for 2 s
   near the end of the hold (bench/front/capture.py).
2. Over capacity: once the ramp is done, a second SIPp places `--front-surplus` calls more; each
   should get 503 from Kamailio itself (no worker asked).
3. Baseline, after the stack stopped: the same UAC, the same concurrency and rate, against SIPp's
   trivial UAS (peers/sipp/uas_trivial.xml): what SIPp itself costs per call here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import BenchError
from bench.front.capture import RtpSample, SipCapture, SipCaptured
from bench.front.figures import RTP_SAMPLE_S, Options, Raw, component, figures
from bench.front.report import render as render
from bench.front.setup import (
    CALLER_PREFIX,
    SURPLUS_PREFIX,
    Configs,
    Front,
    Worker,
    kamailio_version,
    scenario,
    start_front,
    start_workers,
    stop_workers,
    wait_all_active,
    write_configs,
)
from bench.intake.setup import start_gateway
from bench.voice import join_tickets, settle, start_sipp, wait_sipp
from bench.voice import warnings as log_warnings
from bench.voice.calls import calls_from_sip
from bench.voice.meter import Meter, Series, children_named, descendants, processes
from bench.voice.pcap import load_speech
from bench.voice.setup import KEY_PREFIX, NUMBER, check_tools, render_prompts, sipp_version, source_state
from gateway.errors import GatewayError
from gateway.keys import reply_text
from gateway.queue import TicketQueue
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from peers.sip import UAS_TRIVIAL, Sipp, SippResult
from peers.sip import free_port as free_udp_port

NAME = "front"
TITLE = "Front: the voice stack through Kamailio (SIPp, 2 callers per worker)"
DIGIT_AFTER_GREETING_S = 2.0
POOL_INTERVAL_S = 2.0
SETTLE_S = 60.0
SURPLUS_CALL_S = 5.0  # a surplus call should be refused; if one is answered, it stays this long


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("front")
    defaults = Options()
    group.add_argument(
        "--front-workers", type=int, default=defaults.workers,
        help="media workers behind Kamailio, 2 callers each (%(default)s: 200 calls)",
    )  # fmt: skip
    group.add_argument(
        "--front-call-seconds", type=float, default=defaults.call_seconds,
        help="length of each call; every call is up at once for this minus the ramp (%(default)s)",
    )  # fmt: skip
    group.add_argument("--front-rate", type=float, default=defaults.rate, help="new calls per second (%(default)s)")
    group.add_argument(
        "--front-surplus", type=int, default=defaults.surplus,
        help="calls placed over capacity, each should get 503 (%(default)s)",
    )  # fmt: skip
    group.add_argument("--front-no-baseline", action="store_true", help="skip SIPp against its trivial UAS")
    group.add_argument("--front-raw", type=Path, metavar="FILE", help="also save every call's measurements (JSON)")


def progress(message: str) -> None:
    print(f"[front] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if options.workers < 1 or options.rate <= 0 or options.surplus < 0:
        raise BenchError("--front-workers and --front-rate must be positive, --front-surplus at least 0")
    check_tools()
    with tempfile.TemporaryDirectory(prefix="bench-front-") as name:
        raw = asyncio.run(measure(Path(name), options))
    result = figures(options, raw)
    if options.raw_out:
        rtp = {"from_worker": dict(raw.rtp.from_worker), "to_worker": dict(raw.rtp.to_worker)}
        summary = {"calls": [c.summary() for c in raw.calls], "timeline": raw.timeline, "rtp": rtp, "result": result}
        options.raw_out.write_text(json.dumps(summary, default=str))
    return {"bench": NAME, **result}


async def measure(tmp: Path, options: Options) -> Raw:
    progress("rendering the flow's prompts (espeak-ng)")
    prompts = await asyncio.to_thread(render_prompts, tmp / "prompts")
    digit_at = prompts.seconds(prompts.greeting) + DIGIT_AFTER_GREETING_S
    if options.call_seconds < digit_at + 5:
        raise BenchError(f"--front-call-seconds must be at least {digit_at + 5:.0f} (greeting, menu, digit, hold)")
    if options.hold_s < 10:
        raise BenchError(
            f"--front-call-seconds must be at least {options.ramp_s + 10:.0f}: the ramp to {options.capacity} calls "
            f"at {options.rate:g}/s takes {options.ramp_s:.0f} s, then every call should be up at once for 10 s"
        )
    raw = Raw(digit_at, 1 / load_speech().period_s, sipp_version(), kamailio_version(), source_state())
    async with contextlib.AsyncExitStack() as stack:
        server = EmbeddedRedis(port=free_port(), data_dir=tmp / "redis")
        stack.callback(server.stop)
        server.start()
        client = aioredis.Redis.from_url(server.url)
        stack.push_async_callback(client.aclose)
        raw.redis_version = str((await client.info("server"))["redis_version"])
        front_address = f"127.0.0.1:{free_udp_port(udp=True, tcp=False)}"
        configs = write_configs(tmp, server.url, front_address, options.workers, prompts.directory)

        progress("starting the core (hotline-gateway run)")
        (tmp / "core").mkdir()
        core = await asyncio.to_thread(start_gateway, tmp / "core", configs.core_path, server.url)
        stack.callback(core.stop)
        workers: list[Worker] = []
        stack.callback(stop_workers, workers)
        progress(f"starting {options.workers} media workers")
        began = time.monotonic()
        await start_workers(tmp / "workers", configs, server.url, workers, parallel=4)
        raw.workers_start_s = time.monotonic() - began
        progress(f"workers ready in {raw.workers_start_s:.0f} s; starting Kamailio")
        front = await start_front(configs, server.url)
        stack.push_async_callback(front.stop)
        probe = configs.config.sipfront.probe_interval
        await wait_all_active(front, options.workers, timeout=3 * probe + 10)

        pids = component_pids(core.process.pid, front, workers)
        raw.worker_processes = len([name for name in pids if name.startswith("workers:")])
        progress(f"idle: {options.idle_seconds:g} s")
        meter = Meter(pids, trees=("kamailio", "core"))
        meter.start()
        await asyncio.sleep(options.idle_seconds)
        await meter.stop()
        raw.idle = meter.series
        raw.pss_idle = pss_by_component(pids, ("kamailio", "core"))

        captured = await load_phase(stack, tmp, options, configs, front, workers, pids, raw, client)
        await join_calls(client, configs, captured, raw)
        progress("stopping the workers, Kamailio and the core")
        raw.metrics = await metrics(client)
        # Before the workers stop: Kamailio marks each of them down then, which is no failure.
        raw.kamailio_full_503 = front.log_count(r"every worker is full or down")
        raw.kamailio_down = front.log_count(r"sipfront: worker \S+ is down")
        raw.worker_exits = await asyncio.to_thread(stop_workers, workers)
        raw.worker_warnings = worker_warnings(workers)
        await front.stop()
        core.stop()
        raw.core_exit = core.process.returncode
    if options.baseline:
        await baseline_phase(tmp, options, raw)
    return raw


def all_processes_cpu_seconds() -> float:
    """CPU time of every process on the machine, with what their reaped children used (utime, stime,
    cutime, cstime): per-process accounting is exact where /proc/stat's tick sampling is not (many
    threads waking 50-100 times a second are easily missed by it); time in interrupts is not in it."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLOCK_TICKS


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class FrontMeter(Meter):
    """The voice benchmark's meter, plus every process's CPU time at each sample (`everything`)."""

    def __init__(self, pids: dict[str, int], trees: tuple[str, ...] = ()) -> None:
        super().__init__(pids, trees=trees)
        self.everything = Series()

    def sample(self) -> None:
        super().sample()
        self.everything.at_ns.append(self.machine.at_ns[-1])
        self.everything.cpu_s.append(all_processes_cpu_seconds())
        self.everything.rss_kib.append(0)


def component_pids(core_pid: int, front: Front, workers: list[Worker]) -> dict[str, int]:
    if front.pid is None:
        raise BenchError("Kamailio is not running")
    pids = {"core": core_pid, "kamailio": front.pid}
    redis_pids = sorted(children_named("redis-server"))
    if redis_pids:
        pids["redis"] = redis_pids[0]
    pids.update({f"workers:{worker.worker_id}": worker.pid for worker in workers})
    # Processes a worker started (an ASR pool would be one): counted with the workers. Looked up once,
    # here: a worker starts them at its own start.
    table = processes()
    for worker in workers:
        for pid, (parent, comm) in table.items():
            if parent == worker.pid:
                pids[f"workers:{worker.worker_id}/{comm}/{pid}"] = pid
    return pids


async def load_phase(
    stack: contextlib.AsyncExitStack,
    tmp: Path,
    options: Options,
    configs: Configs,
    front: Front,
    workers: list[Worker],
    pids: dict[str, int],
    raw: Raw,
    client: aioredis.Redis,
) -> SipCaptured:
    capacity = options.capacity
    path = scenario(tmp / "scenario", options.call_seconds, raw.digit_at, CALLER_PREFIX)
    surplus_path = scenario(tmp / "scenario", SURPLUS_CALL_S, SURPLUS_CALL_S - 1, SURPLUS_PREFIX)
    front_port = int(configs.config.sipfront.listen.rsplit(":", 1)[1])
    capture = SipCapture(front_port, {worker.port for worker in workers})
    stack.callback(capture.stop)
    capture.start()
    progress(
        f"load: {capacity} calls at {options.rate:g}/s (ramp {options.ramp_s:.0f} s), each {options.call_seconds:g} s"
    )
    sipp = Sipp(
        path, tmp / "load", target=configs.config.sipfront.listen, service=NUMBER,
        calls=capacity, concurrency=capacity, rate=options.rate,
    )  # fmt: skip
    meter = FrontMeter({**pids, "sipp_uac": (await start_sipp(stack, sipp))[0]}, trees=("kamailio", "core"))
    meter.start()
    raw.load_start_ns = time.time_ns()
    pool = asyncio.create_task(sample_pool(front, client, [w.worker_id for w in workers], raw))
    done = asyncio.create_task(wait_sipp(sipp, options.load_timeout, None))
    try:
        await asyncio.sleep(options.ramp_s + 2.0)
        if options.surplus:
            await surplus_phase(stack, tmp, options, configs, surplus_path, raw)
        own_start, self_start = time.process_time(), time.time_ns()
        sample_at = raw.load_start_ns / 1e9 + options.call_seconds - RTP_SAMPLE_S - 2.0
        await asyncio.sleep(max(0.0, sample_at - time.time()))
        raw.self_cpu_s, raw.self_window_ns = time.process_time() - own_start, (self_start, time.time_ns())
        raw.pss_load = pss_by_component(meter.pids, ("kamailio", "core"))
        progress("RTP sample")
        raw.rtp = await RtpSample(sipp.media_port).take(RTP_SAMPLE_S)
        raw.load_sipp = await done
        await asyncio.sleep(1.0)  # the last BYEs' load updates
        raw.dlgload_after = sum(target.load for target in await front.targets())
    finally:
        pool.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pool
        done.cancel()
    raw.load_end_ns = time.time_ns()
    await meter.stop()
    raw.load, raw.load_machine, raw.load_everything = meter.series, meter.machine, meter.everything
    progress(f"load: {brief(raw.load_sipp)}")
    return capture.finish()


async def surplus_phase(
    stack: contextlib.AsyncExitStack,
    tmp: Path,
    options: Options,
    configs: Configs,
    path: Path,
    raw: Raw,
) -> None:
    progress(f"over capacity: {options.surplus} more calls")
    surplus = Sipp(
        path, tmp / "surplus", target=configs.config.sipfront.listen, service=NUMBER,
        calls=options.surplus, concurrency=options.surplus, rate=options.rate,
    )  # fmt: skip
    raw.surplus_start_ns = time.time_ns()
    # Not metered: refused at once, it may be gone before its pid could be looked up.
    stack.push_async_callback(surplus.close)
    await surplus.start()
    raw.surplus_sipp = await surplus.wait(SURPLUS_CALL_S + 30)
    raw.surplus_end_ns = time.time_ns()
    progress(f"over capacity: {brief(raw.surplus_sipp)}")


async def sample_pool(front: Front, client: aioredis.Redis, worker_ids: list[str], raw: Raw) -> None:
    """Every 2 s: Kamailio's view of each worker (active, DLGLOAD) and each worker's heartbeat
    `callers`, into raw.timeline."""
    while True:
        at = time.time_ns()
        entry: dict[str, Any] = {"at_ns": at, "dlgload": {}, "active": {}, "callers": {}}
        try:
            for target in await front.targets():
                entry["dlgload"][target.duid] = target.load
                entry["active"][target.duid] = target.active
        except GatewayError as exc:
            entry["error"] = str(exc)[:200]
        pipe = client.pipeline(transaction=False)
        for worker_id in worker_ids:
            pipe.hget(f"{KEY_PREFIX}:worker:{worker_id}", "callers")
        values = await pipe.execute()
        entry["callers"] = {w: int(v) if v is not None else None for w, v in zip(worker_ids, values, strict=True)}
        raw.timeline.append(entry)
        await asyncio.sleep(max(0.0, POOL_INTERVAL_S - (time.time_ns() - at) / 1e9))


def brief(result: SippResult | None) -> str:
    """SIPp's result in one line (its str() appends the error log of a run with failed calls)."""
    if result is None:
        return "no result"
    statuses = ", ".join(f"{code}×{n}" for code, n in sorted(result.statuses.items())) or "-"
    return f"{result.successful} ok / {result.failed} failed of {result.created} ({result.exit_meaning}); {statuses}"


def _pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (Kamailio's shared memory, the libraries every worker
    maps) divided among the processes sharing them, so a sum over processes means something."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pss_by_component(pids: dict[str, int], trees: tuple[str, ...]) -> dict[str, float]:
    """PSS (MiB) of each component, with the processes below the roots named in `trees`."""
    totals: dict[str, int] = {}
    for name, pid in pids.items():
        group = component(name)
        if name.split("/", 1)[0] in trees and "/" in name:
            continue  # a tree's member the meter added: counted below with its root
        members = [pid, *(descendants(pid) if name in trees else ())]
        totals[group] = totals.get(group, 0) + sum(_pss_kib(member) for member in members)
    return {group: round(kib / 1024, 1) for group, kib in totals.items()}


async def join_calls(client: aioredis.Redis, configs: Configs, captured: SipCaptured, raw: Raw) -> None:
    """Each call from the capture, with its ticket, recording and live-audio frame stats."""
    calls = calls_from_sip(captured.sip)
    raw.incidents = captured.incidents
    raw.capture_received, raw.capture_dropped = captured.received, captured.dropped
    for packet in captured.sip:
        line = packet.start_line
        final = line.startswith("SIP/2.0 ") and line[8:11].isdigit() and int(line[8:11]) >= 200
        if final and not packet.to_worker and packet.cseq.endswith("INVITE"):
            raw.final_ns.setdefault(packet.call_id, packet.at_ns)
    queue = TicketQueue(client, configs.config)
    answered = sum(1 for c in calls.values() if c.final_status == 200 and c.caller.startswith(CALLER_PREFIX))
    await settle(client, queue, answered, within=SETTLE_S, poll=0.5, say=progress)
    for call in calls.values():
        if call.answer_ns and call.bye_ns:
            call.media_s = round((call.bye_ns - call.answer_ns) / 1e9, 3)
    await join_tickets(client, queue, calls.values())
    raw.calls = sorted(calls.values(), key=lambda call: call.invite_ns)
    recordings_dir = configs.config.resolve(configs.config.voice.recordings_dir)
    raw.wav_files = sum(1 for _ in recordings_dir.rglob("*.wav")) if recordings_dir.exists() else 0


async def metrics(client: aioredis.Redis) -> dict[str, str]:
    values = await client.hgetall(f"{KEY_PREFIX}:metrics")
    return {reply_text(k): reply_text(v) for k, v in values.items()}


def worker_warnings(workers: list[Worker], limit: int = 8) -> list[str]:
    """Distinct WARNING-or-worse messages over every worker's log, each with how many workers logged it."""
    counts: dict[str, int] = {}
    for worker in workers:
        for message in log_warnings(worker.err_path, limit=50):
            counts[message] = counts.get(message, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [f"{message} ({n} worker{'s' if n > 1 else ''})" for message, n in ranked]


async def baseline_phase(tmp: Path, options: Options, raw: Raw) -> None:
    capacity = options.capacity
    progress(f"baseline: the same {capacity} calls at {options.rate:g}/s against SIPp's trivial UAS")
    path = scenario(tmp / "scenario", options.call_seconds, raw.digit_at, CALLER_PREFIX)
    async with contextlib.AsyncExitStack() as stack:
        uas = Sipp(UAS_TRIVIAL, tmp / "uas", calls=capacity)
        uas_pid = (await start_sipp(stack, uas))[0]
        uac = Sipp(
            path, tmp / "baseline", target=uas.address, service=NUMBER,
            calls=capacity, concurrency=capacity, rate=options.rate,
        )  # fmt: skip
        uac_pid = (await start_sipp(stack, uac))[0]
        meter = Meter({"sipp_uas": uas_pid, "sipp_uac": uac_pid})
        meter.start()
        raw.baseline_start_ns = time.time_ns()
        raw.baseline_sipp = await wait_sipp(uac, options.load_timeout, None)
        raw.baseline_end_ns = time.time_ns()
        await meter.stop()
        raw.baseline = meter.series
        raw.baseline_uas = await uas.wait(10)
    progress(f"baseline: {brief(raw.baseline_sipp)}")
