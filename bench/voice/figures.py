"""The voice benchmark's options, and its figures computed from what it measured (no I/O)."""

from __future__ import annotations

import argparse
import bisect
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.stats import machine, percentile
from bench.voice.calls import Call
from bench.voice.meter import Series
from peers.sip import SippResult

TARGET_GAP_P99_MS = 30.0
TARGET_FIRST_PROMPT_MS = 150.0
RECORDING_SLACK_S = 0.25  # a recording may differ this much from answer-to-BYE
DISTURBED_PCT = 30.0  # CPU used by the rest of the machine above which a second counts as disturbed
MIN_RMS = 0.01  # the caller's speech recorded at about 0.05; silence is 0
FRAME_MS = 20


@dataclass(frozen=True)
class Options:
    seconds: float = 300.0
    call_seconds: float = 25.0
    idle_seconds: float = 5.0
    raw_out: Path | None = None

    @property
    def calls(self) -> int:
        """Two at a time, back to back, for about `seconds`."""
        return 2 * max(1, round(self.seconds / self.call_seconds))

    @property
    def baseline_calls(self) -> int:
        return min(self.calls, 4)

    @property
    def load_timeout(self) -> float:
        return self.calls / 2 * (self.call_seconds + 5) + 60

    @property
    def baseline_timeout(self) -> float:
        return self.baseline_calls / 2 * (self.call_seconds + 5) + 60

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(seconds=args.voice_seconds, call_seconds=args.voice_call_seconds, raw_out=args.voice_raw)


@dataclass
class Raw:
    """Everything measured, before it is turned into figures."""

    digit_at: float
    greeting_s: float
    sipp_version: str
    source: str
    redis_version: str = ""
    idle: dict[str, Series] = field(default_factory=dict)  # before the calls
    idle_after: dict[str, Series] = field(default_factory=dict)  # after them, before the worker stops
    load: dict[str, Series] = field(default_factory=dict)
    load_machine: Series = field(default_factory=Series)  # the whole machine, sampled with them
    load_start_ns: int = 0
    load_end_ns: int = 0
    load_sipp: SippResult | None = None
    load_machine_busy_s: float = 0.0  # the whole machine, all CPUs
    load_self_cpu_s: float = 0.0  # this process: orchestration and the packet capture
    calls: list[Call] = field(default_factory=list)
    capture_received: int = 0
    capture_dropped: int = 0
    worker_exit: int | None = None
    worker_warnings: list[str] = field(default_factory=list)
    asr: dict[str, Any] = field(default_factory=dict)  # the [asr] settings the worker ran with
    baseline: dict[str, Series] = field(default_factory=dict)
    baseline_start_ns: int = 0
    baseline_end_ns: int = 0
    baseline_sipp: SippResult | None = None
    baseline_uas: SippResult | None = None


