"""The intake benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import figure_table

PROCESSES = ("gateway", "redis", "agents", "loadgen", "other")
DISTURBED_PCT = 30.0  # CPU used by unrelated processes above which a run's figures are suspect


def _met(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:g} / {summary['p99']:g} / {summary['max']:g} ms"


def _redis_cost(r: dict[str, Any]) -> str:
    scripts = f"{r['redis_script_usec_per_ticket'] / 1000:.2f} ms ({r['redis_scripts_per_ticket']:g} scripts)"
    return f"{r['redis_cpu_ms_per_ticket']:.2f} ms / {scripts}"


def _figure_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    targets = r["targets"]
    throughput, p99 = targets["tickets_per_s"], targets["offer_p99_ms"]
    at_rate = f"at {r['rate']} tickets/s"
    return [
        ("Tickets fully submitted (phase 1)", f"{r['tickets_per_s']:,.0f} tickets/s",
         f"≥ {throughput['target']:,} tickets/s sustained", _met(throughput["met"])),
        ("Tickets posted and offered to a seat (phase 1)", f"{r.get('offered_per_s', 0):,.0f} tickets/s", "", ""),
        ("Tickets accepted, HTTP 202 (phase 1)", f"{r['accepted_per_s']:,.0f} tickets/s", "", ""),
        (f"Post-to-offer latency p50 / p99 / max {at_rate}", _ms(r["offer_latency_ms"]),
         f"p99 ≤ {p99['target']:g} ms", _met(p99["met"])),
        (f"202 latency p50 / p99 / max {at_rate}", _ms(r["accept_latency_ms"]), "", ""),
        ("Lost tickets / duplicated offers", f"{r['lost']} / {r['duplicated_offers']}", "0 / 0",
         _met(r["lost"] == 0 and r["duplicated_offers"] == 0)),
        ("HTTP 503 answers (retried by the client) / seat retries",
         f"{r['http_503_retried']} / {r['seat_retries']}", "0 / 0",
         _met(r["http_503_retried"] == 0 and r["seat_retries"] == 0)),
        ("Baseline: redis-benchmark XADD, same redis-server (median of runs)",
         f"{r['xadd_per_s']:,.0f} XADD/s ({', '.join(f'{x:,.0f}' for x in r['xadd_runs'])})", "", ""),
        ("**Ratio tickets/s ÷ XADD/s**", f"{r['ratio_vs_xadd']:.4f}", "", ""),
        ("Gateway CPU per ticket (phase 1)", f"{r['gateway_cpu_ms_per_ticket']:.2f} ms", "", ""),
        ("Redis CPU per ticket (phase 1) / in Lua scripts", _redis_cost(r), "", ""),
    ]  # fmt: skip


def render(result: dict[str, Any]) -> str:
    """The markdown section of docs/benchmarks.md for one intake result."""
    table = figure_table(_figure_rows(result))
    parts = [*_intro(result), "", *table, "", *_disturbance(result), *_cpu_table(result), "", _checks(result)]
    return "\n".join([*parts, "", _profiling_hint()])


def _intro(r: dict[str, Any]) -> list[str]:
    return [
        f"Measured {r['date']} on {r['nproc']} × {r['cpu']}, Python {r['python']}, "
        f"redis-server {r['redis_version']} (AOF, appendfsync everysec). One gateway process; "
        f"{r['agents']} agent seats (one process) accept and submit every offer at once; "
        "one load-generator process posts.",
        "",
        f"- **Phase 1, throughput**: {r['tickets']:,} tickets posted, {r['concurrency']} requests in flight. "
        "Tickets/s counts from the first POST until the last ticket is submitted "
        "(in the `submitted` stream).",
        f"- **Phase 2, latency**: {r['rate']} tickets/s for {r['seconds']:g} s, paced by schedule "
        f"(achieved {r['achieved_rate']:,.0f}/s; sends at most {r['max_send_lag_ms']:g} ms late). "
        "Post-to-offer = the seat's offer receive time minus the POST send time, joined by ticket id.",
        "- **Baseline**: ratios against a baseline measured in the same run: "
        "`redis-benchmark -n 100000 -c 50 -P 1 XADD bench:baseline '*' f v` on the same redis-server and "
        "machine, after the gateway stopped (three runs, median). The ratio says what share of Redis's "
        "bare append rate the whole intake path reaches; it travels between machines better than the "
        "absolute figures do.",
    ]


def _disturbance(r: dict[str, Any]) -> list[str]:
    worst = max(phase.get("other", 0.0) for phase in r["cpu_pct"].values())
    if worst < DISTURBED_PCT:
        return []
    return [
        f"**This run was disturbed**: other processes on the machine used up to {worst:g} % of one core "
        "meanwhile (see `other` below), so the absolute figures are low; the ratio against the baseline, "
        "measured in the same run under similar conditions, is the better figure to compare.",
        "",
    ]


def _cpu_table(r: dict[str, Any]) -> list[str]:
    cpu: dict[str, dict[str, float]] = r["cpu_pct"]
    lines = [
        f"CPU use per process, % of one core (the machine has {r['nproc'] * 100} %; `other` is everything "
        "else on the machine, this benchmark's orchestrator included: when it is high, "
        "the run was disturbed):",
        "",
        "| Phase | seconds | " + " | ".join(PROCESSES) + " |",
        "|---" * (len(PROCESSES) + 2) + "|",
    ]
    for phase in ("throughput", "latency"):
        values = cpu[phase]
        row = " | ".join(f"{values.get(name, 0):g}" for name in PROCESSES)
        lines.append(f"| {phase} | {values['wall_s']:g} | {row} |")
    return lines


def _checks(r: dict[str, Any]) -> str:
    verdict = "yes" if r["ok"] else "**NO**"
    return (
        f"Every accepted ticket offered exactly once and submitted: {verdict} "
        f"(failed posts {r['failed_posts']}, never offered {r['never_offered']}, "
        f"seat errors {r['seat_errors']}, revoked offers {r['offers_revoked']}, "
        f"`submitted` stream {r['submitted_in_stream']:,} of {r['expected_in_stream']:,})."
    )


def _profiling_hint() -> str:
    return (
        "Where the gateway spends its time: `.venv/bin/python -m bench intake --no-doc --profile gw.txt` "
        "samples it with py-spy (`.venv/bin/pip install py-spy`) during both phases and writes collapsed "
        "stacks; `--profile gw.prof` runs it under cProfile instead (slower, exact call counts); "
        "`--raw FILE` keeps every measurement."
    )
