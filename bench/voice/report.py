"""The voice benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import DISTURBED_PCT, disturbed, load_section, met


def _ms(s: dict[str, float]) -> str:
    return f"{s['p50']:g} / {s['p99']:g} / {s['max']:g} ms"


def _ratio(value: float | None) -> str:
    return f"{value:g}×" if value else "–"


def _figure_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    t, w, f, rec, calls = r["targets"], r["worker"], r["frames"], r["recordings"], r["calls"]
    base = r["baseline"]
    n = calls["planned"]
    return [
        ("Calls placed / failed", f"{n} / {calls['failed']}", "0 failed", met(t["failed_calls"]["met"])),
        (f"INVITE → first greeting audio from the worker, p50 / p99 / max ({r['first_prompt_ms']['n']} calls)",
         _ms(r["first_prompt_ms"]), f"≤ {t['first_prompt_ms']['target']:g} ms", met(t["first_prompt_ms"]["met"])),
        ("Live-audio frame gap p99, worst call (median call)",
         f"{f['gap_p99_ms']:g} ms ({f['gap_p99_median_call_ms']:g} ms)",
         f"≤ {t['frame_gap_p99_ms']['target']:g} ms", met(t["frame_gap_p99_ms"]["met"])),
        ("Recordings complete and non-silent",
         f"{min(rec['complete'], rec['non_silent'])} of {n} (length − answer-to-BYE: "
         f"{rec['diff_s_min']:+.2f} … {rec['diff_s_max']:+.2f} s; RMS ≥ {rec['rms_min']:g})",
         f"{n} of {n}", met(rec["complete"] == rec["non_silent"] == n)),
        ("Digit 0 → hold prompt audio from the worker, p50 / p99 / max", _ms(r["digit_to_hold_ms"]), "", ""),
        ("Digit 0 → ticket in its queue (Redis stream entry), p50 / p99 / max", _ms(r["digit_to_queued_ms"]), "", ""),
        ("INVITE → 200 OK, p50 / p99 / max", _ms(r["answer_ms"]), "", ""),
        ("Live-audio frame gap p50 (median call) / max (any call)",
         f"{f['gap_p50_ms']:g} / {f['gap_max_ms']:g} ms", "", ""),
        ("Worker RTP send gap between consecutive frames, p50 / p99 / max", _ms(r["send_gap_ms"]), "", ""),
        (f"… counting only the seconds when the rest of the machine used < {DISTURBED_PCT:g} % of one core "
         f"({100 * r.get('quiet', {}).get('share', 0):.0f} % of the run)", _quiet(r), "", ""),
        ("Send-clock stalls (consecutive frames > 40 ms apart; worst, with the rest of the machine's CPU then)",
         _stalls(r), "", ""),
        ("Worker CPU per leg (load − idle, ÷ live legs)", f"{w['cpu_per_leg_pct']:g} % of one core", "", ""),
        ("Worker RSS per leg (load − idle, ÷ live legs)", f"{w['rss_per_leg_mib']:g} MiB", "", ""),
        ("Baseline: SIPp trivial UAS / SIPp UAC CPU per leg",
         f"{base['uas_cpu_per_leg_pct']:g} % / {base['uac_cpu_per_leg_pct']:g} %", "", ""),
        ("**Worker CPU per leg ÷ SIPp UAS per leg / ÷ SIPp UAC per leg**",
         f"{_ratio(base['worker_vs_uas'])} / {_ratio(base['worker_vs_uac'])}", "", ""),
    ]  # fmt: skip


def _stalls(r: dict[str, Any]) -> str:
    found = r.get("stalls", {"count": 0, "worst": []})
    worst = [
        f"{e['gap_ms']:g} ms at {e['at_s']:g} s ({e['others_pct']:g} %)"
        for e in found["worst"][:3]
        if e["others_pct"] is not None
    ]
    return f"{found['count']}" + (f": {'; '.join(worst)}" if worst else "")


def render(result: dict[str, Any]) -> str:
    """The markdown section of docs/benchmarks.md for one voice result."""
    return load_section(result, _intro, _figure_rows, _disturbance, _cost_table, _method, _checks, _how_to_run)


def _intro(r: dict[str, Any]) -> list[str]:
    calls = r["calls"]
    return [
        f"Measured {r['date']} on {r['nproc']} × {r['cpu']}, Python {r['python']}, SIPp {r['sipp_version']}, "
        f"redis-server {r['redis_version']}, the pjsua2 wheel (PJSIP 2.15.1), gateway at {r.get('source', '?')}. "
        "One `hotline-gateway media-worker` "
        f"(calls_per_worker = {r['calls_per_worker']}, so 2 callers) with the shipped flow `config/flows/12345.toml`, "
        "its prompts rendered by espeak-ng at the production rate; no core and no agents.",
        "",
        f"- **Load**: SIPp (`-l 2 -r 1`) placed {calls['planned']} calls of {r['call_seconds']:g} s, each new one as "
        f"soon as one ended, for {r['window_s']:g} s: on average {r['live_legs']:g} calls were up. Each call sends "
        "speech for its whole length (g711a.pcap's PCMA looped into one RTP stream) and presses 0 (RFC 4733, same "
        f"stream) {r['digit_at_s']:g} s after the ACK, two seconds into the main menu; the worker queues the "
        "ticket and loops the hold prompt until SIPp hangs up. The worker records each call and hands every "
        "20 ms frame to its live-audio port. Idle figures: the worker with no call, "
        f"{_idle(r)}.",
        f"- **Speech**: the worker runs with the shipped `config/gateway.toml`'s `[asr]` ({_asr(r)}); {_processes(r)}",
        "- **Baseline**: the same SIPp UAC and scenario against SIPp's trivial UAS "
        f"(`peers/sipp/uas_trivial.xml`), {r['baseline']['calls']['planned']} calls, after the worker stopped: "
        "what the peer costs per call on this machine.",
    ]


def _idle(r: dict[str, Any]) -> str:
    before, after = r["worker"].get("idle_cpu_before_after_pct", [None, None])
    if after is None:
        return "measured before the calls"
    return f"measured before and after the calls and averaged ({before:g} % and {after:g} % CPU)"


def _quiet(r: dict[str, Any]) -> str:
    quiet = r.get("quiet", {"share": 0.0, "send_gap_ms": {"n": 0}})
    return _ms(quiet["send_gap_ms"]) if quiet["send_gap_ms"]["n"] else "no such second in this run"


def _asr(r: dict[str, Any]) -> str:
    flat: list[str] = []
    for key, value in r.get("asr", {}).items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        flat += [f"{key}{'.' + sub if sub else ''} = {v}" for sub, v in items]
    return ", ".join(f"`{item}`" for item in flat) or "defaults"


def _processes(r: dict[str, Any]) -> str:
    children = r["worker"].get("children", {})
    if not children:
        return "it started no process of its own."
    sizes = ", ".join(f"{c['rss_mib']:g} MiB" for c in children.values())
    return (
        f"it started {len(children)} process(es) of its own (its ASR pool; RSS {sizes}), counted with it below. "
        f"It logged: {'; '.join(r.get('worker_warnings', [])) or 'nothing at WARNING or above'}."
    )


def _disturbance(r: dict[str, Any]) -> list[str]:
    other = r.get("load_cpu_pct", {}).get("other", 0.0)
    return disturbed(
        other,
        f"**This run was disturbed**: other processes on the machine used {other:g} % of one core during the "
        "load (`everything else` below), so latencies and gaps may be worse than the worker alone would show.",
    )


def _cost_table(r: dict[str, Any]) -> list[str]:
    w, base, load = r["worker"], r["baseline"], r.get("load_cpu_pct", {})
    tree = f" ({w['processes']} processes)" if w.get("processes", 1) > 1 else ""
    return [
        f"CPU (% of one core; the machine has {r['nproc'] * 100} %) and RSS, sampled every second from `/proc`:",
        "",
        "| Process | idle | under load | peak (1 s) | per leg |",
        "|---|---|---|---|---|",
        f"| media worker CPU{tree} | {w['idle_cpu_pct']:g} % | {w['cpu_pct']:g} % | {w['cpu_peak_pct']:g} % "
        f"| {w['cpu_per_leg_pct']:g} % |",
        f"| media worker RSS{tree} | {w['idle_rss_mib']:g} MiB | {w['rss_mib']:g} MiB | {w['rss_peak_mib']:g} MiB "
        f"| {w['rss_per_leg_mib']:g} MiB (growth over the run: {w['rss_growth_mib']:+g} MiB) |",
        *(
            f"| … of which `{name.split('/')[0]}` (pid {name.split('/')[-1]}, started by the worker) | "
            f"| {child['cpu_pct']:g} %, {child['rss_mib']:g} MiB | | |"
            for name, child in w.get("children", {}).items()
        ),
        f"| SIPp UAC (load) | | {r['sipp_uac_cpu_pct']:g} % | | |",
        f"| redis-server (load) | | {load.get('redis', 0):g} % | | |",
        f"| this benchmark: orchestration + packet capture (load) | | {load.get('bench', 0):g} % | | |",
        f"| everything else on the machine (load) | | {load.get('other', 0):g} % | | |",
        f"| SIPp trivial UAS (baseline, {base['live_legs']:g} legs) | | {base['uas_cpu_pct']:g} % | "
        f"| {base['uas_cpu_per_leg_pct']:g} % |",
        f"| SIPp UAC (baseline) | | {base['uac_cpu_pct']:g} % | | {base['uac_cpu_per_leg_pct']:g} % |",
    ]


def _method(r: dict[str, Any]) -> list[str]:
    return [
        "How the times are taken: a packet capture on `lo` (AF_PACKET, kernel timestamps) sees SIP and RTP "
        "both ways. *First greeting audio* is when the packet carrying the greeting's first frame left the "
        "worker: the worker's PCMA payloads are decoded and matched, frame by frame, against the greeting WAV. "
        "*Digit → hold* is from the digit's first RFC 4733 packet to the hold prompt's first frame, found the "
        "same way; *digit → queue* uses the ticket's stream entry id (Redis's clock, ms). The *live-audio frame "
        "gap* is the worker's own measure (`hg:voice:frames`, per call: the gap between consecutive 20 ms frames "
        "on PJSIP's bridge thread); the worst call's p99 bounds the p99 over all frames. The *RTP send gap* is "
        "the same clock seen from outside. Recording length is compared with answer-to-BYE on the wire.",
    ]


def _checks(r: dict[str, Any]) -> str:
    f, cap = r["frames"], r["capture"]
    verdict = "yes" if r["ok"] else "**NO**: " + "; ".join(r["problems"])
    return (
        f"Every call answered, queued by its digit, recorded and measured: {verdict} "
        f"(tickets {r['calls']['tickets']}, queued by the digit {r['calls']['queued_by_digit']}; "
        f"live-audio frames {f['frames']:,} of {f['expected']:,} expected; capture drops {cap['dropped']}; "
        f"worker exit status on SIGTERM {r['worker_exit']}). Frames the live-audio ring dropped: "
        f"{f['dropped']:,}: a frame is dropped when no consumer took it before the ring filled, so on calls "
        "with no speech recognition running every frame past the ring's size counts, and it is no loss."
    )


def _how_to_run(_result: dict[str, Any]) -> str:
    return (
        "Run: `sudo .venv/bin/python -m bench voice` (root or CAP_NET_RAW: SIPp's pcap playback and the "
        "capture use raw sockets; needs `sip-tester`, `espeak-ng`, `sox`, `redis-server`). "
        "`--voice-seconds 30` for a quick run (default 300), `--voice-call-seconds` for the call length "
        "(default 25), `--voice-raw FILE` saves every call's measurements."
    )
