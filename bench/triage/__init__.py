"""Triage benchmark: what the triage consumer does per ticket, pure and against Redis.

1. Accuracy: the dispatch suggestion trained on the labelled contacts without the held-out fifth
   (`catalogue.split`), top-1 and top-3 on that fifth.
2. Assess (pure, one core): `assess(ticket, triager, now)`, the whole decision (dispatch suggestion,
   sensitive words, flags and priority, deadline clocks), over the labelled contacts as tickets
   (typed and ASR-style, some long) and long rambling texts made of several, with a sensitive-word
   library of 10,000 words (the shipped ones and generated ones); tickets/s and the p99 of one call.
3. Consumer (Redis): N tickets stored through `TicketQueue.intake` on an embedded redis-server
   (AOF everysec, as in production); one `Triage` consumer then reads `hg:created` and amends each
   ticket (WATCH/MULTI, alerts written when found) and acknowledges: tickets/s and the p99 of one
   ticket's amend. Baseline in the same run: the same reads, amends and acknowledgements with the
   ticket written back unchanged (nothing assessed), so the ratio shows what deciding costs beside
   the store's own work.

Not measured yet: merge-candidate search against a history of 300,000 tickets (主单+子单 is being
built), and intake throughput with triage running beside it (triage runs in the gateway's process
today; the ratio needs it in a process of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.common.stats import machine, summary_ms
from bench.triage.report import render as render
from gateway.config import DeadlinesConfig, LiveConfig, SensitiveConfig, parse_config
from gateway.queue import TicketQueue
from gateway.shell.app import redis_client
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from gateway.ticket import Ticket, new_ticket_id, utcnow
from gateway.triage.assess import Triager, assess
from gateway.triage.catalogue import LABELLED, Category, Example, load_catalogue, load_examples, split
from gateway.triage.dispatch import suggest, train
from gateway.triage.sensitive import SensitiveMatcher, SensitiveWord
from gateway.triage.service import Triage
from peers.gateway_config import make_raw_config
from tests.triage.conftest import SHARED_TRIAGE

NAME = "triage"
TITLE = "Triage: dispatch suggestion, sensitive words, deadlines per ticket"
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gateway.toml"
TARGET_TICKETS_PER_S = 2000.0
TARGET_P99_MS = 20.0
TARGET_TOP3 = 0.95
PRIORITIES = {"urgent": 5, "enterprise": 7, "sensitive_high": 6, "sensitive_critical": 9}
CATEGORIES = ("self_harm", "violence", "mass_incident", "public_safety", "extreme_demand", "minor_at_risk")


@dataclass(frozen=True)
class Options:
    tickets: int = 5_000  # assessed (pure)
    stored: int = 3_000  # through the consumer
    words: int = 10_000
    seed: int = 2026

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(args.triage_tickets, args.triage_stored, args.triage_words, args.triage_seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("triage")
    defaults = Options()
    group.add_argument("--triage-tickets", type=int, default=defaults.tickets, help="assessed (%(default)s)")
    group.add_argument("--triage-stored", type=int, default=defaults.stored, help="through Redis (%(default)s)")
    group.add_argument("--triage-words", type=int, default=defaults.words, help="sensitive words (%(default)s)")
    group.add_argument("--triage-seed", type=int, default=defaults.seed, help="(%(default)s)")


def progress(message: str) -> None:
    print(f"[triage] {message}", file=sys.stderr, flush=True)


def shipped_words() -> list[SensitiveWord]:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["sensitive"]
    return list(SensitiveConfig.model_validate(raw).words)


def library(size: int, rng: random.Random) -> list[SensitiveWord]:
    """The shipped words and generated ones up to `size`: 2-4 common-range characters each, distinct."""
    words = shipped_words()
    seen = {word.word for word in words}
    while len(words) < size:
        text = "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4)))
        if text not in seen:
            seen.add(text)
            words.append(SensitiveWord(word=text, category=rng.choice(CATEGORIES), severity=rng.randint(1, 3)))
    return words


def rambling(rng: random.Random, examples: tuple[Example, ...]) -> str:
    """A long contact: several labelled contacts run together, as an upset caller's would."""
    return "，".join(rng.choice(examples).text for _ in range(rng.randint(3, 8)))


def texts(rng: random.Random, examples: tuple[Example, ...], count: int) -> list[str]:
    return [rambling(rng, examples) if rng.random() < 0.1 else rng.choice(examples).text for _ in range(count)]


def accuracy(categories: tuple[Category, ...], examples: tuple[Example, ...]) -> dict[str, Any]:
    trained, held = split(examples)
    model = train(categories, trained)
    ranked = [[s.category for s in suggest(model, example.text)] for example in held]
    top1 = sum(1 for example, got in zip(held, ranked, strict=True) if got[:1] == [example.category])
    top3 = sum(1 for example, got in zip(held, ranked, strict=True) if example.category in got)
    return {"held_out": len(held), "top1": round(top1 / len(held), 4), "top3": round(top3 / len(held), 4)}


def assess_run(triager: Triager, bodies: list[str]) -> dict[str, Any]:
    now = utcnow()
    tickets = [_ticket(f"b{n}", text, now) for n, text in enumerate(bodies)]
    for ticket in tickets[:200]:  # warm
        assess(ticket, triager, now)
    durations: list[int] = []
    alerted = 0
    started = time.perf_counter_ns()
    for ticket in tickets:
        begin = time.perf_counter_ns()
        alerted += bool(assess(ticket, triager, now).alerts)
        durations.append(time.perf_counter_ns() - begin)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    return {
        "tickets": len(tickets),
        "per_s": round(len(tickets) / elapsed, 1),
        "latency_ms": summary_ms(durations),
        "alerted": alerted,
        "mean_chars": round(sum(len(t) for t in bodies) / len(bodies), 1),
    }


