"""The triage benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import figure_table


def _met(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:g} / {summary['p99']:g} / {summary['max']:g} ms"


def render(result: dict[str, Any]) -> str:
    pure, stored, scores, targets = result["assess"], result["consumer"], result["accuracy"], result["targets"]
    triaged, baseline = stored["triage"], stored["baseline"]
    rows = [
        (f"**consumer: tickets triaged per second** ({triaged['tickets']:,} stored tickets, one consumer, Redis)",
         f"{triaged['per_s']:,.0f}/s", f"≥ {targets['tickets_per_s']['target']:,.0f}/s",
         _met(targets["tickets_per_s"]["met"])),
        ("consumer: one ticket's triage p50 / p99 / max (read, assess, amend in WATCH/MULTI)",
         _ms(triaged["latency_ms"]), f"p99 ≤ {targets['p99_ms']['target']:g} ms", _met(targets["p99_ms"]["met"])),
        ("baseline in the same run: read, the ticket written back unchanged, acknowledged",
         f"{baseline['per_s']:,.0f}/s", "", ""),
        ("ratio triaged / baseline", f"{stored['ratio']:.3f}", "", ""),
        (f"assess alone (pure, one core): tickets per second, {pure['tickets']:,} tickets of "
         f"{pure['mean_chars']:g} characters on average, {pure['alerted']:,} with alerts",
         f"{pure['per_s']:,.0f}/s", "", ""),
        ("assess alone: one call p50 / p99 / max", _ms(pure["latency_ms"]), "", ""),
        (f"sensitive-word library: {result['words']:,} words, automaton built in", f"{result['matcher_build_s']:g} s",
         "", ""),
        (f"**dispatch suggestion top-3** on the held-out fifth ({scores['held_out']} contacts)",
         f"{scores['top3']:.1%}", f"≥ {targets['top3']['target']:.0%}", _met(targets["top3"]["met"])),
        ("dispatch suggestion top-1 on the held-out fifth", f"{scores['top1']:.1%}", "", ""),
    ]  # fmt: skip
    return "\n".join(
        [
            f"Measured {result['date']} on {result['nproc']} × {result['cpu']}, Python {result['python']}: the "
            "triage consumer's work per ticket (gateway/triage/assess.py: dispatch suggestion, sensitive words, "
            "flags and priority, deadline clocks; gateway/triage/service.py: the amend).",
            "",
            *figure_table(rows),
            "",
            "How it is measured: the labelled contacts (gateway/triage/data/labelled.tsv) as tickets, one in ten "
            "a long rambling text of 3-8 of them; a sensitive-word library of the shipped words and generated "
            "2-4 character words. Assess: each call timed alone after 200 warm-up calls. Consumer: the tickets "
            "stored through `TicketQueue.intake` on an embedded redis-server (AOF everysec), then read from "
            "`hg:created` by one consumer, 100 entries per read, each ticket's `Triage.triage` timed; the "
            "baseline reads as many other entries with a second group and writes each ticket back unchanged "
            "through the same amend.",
            "",
            "Not measured yet: merge-candidate search against a history of 300,000 tickets (主单+子单), and "
            "intake throughput with triage beside it (triage runs in the gateway's own process today).",
            "",
            "How to run: `.venv/bin/python -m bench triage` (about a minute; `--triage-tickets`, `--triage-stored`, "
            "`--triage-words`).",
        ]
    )
