"""The intake benchmark's options, and its figures computed from what its processes measured (no I/O)."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.stats import machine, per_second, summary_ms

TARGET_TICKETS_PER_S = 2000
TARGET_OFFER_P99_MS = 50.0


@dataclass(frozen=True)
class Options:
    tickets: int = 5000
    agents: int = 20
    rate: int = 500
    seconds: float = 5.0
    concurrency: int = 64
    profile: Path | None = None
    raw_out: Path | None = None
    # A dispatch catalogue: triage runs beside the gateway, in a `hotline-gateway triage` process of
    # its own (bench/triage measures intake with it against intake without).
    triage_catalogue: Path | None = None
    submit_category: str = ""  # the seats submit each ticket with this category ('' none)

    @property
    def cprofile(self) -> Path | None:
        """Where the gateway's cProfile stats go (`--profile X.prof`), if asked."""
        return self.profile if self.profile is not None and self.profile.suffix == ".prof" else None

    @property
    def pyspy(self) -> Path | None:
        """Where py-spy's collapsed stacks go (`--profile` with any other suffix), if asked."""
        return self.profile if self.profile is not None and self.profile.suffix != ".prof" else None

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(
            tickets=args.tickets,
            agents=args.agents,
            rate=args.rate,
            seconds=args.seconds,
            concurrency=args.concurrency,
            profile=args.profile,
            raw_out=args.raw,
        )


@dataclass
class Raw:
    """Everything measured, before it is turned into figures."""

    burst: dict[str, Any]
    paced: dict[str, Any]
    seats: dict[str, Any]
    in_stream: int
    cpu: dict[str, dict[str, float]]
    xadd_runs: list[float] = dataclasses.field(default_factory=list)
    redis_version: str = ""
    redis_rejected_connections: int = 0
    redis_commands: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


def figures(options: Options, raw: Raw) -> dict[str, Any]:
    offers: dict[str, list[int]] = raw.seats["offers"]
    burst_ids, paced_ids = ticket_ids(raw.burst), ticket_ids(raw.paced)
    checks = integrity(raw, burst_ids + paced_ids)
    result: dict[str, Any] = {
        "tickets": options.tickets,
        "agents": options.agents,
        "concurrency": options.concurrency,
        **throughput(raw.burst, burst_ids, raw.seats["submitted"], offers),
        **latency(options, raw.paced, offers),
        "xadd_per_s": statistics.median(raw.xadd_runs) if raw.xadd_runs else 0.0,
        "xadd_runs": raw.xadd_runs,
        "ratio_vs_xadd": 0.0,
        **checks,
        "cpu_pct": raw.cpu,
        **costs(raw, len(burst_ids), len(burst_ids) + len(paced_ids)),
        "errors": raw.seats["errors"][:5] + raw.burst["errors"][:5] + raw.paced["errors"][:5],
        **machine(),
        "redis_version": raw.redis_version,
        "redis_rejected_connections": raw.redis_rejected_connections,
    }
    if result["xadd_per_s"]:
        result["ratio_vs_xadd"] = round(result["tickets_per_s"] / result["xadd_per_s"], 4)
    result["targets"] = targets(result)
    result["ok"] = checks_pass(checks)
    return result


def integrity(raw: Raw, accepted: list[str]) -> dict[str, int]:
    """Every accepted ticket offered exactly once and submitted; what went wrong on the way, counted."""
    offers: dict[str, list[int]] = raw.seats["offers"]
    submitted: dict[str, int] = raw.seats["submitted"]
    ids = set(accepted)
    return {
        "lost": len(ids - submitted.keys()),
        "duplicated_offers": sum(len(times) - 1 for times in offers.values()),
        "never_offered": len(ids - offers.keys()),
        "unknown_offers": len(offers.keys() - ids),
        "failed_posts": len(raw.burst["status"]) + len(raw.paced["status"]) - len(accepted),
        "duplicate_ticket_ids": len(accepted) - len(ids),
        "submitted_in_stream": raw.in_stream,
        "expected_in_stream": len(ids),
        "http_503_retried": raw.burst["retries"] + raw.paced["retries"],
        "seat_retries": raw.seats["retries"],
        "seat_errors": raw.seats["error_count"],
        "offers_revoked": raw.seats["revoked"],
    }


