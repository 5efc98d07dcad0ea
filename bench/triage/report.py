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
        (f"**consumer: tickets triaged per second** ({triaged['tickets']:,} stored tickets, one consumer, Redis; "
         f"merge buckets full: {stored['history']:,} possible 主单)",
         f"{triaged['per_s']:,.0f}/s", f"≥ {targets['tickets_per_s']['target']:,.0f}/s",
         _met(targets["tickets_per_s"]["met"])),
        ("consumer: one ticket's triage p50 / p99 / max (read, assess, merge lookup, amend in WATCH/MULTI; "
         "16 at a time)", _ms(triaged["latency_ms"]), f"p99 ≤ {targets['p99_ms']['target']:g} ms",
         _met(targets["p99_ms"]["met"])),
        ("consumer: from the batch's read (100 entries) to a ticket's amend", _ms(triaged["from_read_ms"]), "", ""),
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
    beside = result.get("intake")
    if beside:
        ratio = targets["intake_ratio"]
        rows += [
            (f"**intake with a triage process beside / alone** (bench/intake's throughput phase, {beside['tickets']:,} "
             "tickets each)", f"{beside['ratio']:.3f}", f"≥ {ratio['target']:g}", _met(ratio["met"])),
            ("intake alone / with triage beside", f"{beside['alone']:,.0f} / {beside['with_triage']:,.0f} tickets/s",
             "", ""),
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
            "2-4 character words. Assess: each call timed alone after 200 warm-up calls. Consumer: the tickets, "
            "half of them naming a street of the example gazetteer, stored through `TicketQueue.intake` on an "
            "embedded redis-server (AOF everysec); every category x street merge bucket filled to its "
            "`max_bucket` with stored possible 主单 (what any long history leaves: the search is bounded by "
            "them, not by the history); then read from `hg:created` by one consumer as the service does "
            "(`Triage.handle`, 100 entries per read), each ticket's `Triage.triage` timed; the baseline reads "
            "as many other entries with a second group and writes each ticket back unchanged through the "
            "same amend, one after another.",
            "",
            "Intake beside triage: bench/intake's throughput phase (HTTP posts, seats accepting and submitting) "
            "twice in this run, alone and with one `hotline-gateway triage` process beside the gateway "
            "(`[triage] in_core = false`); the same machine holds Redis, the gateway, the agents, the load "
            "and triage.",
            "",
            "How to run: `.venv/bin/python -m bench triage` (about a minute; `--triage-tickets`, `--triage-stored`, "
            "`--triage-words`).",
        ]
    )
