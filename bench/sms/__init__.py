"""SMS benchmark: a citizen's SMS -> offered ticket, per protocol, beside HTTP intake; the reply round trip.

For each protocol (SMPP 3.4 to the faithful SMSC, CMPP 3.0 to the faithful ISMG), on a fresh stack:
redis-server (AOF everysec), the gateway (`hotline-gateway run`, its own process) with
`[channels.sms]` pointing at the carrier (its own process), M seats (one process) that accept every
offer and submit it, and the HTTP load generator (one process).

1. HTTP baseline, same run: N tickets posted, 64 in flight; tickets offered per second.
2. Inbound SMS: N citizens' messages (each from its own number) with at most `window` deliveries
   awaiting the gateway's answer (10 for SMPP, 16 for CMPP); messages offered per second, and each
   message's delivery-to-offer latency. The ratio SMS/HTTP says what share of the HTTP intake rate
   the SMS path reaches on the same machine in the same run.
3. Replies: the seats now reply to each ticket before submitting it; K more messages, one at a time
   awaiting their answer; the round trip from the seat's `reply` frame to the carrier holding the
   whole reply (its last part's submit), joined by the ticket id the reply names.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.common.procs import CpuMeter
from bench.common.stats import machine, summary_ms
from bench.common.workers import Worker
from bench.intake import redis_cpu_seconds, start_agents_and_load, start_redis, stop_gateway
from bench.intake.agents import reply_text
from bench.intake.setup import Credentials, config_toml, start_gateway
from bench.sms.peer import Protocol, carrier_process
from bench.sms.report import render as render
from gateway.config import load_config

NAME = "sms"
TITLE = "SMS: a citizen's message → offered ticket (SMPP, CMPP), and the reply round trip"
PROTOCOLS: tuple[Protocol, ...] = ("smpp", "cmpp")
WINDOWS = {"smpp": 10, "cmpp": 16}
SECRET_ENV = "HG_BENCH_SMS_SECRET"
NUMBERS = {"smpp": "12345", "cmpp": "106353112345"}
ACCOUNTS = {"smpp": "hotline", "cmpp": "901234"}
SEND_RATE = 1000  # the bench's [channels.sms] send_rate: replies are not held back by pacing here
TARGET_MESSAGES_PER_S = 500
TARGET_REPLY_P99_MS = 100.0


@dataclass(frozen=True)
class Options:
    messages: int = 2000
    replies: int = 200
    agents: int = 20
    protocols: tuple[Protocol, ...] = PROTOCOLS

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        protocols = tuple(p for p in args.sms_protocols.split(",") if p)
        unknown = set(protocols) - set(PROTOCOLS)
        if unknown or not protocols:
            raise BenchError(f"--sms-protocols: one or more of {', '.join(PROTOCOLS)}")
        return cls(args.sms_messages, args.sms_replies, args.sms_agents, protocols)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sms")
    defaults = Options()
    group.add_argument("--sms-messages", type=int, default=defaults.messages, help="inbound phase (%(default)s)")
    group.add_argument("--sms-replies", type=int, default=defaults.replies, help="reply phase (%(default)s)")
    group.add_argument("--sms-agents", type=int, default=defaults.agents, help="seats (%(default)s)")
    group.add_argument("--sms-protocols", default=",".join(PROTOCOLS), help="(%(default)s)")


def progress(message: str) -> None:
    print(f"[sms] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if min(options.messages, options.replies, options.agents) < 1:
        raise BenchError("--sms-messages, --sms-replies and --sms-agents must be at least 1")
    results: dict[str, dict[str, Any]] = {protocol: run_protocol(protocol, options) for protocol in options.protocols}
    return {"bench": NAME, **figures(options, results)}


def run_protocol(protocol: Protocol, options: Options) -> dict[str, Any]:
    progress(f"{protocol}: starting redis, the carrier, the gateway and {options.agents} seats")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-sms-{protocol}-")))
        server, client = start_redis(stack, tmp)
        secret = secrets.token_hex(4)  # SMPP 3.4: a password of at most 8 characters
        os.environ[SECRET_ENV] = secret
        carrier = Worker("carrier", carrier_process, protocol, ACCOUNTS[protocol], secret, NUMBERS[protocol])
        stack.callback(carrier.stop)
        carrier.start()
        port = int(carrier.call({"op": "start"}, timeout=20)["port"])
        creds = Credentials.fresh(options.agents)
        config = write_sms_config(tmp, server.url, creds, protocol, port)
        gateway = start_gateway(tmp, config, server.url)
        stack.callback(stop_gateway, gateway)
        carrier.call({"op": "bound", "timeout": 20.0}, timeout=30)
        agents, load = start_agents_and_load(stack, gateway, creds)
        pids = {"gateway": gateway.process.pid, "carrier": carrier.pid, "agents": agents.pid, "loadgen": load.pid}
        meter = CpuMeter(pids, {"redis": lambda: redis_cpu_seconds(client)})
        return phases(protocol, options, carrier, agents, load, meter)


def write_sms_config(directory: Path, redis_url: str, creds: Credentials, protocol: Protocol, port: int) -> Path:
    lines = ["[channels.sms]", "enabled = true", f'protocol = "{protocol}"', f'smsc = "127.0.0.1:{port}"']
    lines += [f'password_env = "{SECRET_ENV}"', f"send_rate = {SEND_RATE}", f"window = {WINDOWS[protocol]}"]
    if protocol == "smpp":
        lines += [f'system_id = "{ACCOUNTS[protocol]}"', f'source_addr = "{NUMBERS[protocol]}"']
    else:
        lines += [f'sp_id = "{ACCOUNTS[protocol]}"', 'service_id = "HOTLINE"', f'src_id = "{NUMBERS[protocol]}"']
    path = directory / "gateway.toml"
    path.write_text(config_toml(redis_url, creds) + "\n".join(lines) + "\n")
    load_config(path)  # a ConfigError here names the field, which beats a gateway that exits at start
    return path


def phases(
    protocol: Protocol, options: Options, carrier: Worker, agents: Worker, load: Worker, meter: CpuMeter
) -> dict[str, Any]:
    n = options.messages
    progress(f"{protocol}: HTTP baseline, {n} tickets, 64 in flight")
    burst = load.call({"op": "burst", "first": 0, "count": n, "concurrency": 64}, timeout=max(60.0, n / 20))
    http_ids = {ticket for ticket in burst["ticket"] if ticket}
    wait_offered(agents, http_ids)
    cpu = {"http": meter.lap()}
    progress(f"{protocol}: {n} citizens' messages, window {WINDOWS[protocol]}")
    flood = carrier.call({"op": "flood", "count": n, "window": WINDOWS[protocol]}, timeout=max(120.0, n / 10))
    seen = wait_citizens(agents, set(flood["sent"]))
    cpu["sms"] = meter.lap()
    progress(f"{protocol}: {options.replies} replies, one message at a time")
    agents.call({"op": "mode", "replying": True}, timeout=10)
    carrier.call(
        {"op": "flood", "count": options.replies, "window": 1, "first": n}, timeout=max(120.0, options.replies)
    )
    arrivals = carrier.call({"op": "replies", "count": options.replies, "timeout": 120.0}, timeout=150)["arrivals"]
    seats = agents.call({"op": "report"}, timeout=30)
    return {
        "http": offered_figures(burst_sent(burst), seats["offers"], http_ids),
        "sms": sms_figures(flood, seats, seen),
        "replies": reply_figures(seats["replies"], arrivals),
        "cpu_pct": cpu,
    }


def burst_sent(burst: dict[str, Any]) -> dict[str, int]:
    return {ticket: sent for ticket, sent in zip(burst["ticket"], burst["sent_ns"], strict=True) if ticket}


def wait_offered(agents: Worker, tickets: set[str], stall: float = 30.0) -> None:
    """Until every ticket was offered to a seat (polling the seats' report; before the next phase)."""
    wait_for(lambda report: tickets <= set(report["offers"]), agents, stall, f"{len(tickets)} tickets offered")


def wait_citizens(agents: Worker, citizens: set[str], stall: float = 60.0) -> dict[str, Any]:
    def done(report: dict[str, Any]) -> bool:
        return citizens <= set(report["citizens"].values())

    return wait_for(done, agents, stall, f"{len(citizens)} messages offered")


def wait_for(done: Any, agents: Worker, stall: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + stall
    while True:
        report = agents.call({"op": "report"}, timeout=30)
        if done(report):
            return report
        if time.monotonic() > deadline:
            raise BenchError(f"not all of {what} within {stall:.0f} s")
        time.sleep(0.2)


def offered_figures(sent: dict[str, int], offers: dict[str, list[int]], tickets: set[str]) -> dict[str, Any]:
    firsts = {ticket: offers[ticket][0] for ticket in tickets}
    span = (max(firsts.values()) - min(sent[t] for t in tickets)) / 1e9
    latency = [firsts[t] - sent[t] for t in tickets]
    return {"count": len(tickets), "per_s": round(len(tickets) / span, 1), "latency_ms": summary_ms(latency)}


def sms_figures(flood: dict[str, Any], seats: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    ticket_of = {phone: ticket for ticket, phone in seen["citizens"].items()}
    sent: dict[str, int] = flood["sent"]
    tickets = {ticket_of[citizen] for citizen in sent}
    duplicates = len(sent) - len(tickets)
    by_ticket = {ticket_of[citizen]: at for citizen, at in sent.items()}
    result = offered_figures(by_ticket, seats["offers"], tickets)
    answered = [flood["answered"][c] - sent[c] for c in sent]
    return {**result, "answer_ms": summary_ms(answered), "tickets_for_messages": len(tickets), "merged": duplicates}


def reply_figures(replies: dict[str, int], arrivals: list[list[Any]]) -> dict[str, Any]:
    texts = {reply_text(ticket): at for ticket, at in replies.items()}
    trips = [arrived - texts[text] for _, text, arrived in arrivals if text in texts]
    return {"count": len(trips), "round_trip_ms": summary_ms(trips)}


def figures(options: Options, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for result in results.values():
        result["ratio_vs_http"] = round(result["sms"]["per_s"] / result["http"]["per_s"], 3)
        result["targets"] = {
            "messages_per_s": {"target": TARGET_MESSAGES_PER_S, "met": result["sms"]["per_s"] >= TARGET_MESSAGES_PER_S},
            "reply_p99_ms": {
                "target": TARGET_REPLY_P99_MS,
                "met": result["replies"]["round_trip_ms"]["p99"] <= TARGET_REPLY_P99_MS,
            },
        }
    host = machine()
    ok = all(r["sms"]["merged"] == 0 and r["replies"]["count"] == options.replies for r in results.values())
    return {
        "messages": options.messages,
        "replies": options.replies,
        "agents": options.agents,
        "send_rate": SEND_RATE,
        "windows": {p: WINDOWS[p] for p in results},
        "protocols": results,
        "ok": ok,
        **host,
    }
