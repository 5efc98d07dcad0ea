"""The knowledge benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import figure_table


def _met(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:g} / {summary['p99']:g} / {summary['max']:g} ms (mean {summary['mean']:g})"


def render(result: dict[str, Any]) -> str:
    scale, recall, targets = result["scale"], result["recall"], result["targets"]
    latency = scale["latency_ms"]
    rows = [
        (f"search p50 / p99 / max, {scale['entries']:,} entries, all {sum(scale['searches'].values()):,} searches",
         _ms(latency["all"]), f"p99 ≤ {targets['search_p99_ms']['target']:g} ms",
         _met(targets["search_p99_ms"]["met"])),
        (f"short queries ({scale['searches']['short']:,})", _ms(latency["short"]), "", ""),
        (f"long ticket-like texts ({scale['searches']['long']:,}, {scale['long_chars_mean']:g} characters on average)",
         _ms(latency["long"]), "", ""),
        (f"**top-3 recall**, {recall['answerable']} answerable queries, the 300 example entries",
         f"{recall['recall']:.1%} ({recall['hits']}/{recall['answerable']})",
         f"≥ {targets['recall']['target']:.0%}", _met(targets["recall"]["met"])),
        (f"top-3 recall at {scale['entries']:,} entries (a variant of the expected entry counts; the top 3 are "
         "often three variants of one entry, so this is near top-1 recall)",
         f"{scale['recall']['recall']:.1%}", "", ""),
        ("expired entries returned (any query, both bases)",
         str(len(recall["expired_returned"]) + len(scale["recall"]["expired_returned"])), "0", ""),
        ("import of the 20,000 entries (segmenting included) / database size",
         f"{scale['import_s']:g} s / {scale['database_mb']:g} MB", "", ""),
    ]  # fmt: skip
    misses = "; ".join(recall["misses"]) or "none"
    return "\n".join(
        [
            f"Measured {result['date']} on {result['nproc']} × {result['cpu']}, Python {result['python']}: "
            f"`KnowledgeBase.search` (the call `GET /api/v1/knowledge/search` makes, in a thread) on SQLite FTS5 "
            f"over jieba words, bm25, at most 24 OR-ed terms, {result['queries']} paraphrased queries "
            "(`tests/knowledge/queries.tsv`).",
            "",
            *figure_table(rows),
            "",
            f"Missed queries (expected entry not in the top 3): {misses}.",
            "",
            "How it is measured: recall on a fresh base of the 300 example entries, searched on 2026-12-01 (after "
            "every expired entry's end). Scale: the 300 entries plus variants of them (the same text placed in "
            "one of the city's districts and streets, distinct text each) up to 20,000, one version; searches "
            "drawn at random from the query set, one in ten a long ticket-like text made of several queries "
            "and a caller's filler, each timed alone after 100 warm-up searches.",
            "",
            "How to run: `.venv/bin/python -m bench knowledge` (under a minute; `--knowledge-entries`, "
            "`--knowledge-searches`).",
        ]
    )
