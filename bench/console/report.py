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
            "Not measured yet: the wallboard with 200 agents and 50 queues at 100 events/s (the browser's CPU, "
            "the gateway's fan-out cost for 1, 10 and 50 supervisors).",
            "",
            "How to run: `.venv/bin/python -m bench console` (about a minute; `--console-offers`).",
        ]
    )
