"""The console benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import figure_table


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:g} / {summary['p99']:g} / {summary['max']:g} ms"


def render(result: dict[str, Any]) -> str:
    target = result["targets"]["visible_p99_ms"]
    rows = [
        (f"**offer frame → ticket visible** p50 / p99 / max ({result['offers']} offers)", _ms(result["visible_ms"]),
         f"p99 ≤ {target['target']:g} ms", "**met**" if target["met"] else "**not met**"),
        ("baseline in the same run: frame arrival → the next paint with no work", _ms(result["next_paint_ms"]), "", ""),
        ("ratio of the medians (visible / next paint)", f"{result['ratio_p50']}", "", ""),
    ]  # fmt: skip
    wall = result["wall"]
    runs = wall["runs"]
    browser = result["targets"]["browser_cpu_share"]
    rows += [
        (f"**wallboard page's CPU** ({wall['agents']} agents, {wall['queues']} queues, {wall['rate']} events/s; "
         "all of Chromium's processes)", f"{runs['browser']['cpu_share']:.1%} of a core",
         f"< {browser['target']:.0%}", "**met**" if browser["met"] else "**not met**"),
        ("gateway's CPU with no supervisor watching (the baseline: intake counting, presence, the tick)",
         f"{runs['0']['gateway_cpu_share']:.1%} of a core at {runs['0']['events_per_s']:g} events/s", "", ""),
    ]  # fmt: skip
    for count, share in wall["per_supervisor_cpu_share"].items():
        run = runs[count]
        rows.append(
            (
                f"gateway's fan-out cost per supervisor, {count} supervisor(s) ({run['frames_per_s']:g} frames/s "
                f"read in all; {run['gateway_cpu_share']:.1%} of a core in all)",
                f"{share:.2%} of a core",
                "",
                "",
            )
        )
    return "\n".join(
        [
            f"Measured {result['date']} on {result['nproc']} × {result['cpu']}, Python {result['python']}: the seat "
            "page in Debian's chromium (headless, 1366x768) against a real gateway and redis-server.",
            "",
            *figure_table(rows),
            "",
            "How it is measured: a script Chromium runs before the page's own records when each `offer` frame "
            "reaches the page's websocket (the first message listener), and the first animation frame after the "
            "offer's ticket card is in the document (the frame that paints it); the baseline is the first "
            "animation frame after the arrival. Each ticket is posted to the HTTP intake, offered, shown, "
            "accepted (Alt+A) and submitted (Alt+S) before the next.",
            "",
            "Wallboard: a gateway with 200 agents and 50 queues, tickets stored into random queues at the "
            "rate from a thread of their own; the gateway's CPU is its event loop thread's (`/proc`); for 0, "
            "1, 10 and 50 supervisors' sockets (each its own login), the same load for the same time; the cost "
            "per supervisor is (CPU with N - CPU with none) / N. One supervisor's page in Chromium watches "
            "meanwhile for the browser's share (every Chromium process summed).",
            "",
            "How to run: `.venv/bin/python -m bench console` (about a minute; `--console-offers`).",
        ]
    )