def checks_pass(checks: dict[str, int]) -> bool:
    """Retries are allowed (the API asks for them); anything else that went wrong fails the run."""
    allowed = ("submitted_in_stream", "expected_in_stream", "http_503_retried", "seat_retries")
    failures = [key for key, value in checks.items() if value and key not in allowed]
    return not failures and checks["submitted_in_stream"] == checks["expected_in_stream"]


def costs(raw: Raw, burst_tickets: int, all_tickets: int) -> dict[str, float]:
    """CPU per ticket of the gateway and of Redis (phase 1); Redis's time in Lua scripts (both phases).

    Redis's command stats count a script's inner commands again on their own, so only EVALSHA is used.
    """
    phase = raw.cpu["throughput"]
    per_ticket = phase["wall_s"] * 1000 / 100 / max(1, burst_tickets)
    scripts = raw.redis_commands.get("evalsha", {"calls": 0, "usec": 0})
    return {
        "gateway_cpu_ms_per_ticket": round(phase["gateway"] * per_ticket, 3),
        "redis_cpu_ms_per_ticket": round(phase["redis"] * per_ticket, 3),
        "redis_scripts_per_ticket": round(scripts["calls"] / max(1, all_tickets), 2),
        "redis_script_usec_per_ticket": round(scripts["usec"] / max(1, all_tickets), 1),
    }


def ticket_ids(records: dict[str, Any]) -> list[str]:
    return [
        ticket for ticket, status in zip(records["ticket"], records["status"], strict=True) if status == 202
    ]


def throughput(
    burst: dict[str, Any], ids: list[str], submitted: dict[str, int], offers: dict[str, list[int]]
) -> dict[str, Any]:
    if not ids:
        return {
            "tickets_per_s": 0.0,
            "offered_per_s": 0.0,
            "accepted_per_s": 0.0,
            "burst_accept_latency_ms": summary_ms([]),
        }
    start = min(burst["sent_ns"])
    accepted_end = max(
        done for done, status in zip(burst["done_ns"], burst["status"], strict=True) if status == 202
    )
    done = [submitted[ticket] for ticket in ids if ticket in submitted]
    first_offers = [offers[ticket][0] for ticket in ids if offers.get(ticket)]
    return {
        "tickets_per_s": per_second(len(done), start, max(done)) if done else 0.0,
        # Posted and in front of a seat (the first offer), before the seat's accept and submit.
        "offered_per_s": per_second(len(first_offers), start, max(first_offers)) if first_offers else 0.0,
        "accepted_per_s": per_second(len(ids), start, accepted_end),
        "burst_accept_latency_ms": summary_ms(
            [end - sent for sent, end in zip(burst["sent_ns"], burst["done_ns"], strict=True)]
        ),
    }


def latency(options: Options, paced: dict[str, Any], offers: dict[str, list[int]]) -> dict[str, Any]:
    rows = list(zip(paced["ticket"], paced["status"], paced["sent_ns"], paced["done_ns"], strict=True))
    to_offer = [
        offers[ticket][0] - sent for ticket, status, sent, _ in rows if status == 202 and ticket in offers
    ]
    lag = [sent - due for sent, due in zip(paced["sent_ns"], paced["due_ns"], strict=True)]
    return {
        "rate": options.rate,
        "seconds": options.seconds,
        "achieved_rate": per_second(len(rows) - 1, min(paced["sent_ns"]), max(paced["sent_ns"])),
        "max_send_lag_ms": round(max(lag) / 1e6, 2),
        "offer_latency_ms": summary_ms(to_offer),
        "accept_latency_ms": summary_ms([done - sent for _, status, sent, done in rows if status == 202]),
    }


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "tickets_per_s": {
            "target": TARGET_TICKETS_PER_S,
            "met": result["tickets_per_s"] >= TARGET_TICKETS_PER_S,
        },
        "offer_p99_ms": {
            "target": TARGET_OFFER_P99_MS,
            "met": 0 < result["offer_latency_ms"]["p99"] <= TARGET_OFFER_P99_MS,
        },
    }
