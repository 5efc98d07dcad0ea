"""The SMS benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import figure_table

NAMES = {"smpp": "SMPP 3.4", "cmpp": "CMPP 3.0"}


def _met(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:g} / {summary['p99']:g} / {summary['max']:g} ms"


def _rows(protocol: str, r: dict[str, Any], window: int) -> list[tuple[str, str, str, str]]:
    name, targets = NAMES[protocol], r["targets"]
    rate, p99 = targets["messages_per_s"], targets["reply_p99_ms"]
    return [
        (f"{name}: messages offered to a seat, window {window}", f"{r['sms']['per_s']:,.0f} messages/s",
         f"≥ {rate['target']:,} messages/s", _met(rate["met"])),
        (f"{name}: HTTP intake offered, same run (64 in flight)", f"{r['http']['per_s']:,.0f} tickets/s", "", ""),
        (f"**{name}: ratio SMS ÷ HTTP**", f"{r['ratio_vs_http']:.3f}", "", ""),
        (f"{name}: delivery → offer p50 / p99 / max", _ms(r["sms"]["latency_ms"]), "", ""),
        (f"{name}: delivery → the gateway's answer (after the durable write)", _ms(r["sms"]["answer_ms"]), "", ""),
        (f"{name}: reply round trip (seat `reply` → whole reply at the carrier)",
         _ms(r["replies"]["round_trip_ms"]), f"p99 ≤ {p99['target']:g} ms", _met(p99["met"])),
        (f"{name}: messages / tickets made / replies joined",
         f"{r['sms']['count']} / {r['sms']['tickets_for_messages']} / {r['replies']['count']}", "", ""),
    ]  # fmt: skip


def render(result: dict[str, Any]) -> str:
    rows = [row for p, r in result["protocols"].items() for row in _rows(p, r, result["windows"][p])]
    cpu = [
        f"- {NAMES[p]}: CPU % of one core, inbound phase: "
        + ", ".join(f"{k} {v:g}" for k, v in r["cpu_pct"]["sms"].items() if k != "wall_s")
        + f" (over {r['cpu_pct']['sms']['wall_s']:g} s); HTTP phase: "
        + ", ".join(f"{k} {v:g}" for k, v in r["cpu_pct"]["http"].items() if k != "wall_s")
        for p, r in result["protocols"].items()
    ]
    return "\n".join(
        [
            f"Measured {result['date']} on {result['nproc']} × {result['cpu']}, Python {result['python']}: "
            f"{result['messages']:,} messages from as many citizens, then {result['replies']} replies, "
            f"{result['agents']} seats accepting and submitting every offer; the carrier (the faithful SMSC "
            "or ISMG of `peers/`), the gateway, Redis, the seats and the HTTP load generator each in its own "
            f"process on this machine. `[channels.sms] send_rate = {result['send_rate']}` (the default, 100/s, "
            "paces a burst of replies to 100 per second).",
            "",
            *figure_table(rows),
            "",
            *cpu,
            "",
            "How it is measured: the carrier notes when each message's delivery goes out and when the gateway "
            "answers it (the session answers only after the durable write); the seats note when each offer "
            "arrives (the ticket names the citizen's number, one number per message); rates are messages over "
            "the span from the first delivery to the last offer. The HTTP figure is the same measure for posts "
            "(first POST to last offer), on the same stack just before. Replies: each seat sends `reply` for "
            "its ticket before submitting it, the messages go one at a time, and the carrier stamps each reply "
            "when its last part arrives; the reply names its ticket, which joins the two.",
            "",
            "How to run: `.venv/bin/python -m bench sms` (about a minute; `--sms-messages`, `--sms-replies`, "
            "`--sms-protocols smpp`).",
        ]
    )