def summary(values: Sequence[float | None]) -> dict[str, float]:
    """p50 / p99 / max (nearest rank; with fewer than 100 values the p99 is the max) and the count."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 0.5), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
    }


def live_legs(calls: Sequence[Call], start_ns: int, end_ns: int) -> float:
    """Average number of calls up (INVITE to BYE) during the window."""
    if end_ns <= start_ns:
        return 0.0
    up = sum(max(0, min(c.bye_ns or end_ns, end_ns) - max(c.invite_ns, start_ns)) for c in calls if c.answer_ns)
    return round(up / (end_ns - start_ns), 3)


def _mib(values: Sequence[int]) -> float:
    return round(statistics.fmean(values) / 1024, 1) if values else 0.0


def _tree(series: dict[str, Series], root: str) -> dict[str, Series]:
    return {name: one for name, one in series.items() if name == root or name.startswith(root + "/")}


def _tree_rss(tree: dict[str, Series], start: int, end: int) -> list[int]:
    """RSS of the whole tree (KiB) at each sampling time inside the window."""
    total: dict[int, int] = {}
    for one in tree.values():
        for at, rss in zip(one.at_ns, one.rss_kib, strict=True):
            if start <= at <= end:
                total[at] = total.get(at, 0) + rss
    return [total[at] for at in sorted(total)]


def worker_cost(raw: Raw, legs: float) -> dict[str, Any]:
    """CPU (% of one core) and RSS (MiB) of the worker and the processes it started (ASR): idle,
    under load, and per leg ((load - idle) / live legs)."""
    tree, idle_tree = _tree(raw.load, "worker"), _tree(raw.idle, "worker")
    main = tree["worker"]
    start, end = main.window(raw.load_start_ns, raw.load_end_ns)
    cpu = sum(one.cpu_pct(start, end) for one in tree.values())
    # Idle before and after the calls, averaged: one short idle sample is noisy on a shared machine.
    idle_before = sum(one.cpu_pct() for one in idle_tree.values())
    idle_after = sum(one.cpu_pct() for one in _tree(raw.idle_after, "worker").values()) if raw.idle_after else None
    idle_cpu = idle_before if idle_after is None else (idle_before + idle_after) / 2
    rss = _tree_rss(tree, start, end)
    idle_rss = _mib(_tree_rss(idle_tree, 0, 2**63))
    load_rss = _mib(rss)
    tenth = max(1, len(rss) // 10)
    children = {
        name.split("/", 1)[1]: {
            "cpu_pct": round(one.cpu_pct(start, end), 2),
            "rss_mib": _mib([r for at, r in zip(one.at_ns, one.rss_kib, strict=True) if start <= at <= end]),
        }
        for name, one in tree.items()
        if name != "worker"
    }
    return {
        "processes": 1 + len(children),
        "idle_cpu_pct": round(idle_cpu, 2),
        "idle_cpu_before_after_pct": [round(idle_before, 2), round(idle_after, 2) if idle_after is not None else None],
        "cpu_pct": round(cpu, 2),
        "main_cpu_pct": round(main.cpu_pct(start, end), 2),
        "cpu_peak_pct": round(max(main.per_second_pct(start, end), default=0.0), 1),
        "cpu_per_leg_pct": round((cpu - idle_cpu) / legs, 2) if legs else 0.0,
        "idle_rss_mib": idle_rss,
        "rss_mib": load_rss,
        "rss_peak_mib": round(max(rss, default=0) / 1024, 1),
        "rss_per_leg_mib": round((load_rss - idle_rss) / legs, 2) if legs else 0.0,
        "rss_growth_mib": round((statistics.fmean(rss[-tenth:]) - statistics.fmean(rss[:tenth])) / 1024, 2)
        if rss
        else 0.0,
        "children": children,
    }


def load_cpu(raw: Raw, start: int, end: int) -> dict[str, float]:
    """Each process's CPU (% of one core) during the load, this bench's own, and `other`: the rest of
    the machine (when it is high, something else ran meanwhile and the run was disturbed)."""
    wall = (raw.load_end_ns - raw.load_start_ns) / 1e9
    used = {name.split("/")[0]: 0.0 for name in raw.load}
    for name, series in raw.load.items():
        used[name.split("/")[0]] += series.cpu_pct(start, end)  # the worker with its ASR processes
    used["bench"] = 100 * raw.load_self_cpu_s / wall if wall > 0 else 0.0
    machine_pct = 100 * raw.load_machine_busy_s / wall if wall > 0 else 0.0
    used["other"] = max(0.0, machine_pct - sum(used.values()))
    return {name: round(value, 2) for name, value in used.items()}


def sipp_calls(result: SippResult | None, planned: int) -> dict[str, Any]:
    if result is None:
        return {"planned": planned, "successful": 0, "failed": planned, "statuses": {}, "retransmissions": 0}
    return {
        "planned": planned,
        "successful": result.successful,
        "failed": planned - result.successful,
        "sipp_failed": result.failed,
        "failure_reasons": dict(result.failure_reasons),
        "statuses": {str(code): n for code, n in sorted(result.statuses.items())},
        "retransmissions": result.retransmissions,
    }


def baseline(raw: Raw, options: Options, worker_per_leg: float) -> dict[str, Any]:
    start, end = raw.baseline_start_ns, raw.baseline_end_ns
    done = raw.baseline_sipp.successful if raw.baseline_sipp else 0
    legs = round(done * options.call_seconds * 1e9 / (end - start), 3) if end > start else 0.0
    cpu = {name: series.cpu_pct(start, end) for name, series in raw.baseline.items()}
    per_leg = {name: value / legs if legs else 0.0 for name, value in cpu.items()}
    uas, uac = per_leg.get("sipp_uas", 0.0), per_leg.get("sipp_uac", 0.0)
    return {
        "calls": sipp_calls(raw.baseline_sipp, options.baseline_calls),
        "window_s": round((end - start) / 1e9, 1),
        "live_legs": legs,
        "uas_cpu_pct": round(cpu.get("sipp_uas", 0.0), 2),
        "uac_cpu_pct": round(cpu.get("sipp_uac", 0.0), 2),
        "uas_cpu_per_leg_pct": round(uas, 3),
        "uac_cpu_per_leg_pct": round(uac, 3),
        "worker_vs_uas": round(worker_per_leg / uas, 1) if uas else None,
        "worker_vs_uac": round(worker_per_leg / uac, 1) if uac else None,
    }


def recordings(calls: Sequence[Call]) -> dict[str, Any]:
    answered = [c for c in calls if c.answer_ns]
    diffs = [c.recording_s - c.media_s for c in answered if c.recording]
    complete = [c for c in answered if c.recording and abs(c.recording_s - c.media_s) <= RECORDING_SLACK_S]
    return {
        "count": sum(1 for c in answered if c.recording),
        "complete": len(complete),
        "non_silent": sum(1 for c in answered if c.recording and c.recording_rms >= MIN_RMS),
        "diff_s_min": round(min(diffs), 3) if diffs else 0.0,
        "diff_s_max": round(max(diffs), 3) if diffs else 0.0,
        "rms_min": min((c.recording_rms for c in answered if c.recording), default=0.0),
        "seconds_total": round(sum(c.recording_s for c in answered), 1),
    }


def frames(calls: Sequence[Call]) -> dict[str, Any]:
    measured = [c for c in calls if c.frames]
    return {
        "calls": len(measured),
        "frames": sum(c.frames for c in measured),
        "expected": round(sum(c.media_s * 1000 / FRAME_MS for c in measured)),
        "dropped": sum(c.dropped for c in measured),
        "gap_p50_ms": round(statistics.median([c.gap_p50_ms for c in measured]), 2) if measured else 0.0,
        "gap_p99_ms": max((c.gap_p99_ms for c in measured), default=0.0),  # the worst call's
        "gap_p99_median_call_ms": round(statistics.median([c.gap_p99_ms for c in measured]), 2) if measured else 0.0,
        "gap_max_ms": max((c.gap_max_ms for c in measured), default=0.0),
    }


def quiet(raw: Raw) -> dict[str, Any]:
    """The send gaps again, counting only the seconds when the rest of the machine was quiet (it used
    less than DISTURBED_PCT of one core): what the worker does when it is not starved of CPU."""
    times, machine = raw.load_machine.at_ns, raw.load_machine.cpu_s
    calm: list[tuple[int, int]] = []
    for i in range(1, len(times)):
        wall = (times[i] - times[i - 1]) / 1e9
        if wall <= 0:
            continue
        ours = sum(
            one.cpu_s[one.at_ns.index(times[i])] - one.cpu_s[one.at_ns.index(times[i - 1])]
            for one in raw.load.values()
            if times[i] in one.at_ns and times[i - 1] in one.at_ns
        )
        if 100 * (machine[i] - machine[i - 1] - ours) / wall < DISTURBED_PCT:
            calm.append((times[i - 1], times[i]))
    starts = [start for start, _ in calm]

    def is_calm(at: int) -> bool:
        index = bisect.bisect_right(starts, at) - 1
        return index >= 0 and at <= calm[index][1]

    window = (times[-1] - times[0]) / 1e9 if len(times) > 1 else 0.0
    calm_s = sum(end - start for start, end in calm) / 1e9
    return {
        "share": round(calm_s / window, 3) if window else 0.0,
        "send_gap_ms": summary([gap for call in raw.calls for at, gap in call.send_gaps if is_calm(at)]),
    }


def stalls(raw: Raw, limit: int = 10) -> dict[str, Any]:
    """Moments the worker's send clock stalled (a gap > STALL_MS between consecutive RTP frames),
    merged across calls (one bridge clock drives every call), with what the rest of the machine
    used in that second: the evidence for telling the worker's own stalls from a disturbed run."""
    events = sorted((at, gap) for call in raw.calls for at, gap in call.stalls)
    merged: list[list[float]] = []
    for at, gap in events:
        if merged and at - merged[-1][0] < 100_000_000:
            merged[-1][1] = max(merged[-1][1], gap)
            merged[-1][2] += 1
        else:
            merged.append([at, gap, 1])
    found = []
    for when, worst, calls in sorted(merged, key=lambda event: -event[1])[:limit]:
        machine = raw.load_machine.pct_at(int(when))
        ours = sum(one.pct_at(int(when)) or 0.0 for one in raw.load.values())
        found.append(
            {
                "at_s": round((when - raw.load_start_ns) / 1e9, 1),
                "gap_ms": worst,
                "calls": int(calls),
                "machine_pct": round(machine, 1) if machine is not None else None,
                "others_pct": round(max(0.0, machine - ours), 1) if machine is not None else None,
            }
        )
    return {"count": len(merged), "worst": found}


