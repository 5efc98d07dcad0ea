"""Knowledge-base benchmark: search latency over 20,000 entries, and top-3 recall on the query set.

1. Recall: the 300 example entries (../shared/triage/knowledge.jsonl, or $TRIAGE_DATA) in a fresh
   base; each of the paraphrased queries (tests/knowledge/queries.tsv) searched on the same day as
   the tests; a hit when an expected entry is among the first three; any expired entry in any
   result is a failure.
2. Scale: the 300 entries plus generated variants (the same text placed in one of the city's
   districts and streets, each variant's text distinct) up to N entries (20,000), imported as one
   version; then M searches (2,000) drawn at random from the query set, one in ten of them a long
   ticket-like text (several queries and a caller's filler, 300-900 characters), timed one by one
   (`KnowledgeBase.search`, the call the HTTP handler makes). Recall is measured again at scale,
   counting a variant of an expected entry as a hit.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.common.stats import machine, summary_ms
from bench.knowledge.report import render as render
from gateway.knowledge import Entry, KnowledgeBase, parse_entries
from tests.knowledge.recall import Query, load_queries, top3_recall
from tests.triage.conftest import SHARED_TRIAGE

NAME = "knowledge"
TITLE = "Knowledge base: search over 20,000 entries, top-3 recall"
TODAY = date(2026, 12, 1)  # the tests' day: after every expired entry's end
TARGET_P99_MS = 20.0
TARGET_RECALL = 0.90
_DISTRICTS = "芝罘区 莱山区 福山区 牟平区 蓬莱区 龙口市 莱阳市 莱州市 招远市 栖霞市 海阳市 开发区 高新区 长岛"
_STREETS = (
    "向阳街道 东山街道 毓璜顶街道 通伸街道 凤凰台街道 奇山街道 白石街道 芝罘岛街道 世回尧街道 幸福街道 只楚街道"
    " 黄务街道 初家街道 滨海路街道 莱山街道 解甲庄街道"
)
DISTRICTS = tuple(_DISTRICTS.split())
STREETS = tuple(_STREETS.split())
FILLER = ("喂你好，", "我跟你说一下啊，", "是这么个情况，", "我们这边好几户都这样，", "麻烦你们给记一下，",
          "上次打过一次了没人管，", "我姓王，住在小区三号楼，", "这个事拖了挺长时间了，")  # fmt: skip


@dataclass(frozen=True)
class Options:
    entries: int = 20_000
    searches: int = 2_000
    seed: int = 12345

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(args.knowledge_entries, args.knowledge_searches, args.knowledge_seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("knowledge")
    defaults = Options()
    group.add_argument("--knowledge-entries", type=int, default=defaults.entries, help="(%(default)s)")
    group.add_argument("--knowledge-searches", type=int, default=defaults.searches, help="(%(default)s)")
    group.add_argument("--knowledge-seed", type=int, default=defaults.seed, help="(%(default)s)")


def progress(message: str) -> None:
    print(f"[knowledge] {message}", file=sys.stderr, flush=True)


def example_entries() -> tuple[Entry, ...]:
    path = SHARED_TRIAGE / "knowledge.jsonl"
    if not path.exists():
        raise BenchError(f"the example knowledge base is not at {path} (set TRIAGE_DATA)")
    return parse_entries(path.name, path.read_bytes())


def variants(real: tuple[Entry, ...], total: int) -> list[Entry]:
    """`total - len(real)` entries made from the real ones, each with distinct text: a district and
    a street in the question, a sentence naming them in the answer."""
    made = []
    for n in range(max(0, total - len(real))):
        source = real[n % len(real)]
        place = f"{DISTRICTS[n % len(DISTRICTS)]}{STREETS[(n // len(DISTRICTS)) % len(STREETS)]}"
        serial = n // (len(DISTRICTS) * len(STREETS))
        made.append(
            replace(
                source,
                id=f"{source.id}~{n:05d}",
                question=f"{place}：{source.question}",
                answer=f"{source.answer}本条由{place}便民服务站第{serial + 1}期整理，办理地点以{place}公告为准。",
            )
        )
    return made


def ticket_text(rng: random.Random, queries: list[Query]) -> str:
    """A long, ticket-like text: a caller's filler around several queries."""
    parts: list[str] = []
    length = rng.randint(300, 900)
    while sum(len(part) for part in parts) < length:
        parts.append(rng.choice(FILLER) + rng.choice(queries).text + "。")
    return "".join(parts)