def _ticket(message_id: str, text: str, now: Any) -> Ticket:
    return Ticket(id=new_ticket_id(now), channel="web", message_id=message_id, received_at=now, text=text,
                  queue="general", status="queued")  # fmt: skip


async def consumer_run(triager: Triager, bodies: list[str], scratch: Path) -> dict[str, Any]:
    server = EmbeddedRedis(port=free_port(), data_dir=scratch / "redis", appendfsync="everysec")
    server.start()
    try:
        config = parse_config(make_raw_config("bt", server.url), scratch)
        client = redis_client(server.url, config.redis)
        try:
            queue = TicketQueue(client, config)
            await queue.ensure_groups()
            baseline = await _drain(queue, config, triager, await _store(queue, bodies, "base"), assessed=False)
            measured = await _drain(queue, config, triager, await _store(queue, bodies, "t"), assessed=True)
        finally:
            await client.aclose()
    finally:
        server.stop()
    return {"baseline": baseline, "triage": measured, "ratio": round(measured["per_s"] / baseline["per_s"], 3)}


async def _store(queue: TicketQueue, bodies: list[str], tag: str) -> int:
    now = utcnow()
    for start in range(0, len(bodies), 200):
        chunk = bodies[start : start + 200]
        tickets = [_ticket(f"{tag}{start + n}", text, now) for n, text in enumerate(chunk)]
        await asyncio.gather(*(queue.intake(ticket, "bench") for ticket in tickets))
    return len(bodies)


async def _drain(queue: TicketQueue, config: Any, triager: Triager, count: int, assessed: bool) -> dict[str, Any]:
    """Read `count` entries of `hg:created` with a fresh consumer group and handle each: assessed and
    amended (`Triage.triage`), or amended unchanged (the baseline)."""
    group = "triage" if assessed else "bench-baseline"
    consumer = Triage(LiveConfig(config), queue, triager, name="bench")
    await consumer.ensure_group(group=group)
    durations: list[int] = []
    done = 0
    started = time.perf_counter_ns()
    while done < count:
        reply: Any = await queue.redis.xreadgroup(group, "bench", {queue.keys.created: ">"}, count=100, block=1000)
        entries = [(entry_id, fields) for _, found in reply or [] for entry_id, fields in found]
        if not entries:
            raise BenchError(f"the stream ran dry after {done} of {count} entries")
        for _, fields in entries:
            begin = time.perf_counter_ns()
            if assessed:
                await consumer.triage(fields[b"t"].decode())
            else:
                await queue.amend(fields[b"t"].decode(), lambda ticket: ticket, "bench", "unchanged")
            durations.append(time.perf_counter_ns() - begin)
        await queue.redis.xack(queue.keys.created, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    if assessed and consumer.triaged != count:
        raise BenchError(f"{consumer.triaged} of {count} tickets triaged")
    return {"tickets": done, "per_s": round(done / elapsed, 1), "latency_ms": summary_ms(durations)}


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if min(options.tickets, options.stored, options.words) < 1:
        raise BenchError("--triage-tickets, --triage-stored and --triage-words must be at least 1")
    path = SHARED_TRIAGE / "catalogue.toml"
    if not path.exists():
        raise BenchError(f"the example dispatch catalogue is not at {path} (set TRIAGE_DATA)")
    categories = load_catalogue(path)
    examples = load_examples(LABELLED, categories)
    rng = random.Random(options.seed)
    started = time.perf_counter()
    words = library(options.words, rng)
    matcher = SensitiveMatcher(words)
    build_s = time.perf_counter() - started
    triager = Triager(
        model=train(categories, examples),
        matcher=matcher,
        categories={category.id: category for category in categories},
        calendar=DeadlinesConfig().calendar,
        flag_priority=PRIORITIES,
    )
    scores = accuracy(categories, examples)
    progress(f"held-out top-1 {scores['top1']:.3f}, top-3 {scores['top3']:.3f}")
    pure = assess_run(triager, texts(rng, examples, options.tickets))
    progress(f"assess: {pure['per_s']:,.0f} tickets/s, p99 {pure['latency_ms']['p99']} ms")
    with tempfile.TemporaryDirectory(prefix="hg-bench-triage-") as scratch:
        stored = asyncio.run(consumer_run(triager, texts(rng, examples, options.stored), Path(scratch)))
    progress(f"consumer: {stored['triage']['per_s']:,.0f} tickets/s (baseline {stored['baseline']['per_s']:,.0f})")
    return {
        "bench": NAME,
        **machine(),
        "words": len(words),
        "matcher_build_s": round(build_s, 3),
        "accuracy": scores,
        "assess": pure,
        "consumer": stored,
        "targets": {
            "tickets_per_s": {"target": TARGET_TICKETS_PER_S, "met": stored["triage"]["per_s"] >= TARGET_TICKETS_PER_S},
            "p99_ms": {"target": TARGET_P99_MS, "met": stored["triage"]["latency_ms"]["p99"] <= TARGET_P99_MS},
            "top3": {"target": TARGET_TOP3, "met": scores["top3"] >= TARGET_TOP3},
        },
        "ok": True,
    }