def problems(raw: Raw, result: dict[str, Any]) -> list[str]:
    """What makes the run invalid (its figures are not published): each problem, said once."""
    found = []
    calls, answered = result["calls"], [c for c in raw.calls if c.answer_ns]
    if calls["failed"]:
        found.append(f"{calls['failed']} failed call(s): {calls['failure_reasons']} statuses {calls['statuses']}")
    if len(answered) != calls["planned"]:
        found.append(f"{len(answered)} calls answered in the capture, {calls['planned']} planned")
    missing = {
        "ticket": [c for c in answered if not c.ticket],
        "first prompt": [c for c in answered if c.first_prompt_ms is None],
        "digit-to-hold": [c for c in answered if c.digit_to_hold_ms is None],
        "frame stats": [c for c in answered if not c.frames],
    }
    found += [f"{len(lacking)} call(s) without {what}" for what, lacking in missing.items() if lacking]
    rec = result["recordings"]
    if rec["complete"] != len(answered) or rec["non_silent"] != len(answered):
        found.append(f"recordings: {rec['complete']} complete, {rec['non_silent']} non-silent of {len(answered)}")
    if raw.worker_exit != 0:
        found.append(f"the worker exited with status {raw.worker_exit} on SIGTERM")
    base = result["baseline"]["calls"]
    if base["failed"]:
        found.append(f"baseline: {base['failed']} failed call(s)")
    return found