def family(entry_id: str) -> str:
    return entry_id.split("~", 1)[0]


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if options.entries < 300 or options.searches < 1:
        raise BenchError("--knowledge-entries must be at least 300 and --knowledge-searches at least 1")
    real = example_entries()
    queries = load_queries()
    with tempfile.TemporaryDirectory(prefix="hg-bench-knowledge-") as scratch:
        small = recall_on(Path(scratch) / "real.sqlite3", real, queries)
        progress(f"recall on the {len(real)} entries: {small['recall']:.3f}")
        scale = scale_run(Path(scratch) / "scale.sqlite3", real, queries, options)
    met_p99 = scale["latency_ms"]["all"]["p99"] <= TARGET_P99_MS
    met_recall = small["recall"] >= TARGET_RECALL
    return {
        "bench": NAME,
        **machine(),
        "queries": len(queries),
        "recall": small,
        "scale": scale,
        "targets": {
            "search_p99_ms": {"target": TARGET_P99_MS, "met": met_p99},
            "recall": {"target": TARGET_RECALL, "met": met_recall},
        },
        # Published only when no expired entry came back anywhere (targets are reported either way).
        "ok": not small["expired_returned"] and not scale["recall"]["expired_returned"],
    }


def recall_on(path: Path, entries: tuple[Entry, ...], queries: list[Query]) -> dict[str, Any]:
    with KnowledgeBase(path) as kb:
        kb.import_entries(entries, "knowledge.jsonl")
        result = top3_recall(queries, lambda text: [hit.id for hit in kb.search(text, TODAY, 3)])
    return {
        "answerable": result.answerable,
        "hits": result.hits,
        "recall": round(result.recall, 4),
        "misses": list(result.misses),
        "expired_returned": list(result.expired_returned),
    }


def scale_run(path: Path, real: tuple[Entry, ...], queries: list[Query], options: Options) -> dict[str, Any]:
    entries = [*real, *variants(real, options.entries)]
    with KnowledgeBase(path) as kb:
        started = time.perf_counter()
        kb.import_entries(entries, "bench.jsonl")
        import_s = time.perf_counter() - started
        progress(f"imported {len(entries):,} entries in {import_s:.1f} s")
        rng = random.Random(options.seed)
        texts = [(True, ticket_text(rng, queries)) if rng.random() < 0.1 else (False, rng.choice(queries).text)
                 for _ in range(options.searches)]  # fmt: skip
        for _, text in texts[:100]:  # warm the page cache and jieba
            kb.search(text, TODAY, 3)
        short: list[int] = []
        long: list[int] = []
        for is_long, text in texts:
            begin = time.perf_counter_ns()
            kb.search(text, TODAY, 3)
            (long if is_long else short).append(time.perf_counter_ns() - begin)
        every = short + long
        result = top3_recall(queries, lambda text: [family(hit.id) for hit in kb.search(text, TODAY, 3)])
    progress(f"{len(every)} searches: p99 {summary_ms(every)['p99']} ms")
    return {
        "entries": len(entries),
        "import_s": round(import_s, 2),
        "database_mb": round(path.stat().st_size / 1e6, 1),
        "searches": {"short": len(short), "long": len(long)},
        "long_chars_mean": round(statistics.mean(len(text) for is_long, text in texts if is_long), 0) if long else 0,
        "latency_ms": {
            "all": {**summary_ms(every), "mean": round(statistics.mean(every) / 1e6, 3)},
            "short": {**summary_ms(short), "mean": round(statistics.mean(short) / 1e6, 3) if short else 0.0},
            "long": {**summary_ms(long), "mean": round(statistics.mean(long) / 1e6, 3) if long else 0.0},
        },
        "recall": {
            "hits": result.hits,
            "answerable": result.answerable,
            "recall": round(result.recall, 4),
            "expired_returned": list(result.expired_returned),
        },
    }
