"""Voice benchmark: one media worker held at capacity (2 callers) by SIPp for a few minutes.

Processes: redis-server, `hotline-gateway media-worker` (calls_per_worker = 4, so 2 callers, the
shipped flow config/flows/12345.toml, prompts rendered once at the production speaking rate), and
SIPp placing calls (`-l 2 -r 1`, each new call as soon as one ends). Every call plays one RTP
stream built from g711a.pcap (speech for the whole call) and presses 0 two seconds into the main
menu: the worker queues the ticket and loops the hold prompt until SIPp hangs up. This process
orchestrates, samples CPU and RSS every second, and captures the loopback traffic (see
bench/voice/capture.py) to time the prompts and the digit from the packets themselves.

Then the baseline, with the worker stopped: the same SIPp UAC against SIPp's trivial UAS
(peers/sipp/uas_trivial.xml), so the worker's CPU per call can be read against the peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import BenchError
from bench.common.procs import machine_busy_seconds
from bench.voice.calls import Call, PromptAudio, add_frames, add_media, add_ticket, calls_from_sip
from bench.voice.capture import Capture, Captured
from bench.voice.figures import Options, Raw, figures
from bench.voice.meter import Meter, Series, children_named
from bench.voice.report import render as render
from bench.voice.setup import (
    KEY_PREFIX,
    NUMBER,
    Prompts,
    WorkerProcess,
    check_tools,
    render_prompts,
    scenario,
    shipped_asr,
    sipp_version,
    source_state,
    start_worker,
    write_config,
)
from gateway.config import load_config
from gateway.errors import GatewayError
from gateway.keys import reply_text
from gateway.queue import TicketQueue
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from gateway.ticket import Ticket
from peers.sip import UAS_TRIVIAL, Sipp, SippResult
from peers.sip import free_port as free_udp_port

NAME = "voice"
TITLE = "Voice: one media worker at capacity (2 SIPp callers)"
CALLS_PER_WORKER = 4
DIGIT_AFTER_GREETING_S = 2.0  # into the main-menu prompt
SETTLE_S = 20.0
LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>WARNING|ERROR|CRITICAL) (?P<message>.*)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("voice")
    defaults = Options()
    group.add_argument(
        "--voice-seconds", type=float, default=defaults.seconds,
        help="how long SIPp holds the worker at capacity (%(default)s; 30 for a quick run)",
    )  # fmt: skip
    group.add_argument(
        "--voice-call-seconds", type=float, default=defaults.call_seconds,
        help="length of each call (%(default)s)",
    )  # fmt: skip
    group.add_argument("--voice-raw", type=Path, metavar="FILE", help="also save every call's measurements (JSON)")


def progress(message: str) -> None:
    print(f"[voice] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if options.seconds <= 0:
        raise BenchError("--voice-seconds must be positive")
    check_tools()
    with tempfile.TemporaryDirectory(prefix="bench-voice-") as name:
        raw = asyncio.run(measure(Path(name), options))
    result = figures(options, raw)
    if options.raw_out:
        options.raw_out.write_text(json.dumps({"calls": [c.summary() for c in raw.calls], "result": result}))
    return {"bench": NAME, **result}


async def measure(tmp: Path, options: Options) -> Raw:
    async with contextlib.AsyncExitStack() as stack:
        progress("rendering the flow's prompts (espeak-ng)")
        prompts = await asyncio.to_thread(render_prompts, tmp / "prompts")
        digit_at = prompts.seconds(prompts.greeting) + DIGIT_AFTER_GREETING_S
        if options.call_seconds < digit_at + 5:
            raise BenchError(f"--voice-call-seconds must be at least {digit_at + 5:.0f} (greeting, menu, digit, hold)")
        server = EmbeddedRedis(port=free_port(), data_dir=tmp / "redis")
        stack.callback(server.stop)
        server.start()
        sip = f"127.0.0.1:{free_udp_port(udp=True, tcp=False)}"
        config = write_config(tmp, server.url, sip, CALLS_PER_WORKER)
        worker = start_worker(tmp, config, server.url, sip)
        stack.callback(stop_worker, worker)
        client = aioredis.Redis.from_url(server.url)
        stack.push_async_callback(client.aclose)
        raw = Raw(digit_at, prompts.seconds(prompts.greeting), sipp_version(), source_state())
        raw.redis_version = str((await client.info("server"))["redis_version"])
        raw.asr = shipped_asr()

        progress(f"idle worker: {options.idle_seconds:g} s")
        raw.idle = await idle_worker(worker, options.idle_seconds)

        path = scenario(tmp / "scenario", options.call_seconds, digit_at)
        captured = await load_phase(stack, tmp, options, worker, path, raw)
        queue = TicketQueue(client, load_config(config))
        answered = sum(1 for call in captured_calls(captured).values() if call.final_status == 200)
        await settle(client, queue, answered)
        raw.calls = await join_calls(client, queue, captured, prompts)
        raw.capture_dropped, raw.capture_received = captured.dropped, captured.received
        progress(f"idle worker again, after the calls: {options.idle_seconds:g} s")
        raw.idle_after = await idle_worker(worker, options.idle_seconds)
        raw.worker_exit = stop_worker(worker)
        raw.worker_warnings = warnings(worker.stderr_path)
        await baseline_phase(stack, tmp, options, path, raw)
        return raw


async def idle_worker(worker: WorkerProcess, seconds: float) -> dict[str, Series]:
    """CPU and RSS of the worker (and the processes it started) with no call."""
    meter = Meter({"worker": worker.pid}, trees=("worker",))
    meter.start()
    await asyncio.sleep(seconds)
    await meter.stop()
    return meter.series


async def load_phase(
    stack: contextlib.AsyncExitStack, tmp: Path, options: Options, worker: WorkerProcess, path: Path, raw: Raw
) -> Captured:
    calls = options.calls
    progress(f"load: {calls} calls of {options.call_seconds:g} s, 2 at a time (about {options.seconds:g} s)")
    sipp = Sipp(path, tmp / "load", target=worker.sip, service=NUMBER, calls=calls, concurrency=2, rate=1)
    capture = Capture(int(worker.sip.rsplit(":", 1)[1]), sipp.media_port)
    stack.callback(capture.finish)
    capture.start()
    sipp_pids = await start_sipp(stack, sipp)
    capture.media_port = sipp.media_port  # new ports if SIPp had to retry its start
    pids = {"worker": worker.pid, "sipp_uac": sipp_pids[0]}
    redis_pids = sorted(children_named("redis-server"))
    if redis_pids:
        pids["redis"] = redis_pids[0]
    meter = Meter(pids, trees=("worker",))
    meter.start()
    busy, own = machine_busy_seconds(), time.process_time()
    raw.load_start_ns = time.time_ns()
    raw.load_sipp = await wait_sipp(sipp, options.load_timeout, worker)
    raw.load_end_ns = time.time_ns()
    raw.load_machine_busy_s, raw.load_self_cpu_s = machine_busy_seconds() - busy, time.process_time() - own
    await meter.stop()
    raw.load, raw.load_machine = meter.series, meter.machine
    progress(f"load: {raw.load_sipp}")
    captured = capture.finish()
    return captured


async def baseline_phase(stack: contextlib.AsyncExitStack, tmp: Path, options: Options, path: Path, raw: Raw) -> None:
    calls = options.baseline_calls
    progress(f"baseline: the same {calls} calls against SIPp's trivial UAS")
    uas = Sipp(UAS_TRIVIAL, tmp / "uas", calls=calls)
    uas_pid = (await start_sipp(stack, uas))[0]
    uac = Sipp(path, tmp / "baseline", target=uas.address, service=NUMBER, calls=calls, concurrency=2, rate=1)
    uac_pid = (await start_sipp(stack, uac))[0]
    meter = Meter({"sipp_uas": uas_pid, "sipp_uac": uac_pid})
    meter.start()
    raw.baseline_start_ns = time.time_ns()
    raw.baseline_sipp = await wait_sipp(uac, options.baseline_timeout, None)
    raw.baseline_end_ns = time.time_ns()
    await meter.stop()
    raw.baseline = meter.series
    raw.baseline_uas = await uas.wait(10)
    progress(f"baseline: {raw.baseline_sipp}")


async def start_sipp(stack: contextlib.AsyncExitStack, sipp: Sipp) -> list[int]:
    """Start SIPp (closed when the stack unwinds) and return its pid."""
    before = children_named("sipp")
    stack.push_async_callback(sipp.close)
    await sipp.start()
    pids = sorted(children_named("sipp") - before)
    if not pids:
        raise BenchError(f"{sipp!r} exited at once: {await sipp.wait(5)}")
    return pids


async def wait_sipp(sipp: Sipp, timeout: float, worker: WorkerProcess | None) -> SippResult:
    """SIPp's result once it placed all its calls; stop at once if the worker dies meanwhile."""
    started = time.monotonic()
    done = asyncio.create_task(sipp.wait(timeout))
    next_note = 60.0
    while not done.done():
        await asyncio.wait({done}, timeout=1.0)
        if worker is not None and worker.process.poll() is not None:
            done.cancel()
            raise BenchError(
                f"the media worker exited with status {worker.process.returncode}:\n{worker.stderr_tail()}"
            )
        if time.monotonic() - started > next_note:
            progress(f"{next_note:.0f} s")
            next_note += 60.0
    return done.result()