def figures(options: Options, raw: Raw) -> dict[str, Any]:
    # The CPU figures are over the samples' window: the live legs are counted over the same one.
    start, end = raw.load["worker"].window(raw.load_start_ns, raw.load_end_ns)
    legs = live_legs(raw.calls, start, end)
    worker = worker_cost(raw, legs)
    calls = sipp_calls(raw.load_sipp, options.calls)
    calls["tickets"] = sum(1 for c in raw.calls if c.ticket)
    calls["queued_by_digit"] = sum(1 for c in raw.calls if c.ivr_path == "0")
    sipp_load = raw.load.get("sipp_uac")
    result: dict[str, Any] = {
        "seconds": options.seconds,
        "call_seconds": options.call_seconds,
        "calls_per_worker": 4,
        "window_s": round((end - start) / 1e9, 1),
        "live_legs": legs,
        "calls": calls,
        "worker": worker,
        "sipp_uac_cpu_pct": round(sipp_load.cpu_pct(start, end), 2) if sipp_load else 0.0,
        "load_cpu_pct": load_cpu(raw, start, end),
        "answer_ms": summary([(c.answer_ns - c.invite_ns) / 1e6 for c in raw.calls if c.answer_ns]),
        "first_rtp_ms": summary([c.first_rtp_ms for c in raw.calls]),
        "first_prompt_ms": summary([c.first_prompt_ms for c in raw.calls]),
        "digit_at_s": round(raw.digit_at, 2),
        "digit_to_hold_ms": summary([c.digit_to_hold_ms for c in raw.calls]),
        "digit_to_queued_ms": summary([c.digit_to_queued_ms for c in raw.calls]),
        "frames": frames(raw.calls),
        "send_gap_ms": summary([gap for c in raw.calls for _, gap in c.send_gaps]),
        "quiet": quiet(raw),
        "stalls": stalls(raw),
        "recordings": recordings(raw.calls),
        "baseline": baseline(raw, options, worker["cpu_per_leg_pct"]),
        "capture": {"received": raw.capture_received, "dropped": raw.capture_dropped},
        "worker_exit": raw.worker_exit,
        "worker_warnings": raw.worker_warnings,
        "asr": raw.asr,
        **machine(),
        "sipp_version": raw.sipp_version,
        "source": raw.source,
        "redis_version": raw.redis_version,
    }
    result["targets"] = {
        "frame_gap_p99_ms": {
            "target": TARGET_GAP_P99_MS,
            "met": 0 < result["frames"]["gap_p99_ms"] <= TARGET_GAP_P99_MS,
        },
        "first_prompt_ms": {
            "target": TARGET_FIRST_PROMPT_MS,
            "met": 0 < result["first_prompt_ms"]["p99"] <= TARGET_FIRST_PROMPT_MS,
        },
        "failed_calls": {"target": 0, "met": calls["failed"] == 0},
    }
    result["problems"] = problems(raw, result)
    result["ok"] = not result["problems"]
    return result
