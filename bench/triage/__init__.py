"""Triage benchmark: what the triage consumer does per ticket, pure and against Redis.

1. Accuracy: the dispatch suggestion trained on the labelled contacts without the held-out fifth
   (`catalogue.split`), top-1 and top-3 on that fifth.
2. Assess (pure, one core): `assess(ticket, triager, now)`, the whole decision (dispatch suggestion,
   sensitive words, flags and priority, deadline clocks), over the labelled contacts as tickets
   (typed and ASR-style, some long) and long rambling texts made of several, with a sensitive-word
   library of 10,000 words (the shipped ones and generated ones); tickets/s and the p99 of one call.
3. Consumer (Redis): N tickets stored through `TicketQueue.intake` on an embedded redis-server
   (AOF everysec, as in production), half of them naming a street of the example gazetteer; the
   merge buckets full, as a history of any length leaves them (every category x street of the
   gazetteer holds its `max_bucket` newest possible 主单, each a stored ticket); one `Triage` consumer then
   reads `hg:created` and handles each batch as the service does (`Triage.handle`: lanes at the same
   time, each ticket assessed, its merge candidates looked up and weighed, amended in WATCH/MULTI)
   and acknowledges: tickets/s, and the p99 of a ticket's wait from the batch's read to its amend.
   Baseline in the same run: the same reads, amends and acknowledgements with the ticket written
   back unchanged (nothing assessed, nothing looked up), so the ratio shows what deciding costs
   beside the store's own work.

4. Intake beside triage: the intake benchmark's throughput phase (bench/intake: HTTP posts to
   submitted by seats) twice in this run, alone and with a `hotline-gateway triage` process beside
   the gateway (`[triage] in_core = false`): the ratio of tickets/s with triage to without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.common.stats import machine, summary_ms
from bench.triage.report import render as render
from gateway.config import DeadlinesConfig, GatewayConfig, LiveConfig, SensitiveConfig, parse_config
from gateway.queue import TicketQueue
from gateway.shell.app import redis_client
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from gateway.ticket import Ticket, new_ticket_id, utcnow
from gateway.triage.assess import Triager, assess
from gateway.triage.catalogue import LABELLED, Category, Example, load_catalogue, load_examples, split
from gateway.triage.dispatch import suggest, train
from gateway.triage.merge import signature
from gateway.triage.sensitive import SensitiveMatcher, SensitiveWord
from gateway.triage.service import Triage, build_triager
from peers.gateway_config import make_raw_config
from tests.triage.conftest import SHARED_TRIAGE

NAME = "triage"
TITLE = "Triage: dispatch suggestion, sensitive words, deadlines per ticket"
EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gateway.toml"
TARGET_TICKETS_PER_S = 2000.0
TARGET_P99_MS = 20.0
TARGET_TOP3 = 0.95
TARGET_INTAKE_RATIO = 0.9
PRIORITIES = {"urgent": 5, "enterprise": 7, "sensitive_high": 6, "sensitive_critical": 9}
CATEGORIES = ("self_harm", "violence", "mass_incident", "public_safety", "extreme_demand", "minor_at_risk")


@dataclass(frozen=True)
class Options:
    tickets: int = 5_000  # assessed (pure)
    stored: int = 3_000  # through the consumer
    words: int = 10_000
    seed: int = 2026
    intake: int = 3_000  # tickets posted per intake run (0: the intake ratio is not measured)

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(args.triage_tickets, args.triage_stored, args.triage_words, args.triage_seed, args.triage_intake)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("triage")
    defaults = Options()
    group.add_argument("--triage-tickets", type=int, default=defaults.tickets, help="assessed (%(default)s)")
    group.add_argument("--triage-stored", type=int, default=defaults.stored, help="through Redis (%(default)s)")
    group.add_argument("--triage-words", type=int, default=defaults.words, help="sensitive words (%(default)s)")
    group.add_argument("--triage-seed", type=int, default=defaults.seed, help="(%(default)s)")
    group.add_argument(
        "--triage-intake", type=int, default=defaults.intake, help="tickets per intake run, 0 none (%(default)s)"
    )


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


class TimedTriage(Triage):
    """The service's consumer, each ticket's triage timed: from its batch's read (`read_at`) and
    on its own (its call, waits for the loop and Redis included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_at = 0
        self.own: list[int] = []
        self.waited: list[int] = []

    async def triage(self, ticket_id: str) -> None:
        begin = time.perf_counter_ns()
        await super().triage(ticket_id)
        end = time.perf_counter_ns()
        self.own.append(end - begin)
        self.waited.append(end - self.read_at)


def bench_config(url: str, scratch: Path, words: list[SensitiveWord]) -> GatewayConfig:
    example = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    triage = {"enabled": True, "catalogue": str(SHARED_TRIAGE / "catalogue.toml"), "merge": example["triage"]["merge"]}
    sensitive = {"words": [word.model_dump() for word in words]}
    return parse_config(make_raw_config("bt", url, triage=triage, sensitive=sensitive), scratch)


def streets(config: GatewayConfig) -> list[tuple[str, str]]:
    return [(district.name, street) for district in config.triage.merge.districts for street in district.streets]


async def fill_buckets(queue: TicketQueue, triager: Triager, places: list[tuple[str, str]], bodies: list[str]) -> int:
    """Every category x street bucket full of possible 主单 (`max_bucket` each, received within the
    window, open), each a ticket hash with its status, as a long history leaves them."""
    settings = triager.merge
    now = utcnow()
    count = 0
    for category in triager.categories:
        async with queue.redis.pipeline(transaction=False) as pipe:
            for district, street in places:
                bucket = queue.keys.merge_bucket(category, f"{district}/{street}")
                for n in range(settings.max_bucket):
                    ticket_id = new_ticket_id(now)
                    at = now - timedelta(seconds=settings.window * n / (2 * settings.max_bucket))
                    sig = signature(bodies[(count + n) % len(bodies)], triager.gazetteer)
                    pipe.zadd(bucket, {f"{ticket_id} {sig}": int(at.timestamp() * 1000)})
                    pipe.hset(queue.keys.ticket(ticket_id), mapping={"status": "queued", "doc": "{}"})
                count += settings.max_bucket
            await pipe.execute()
    return count


async def consumer_run(
    words: list[SensitiveWord], bodies: list[str], scratch: Path, rng: random.Random
) -> dict[str, Any]:
    server = EmbeddedRedis(port=free_port(), data_dir=scratch / "redis", appendfsync="everysec")
    server.start()
    try:
        config = bench_config(server.url, scratch, words)
        triager = build_triager(config)
        places = streets(config)
        placed = [
            f"{body}。地址：{d}{st}" if rng.random() < 0.5 else body
            for body in bodies
            for d, st in [rng.choice(places)]
        ]
        client = redis_client(server.url, config.redis)
        try:
            queue = TicketQueue(client, config)
            await queue.ensure_groups()
            started = time.perf_counter()
            history = await fill_buckets(queue, triager, places, bodies)
            progress(f"buckets filled: {history:,} possible 主单 in {time.perf_counter() - started:.0f} s")
            baseline = await _baseline(queue, config, triager, await _store(queue, placed, "base"))
            measured = await _measure(queue, config, triager, await _store(queue, placed, "t"))
        finally:
            await client.aclose()
    finally:
        server.stop()
    ratio = round(measured["per_s"] / baseline["per_s"], 3)
    return {"history": history, "baseline": baseline, "triage": measured, "ratio": ratio}


async def _store(queue: TicketQueue, bodies: list[str], tag: str) -> int:
    now = utcnow()
    for start in range(0, len(bodies), 200):
        chunk = bodies[start : start + 200]
        tickets = [_ticket(f"{tag}{start + n}", text, now) for n, text in enumerate(chunk)]
        await asyncio.gather(*(queue.intake(ticket, "bench") for ticket in tickets))
    return len(bodies)


async def _read(queue: TicketQueue, group: str, done: int, count: int) -> list[tuple[str, dict[str, str]]]:
    reply: Any = await queue.redis.xreadgroup(group, "bench", {queue.keys.created: ">"}, count=100, block=1000)
    entries = [(entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
               for _, found in reply or [] for entry_id, fields in found]  # fmt: skip
    if not entries:
        raise BenchError(f"the stream ran dry after {done} of {count} entries")
    return entries


async def _baseline(queue: TicketQueue, config: GatewayConfig, triager: Triager, count: int) -> dict[str, Any]:
    """Each entry's ticket written back unchanged through the same amend, one after another."""
    consumer = Triage(LiveConfig(config), queue, triager, name="bench")
    await consumer.ensure_group(group="bench-baseline")
    done, durations = 0, []
    started = time.perf_counter_ns()
    while done < count:
        entries = await _read(queue, "bench-baseline", done, count)
        for _, fields in entries:
            begin = time.perf_counter_ns()
            await queue.amend(fields["t"], lambda ticket: ticket, "bench", "unchanged")
            durations.append(time.perf_counter_ns() - begin)
        await queue.redis.xack(queue.keys.created, "bench-baseline", *[entry_id for entry_id, _ in entries])
        done += len(entries)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    return {"tickets": done, "per_s": round(done / elapsed, 1), "latency_ms": summary_ms(durations)}


async def _measure(queue: TicketQueue, config: GatewayConfig, triager: Triager, count: int) -> dict[str, Any]:
    """The service's own batch handling (`Triage.handle`) over `count` entries of the group `triage`."""
    consumer = TimedTriage(LiveConfig(config), queue, triager, name="bench")
    await consumer.ensure_group()
    done = 0
    started = time.perf_counter_ns()
    while done < count:
        consumer.read_at = time.perf_counter_ns()
        entries = await consumer.read_new()
        if not entries:
            raise BenchError(f"the stream ran dry after {done} of {count} entries")
        await consumer.handle(entries)
        done += len(entries)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    if consumer.triaged != count:
        raise BenchError(f"{consumer.triaged} of {count} tickets triaged")
    return {
        "tickets": done,
        "per_s": round(done / elapsed, 1),
        "latency_ms": summary_ms(consumer.own),
        "from_read_ms": summary_ms(consumer.waited),
        "merged": consumer.merged if hasattr(consumer, "merged") else None,
    }


def intake_ratio(tickets: int, catalogue: Path) -> dict[str, Any]:
    """The intake benchmark's throughput alone, then with a triage process beside the gateway."""
    from bench.intake import measure
    from bench.intake.figures import Options as IntakeOptions
    from bench.intake.figures import figures

    found: dict[str, float] = {}
    for name, beside in (("alone", None), ("with_triage", catalogue)):
        # Both runs submit with a category: with a catalogue a submit needs one (the same work alone).
        options = IntakeOptions(
            tickets=tickets, rate=200, seconds=2.0, triage_catalogue=beside, submit_category="municipal_facility"
        )
        with contextlib.ExitStack() as stack:
            figured = figures(options, measure(stack, options))
        if figured["lost"] or figured["errors"]:
            raise BenchError(f"intake {name}: {figured['lost']} tickets lost; {figured['errors'][:2]}")
        found[name] = float(figured["tickets_per_s"])
        progress(f"intake {name.replace('_', ' ')}: {found[name]:,.0f} tickets/s")
    return {**found, "tickets": tickets, "ratio": round(found["with_triage"] / found["alone"], 3)}


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
        stored = asyncio.run(consumer_run(words, texts(rng, examples, options.stored), Path(scratch), rng))
    progress(f"consumer: {stored['triage']['per_s']:,.0f} tickets/s (baseline {stored['baseline']['per_s']:,.0f})")
    beside = intake_ratio(options.intake, path) if options.intake else None
    return {
        "bench": NAME,
        **machine(),
        "words": len(words),
        "matcher_build_s": round(build_s, 3),
        "accuracy": scores,
        "assess": pure,
        "consumer": stored,
        "intake": beside,
        "targets": {
            "tickets_per_s": {"target": TARGET_TICKETS_PER_S, "met": stored["triage"]["per_s"] >= TARGET_TICKETS_PER_S},
            "p99_ms": {"target": TARGET_P99_MS, "met": stored["triage"]["latency_ms"]["p99"] <= TARGET_P99_MS},
            "top3": {"target": TARGET_TOP3, "met": scores["top3"] >= TARGET_TOP3},
            "intake_ratio": {
                "target": TARGET_INTAKE_RATIO,
                "met": bool(beside and beside["ratio"] >= TARGET_INTAKE_RATIO),
            },
        },
        "ok": True,
    }