def captured_calls(captured: Captured) -> dict[str, Call]:
    return calls_from_sip(captured.sip)


async def settle(
    client: aioredis.Redis,
    queue: TicketQueue,
    calls: int,
    *,
    within: float = SETTLE_S,
    poll: float = 0.2,
    say: Callable[[str], None] = progress,
) -> None:
    """Wait (at most `within` seconds, looking every `poll`) until every call's ticket has its
    recording attached and its frame stats are written."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tickets = await all_tickets(client, queue)
        attached = sum(1 for t in tickets if any(h.action == "recordings" for h in t.history))
        if attached >= calls and await client.xlen(f"{KEY_PREFIX}:voice:frames") >= calls:
            return
        await asyncio.sleep(poll)
    say(f"not every call settled within {within:g} s; going on")


async def all_tickets(client: aioredis.Redis, queue: TicketQueue) -> list[Ticket]:
    keys = [key for key in map(reply_text, await client.keys(f"{KEY_PREFIX}:t:*")) if not key.endswith((":h", ":m"))]
    tickets = []
    for key in keys:
        with contextlib.suppress(GatewayError):
            tickets.append(await queue.get(key.rsplit(":", 1)[1]))
    return tickets


async def join_calls(client: aioredis.Redis, queue: TicketQueue, captured: Captured, prompts: Prompts) -> list[Call]:
    calls = captured_calls(captured)
    greeting, hold = PromptAudio.load(prompts.greeting), PromptAudio.load(prompts.hold)
    for call in calls.values():
        add_media(call, captured, greeting, hold)
    await join_tickets(client, queue, calls.values())
    return sorted(calls.values(), key=lambda call: call.invite_ns)


async def join_tickets(client: aioredis.Redis, queue: TicketQueue, calls: Iterable[Call]) -> None:
    """Each call (by its caller id) with its ticket, its queue entry time and its live-audio frame stats."""
    tickets = {t.voice.caller: t for t in await all_tickets(client, queue) if t.voice is not None}
    frames = {}
    for _, fields in await client.xrange(f"{KEY_PREFIX}:voice:frames") or []:
        stats = {reply_text(k): reply_text(v) for k, v in (fields or {}).items()}
        frames[stats.get("call", "")] = stats
    for call in calls:
        ticket = tickets.get(call.caller)
        if ticket is None:
            continue
        entry = reply_text(await client.hget(f"{KEY_PREFIX}:t:{ticket.id}", "entry") or "")
        add_ticket(call, ticket, int(entry.split("-")[0]) if entry else None)
        if ticket.voice is not None and ticket.voice.call_id in frames:
            add_frames(call, frames[ticket.voice.call_id])


def warnings(path: Path, limit: int = 5) -> list[str]:
    """The worker's distinct WARNING-or-worse log messages (timestamps left out)."""
    found: list[str] = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        match = LOG_LINE.match(line)  # continuation lines (tracebacks, long messages) are left out
        message = f"{match['level']} {match['message'][:200]}" if match else ""
        if message and message not in found:
            found.append(message)
    return found[:limit]


def stop_worker(worker: WorkerProcess) -> int | None:
    """Stop it (SIGTERM) and show what it logged at WARNING or above; a no-op once it has exited."""
    if worker.process.poll() is not None:
        return worker.process.returncode
    code = worker.stop()
    errors = worker.stderr_tail()
    if errors:
        progress(f"media worker stderr (last lines):\n{errors}")
    return code
