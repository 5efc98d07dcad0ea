"""The front benchmark's options, what it measured, and its figures computed from that (no I/O)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.stats import machine
from bench.front.capture import Incident, RtpCounts
from bench.front.setup import CALLER_PREFIX, CALLERS_PER_WORKER, CALLS_PER_WORKER, SURPLUS_PREFIX
from bench.voice.calls import Call
from bench.voice.figures import frames, recordings, sipp_calls, summary
from bench.voice.meter import Series
from peers.sip import SippResult

TARGET_CONCURRENT = 200
TARGET_RATE = 20.0
# SIPp paces its calls to a fraction of a percent of -r (measured: 19.95/s for -r 20): a run that
# answered every call SIPp offered at -r 20 meets the 20 calls/s target.
RATE_TOLERANCE = 0.01
RTP_SAMPLE_S = 2.0
RTP_MIN_SHARE = 0.5  # a call carries audio when at least half its packets were seen in the sample
WORKER_PPS = 50.0  # the workers send 20 ms packets
WINDOW_MARGIN_S = 1.0  # CPU is averaged from this long after the last answer to before the RTP sample
COMPONENTS = ("workers", "kamailio", "core", "redis", "sipp_uac")


@dataclass(frozen=True)
class Options:
    workers: int = 100
    call_seconds: float = 75.0
    rate: float = 20.0
    surplus: int = 4
    idle_seconds: float = 5.0
    baseline: bool = True
    raw_out: Path | None = None

    @property
    def capacity(self) -> int:
        return self.workers * CALLERS_PER_WORKER

    @property
    def ramp_s(self) -> float:
        return self.capacity / self.rate

    @property
    def hold_s(self) -> float:
        """How long every call is up at once (calls start 1/rate apart and all last call_seconds)."""
        return self.call_seconds - self.ramp_s

    @property
    def load_timeout(self) -> float:
        return self.ramp_s + self.call_seconds + 90.0

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(
            workers=args.front_workers,
            call_seconds=args.front_call_seconds,
            rate=args.front_rate,
            surplus=args.front_surplus,
            baseline=not args.front_no_baseline,
            raw_out=args.front_raw,
        )


@dataclass
class Raw:
    """Everything measured, before it is turned into figures."""

    digit_at: float
    caller_pps: float  # RTP packets per second SIPp sends (the pcap's packet time); the workers send 50
    sipp_version: str
    kamailio_version: str
    source: str
    redis_version: str = ""
    workers_start_s: float = 0.0
    worker_processes: int = 0  # the workers and any process they started
    idle: dict[str, Series] = field(default_factory=dict)
    pss_idle: dict[str, float] = field(default_factory=dict)  # MiB per component, once at the end of idle
    pss_load: dict[str, float] = field(default_factory=dict)  # and once at full load, before the RTP sample
    dlgload_after: int | None = None  # Kamailio's call load once the calls ended
    load: dict[str, Series] = field(default_factory=dict)
    load_machine: Series = field(default_factory=Series)  # /proc/stat: every CPU's busy time
    load_everything: Series = field(default_factory=Series)  # every process's CPU time
    load_start_ns: int = 0
    load_end_ns: int = 0
    load_sipp: SippResult | None = None
    surplus_sipp: SippResult | None = None
    surplus_start_ns: int = 0
    surplus_end_ns: int = 0
    self_cpu_s: float = 0.0  # this process over the CPU window: orchestration, capture, pool sampler
    self_window_ns: tuple[int, int] = (0, 0)
    calls: list[Call] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)  # on the wire, after an answer
    final_ns: dict[str, int] = field(default_factory=dict)  # SIP Call-ID -> when its final response passed
    wav_files: int = 0  # under the recordings directory, after the calls
    capture_received: int = 0
    capture_dropped: int = 0
    rtp: RtpCounts = field(default_factory=RtpCounts)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # the pool every 2 s: Kamailio and heartbeats
    metrics: dict[str, str] = field(default_factory=dict)  # hg:metrics after the calls
    kamailio_full_503: int = 0  # "every worker is full or down" log lines
    kamailio_down: int = 0  # "worker ... is down" log lines
    worker_exits: dict[str, int | None] = field(default_factory=dict)
    worker_warnings: list[str] = field(default_factory=list)
    core_exit: int | None = None
    baseline: dict[str, Series] = field(default_factory=dict)
    baseline_start_ns: int = 0
    baseline_end_ns: int = 0
    baseline_sipp: SippResult | None = None
    baseline_uas: SippResult | None = None


def is_load(call: Call) -> bool:
    return call.caller.startswith(CALLER_PREFIX)


def is_surplus(call: Call) -> bool:
    return call.caller.startswith(SURPLUS_PREFIX)


def component(name: str) -> str:
    """`workers:w7` -> workers, `kamailio/kamailio/123` -> kamailio (a process the tree root started)."""
    return name.split("/", 1)[0].split(":", 1)[0]


def cpu_by_component(series: dict[str, Series], start: int, end: int) -> dict[str, float]:
    used: dict[str, float] = {}
    for name, one in series.items():
        used[component(name)] = used.get(component(name), 0.0) + one.cpu_pct(start, end)
    return used


def rss_by_component(series: dict[str, Series], start: int, end: int) -> dict[str, float]:
    """Mean RSS (MiB) of each component's processes, summed, over the samples in the window."""
    totals: dict[str, dict[int, int]] = {}
    for name, one in series.items():
        into = totals.setdefault(component(name), {})
        for at, rss in zip(one.at_ns, one.rss_kib, strict=True):
            if start <= at <= end:
                into[at] = into.get(at, 0) + rss
    return {name: round(statistics.fmean(v.values()) / 1024, 1) if v else 0.0 for name, v in totals.items()}


def concurrency_at(calls: Sequence[Call], at_ns: int, exclude: Call | None = None) -> int:
    up = (c for c in calls if c is not exclude and c.answer_ns)
    return sum(1 for c in up if c.answer_ns <= at_ns and (not c.bye_ns or c.bye_ns > at_ns))


def live_calls(calls: Sequence[Call], start_ns: int, end_ns: int) -> float:
    """Average number of calls up (answer to BYE) during the window."""
    if end_ns <= start_ns:
        return 0.0
    up = sum(max(0, min(c.bye_ns or end_ns, end_ns) - max(c.answer_ns, start_ns)) for c in calls if c.answer_ns)
    return round(up / (end_ns - start_ns), 2)


def full_window(raw: Raw, load: Sequence[Call], options: Options) -> tuple[int, int]:
    """Where CPU is averaged: every call up (after the last answer and the surplus calls), and
    before the RTP sample (whose capture costs CPU here)."""
    answered = [c.answer_ns for c in load if c.answer_ns]
    last_answer = max(answered, default=raw.load_start_ns + int(options.ramp_s * 1e9))
    start = max(last_answer, raw.surplus_end_ns) + int(WINDOW_MARGIN_S * 1e9)
    first_bye = min((c.bye_ns for c in load if c.bye_ns), default=raw.load_end_ns)
    end = min(raw.rtp.start_ns or first_bye, first_bye) - int(WINDOW_MARGIN_S * 1e9 / 2)
    return start, end


Problem = tuple[int | None, str]  # when it happened (None: not known), what


def call_problems(call: Call, raw: Raw, incidents: dict[str, list[Incident]]) -> list[Problem]:
    """Why one load call failed, each reason with when it happened when that is known (on the wire;
    missing RTP at the sample), known times first; empty: it did not fail."""
    if call.final_status != 200:
        return [(raw.final_ns.get(call.sip_call_id, call.invite_ns), f"final status {call.final_status or 'none'}")]
    found: list[Problem] = [(incident.at_ns, incident.what) for incident in incidents.get(call.sip_call_id, [])]
    if not call.bye_ns:
        found.append((None, "no BYE seen"))
    if call.ivr_path != "0":
        found.append((None, "ticket not queued by the digit" if call.ticket else "no ticket"))
    if not call.recording:
        found.append((None, "no recording"))
    elif abs(call.recording_s - call.media_s) > RECORDING_SLACK_S:
        found.append((None, f"recording {call.recording_s:.2f} s for {call.media_s:.2f} s up"))
    elif call.recording_rms < MIN_RMS:
        found.append((None, f"recording silent (RMS {call.recording_rms:g})"))
    if not call.frames:
        found.append((None, "no live-audio frame stats"))
    rtp = raw.rtp
    if rtp.start_ns and call.answer_ns < rtp.start_ns and (not call.bye_ns or call.bye_ns > rtp.end_ns):
        seconds = (rtp.end_ns - rtp.start_ns) / 1e9
        sent, got = rtp.from_worker.get(call.worker_port, 0), rtp.to_worker.get(call.worker_port, 0)
        # When the capture itself dropped packets (it could not keep up), only a silent stream counts.
        share = 0.0 if rtp.dropped else RTP_MIN_SHARE
        if min(sent, got) == 0 or sent < share * seconds * WORKER_PPS or got < share * seconds * raw.caller_pps:
            what = (
                f"RTP in the sample: {sent} from the worker, {got} to it "
                f"({seconds * WORKER_PPS:.0f} and {seconds * raw.caller_pps:.0f} expected)"
            )
            found.append((rtp.start_ns, what))
    return sorted(found, key=lambda problem: (problem[0] is None, problem[0] or 0))


RECORDING_SLACK_S = 0.25
MIN_RMS = 0.01
ON_THE_WIRE = ("final status", "hung up by the far end", "BYE answered")


def most_concurrent(load: Sequence[Call], start: int, end: int) -> int:
    """The most calls up at once between two moments (checked at the window's start and at each answer)."""
    moments = [start, *(c.answer_ns for c in load if c.answer_ns and start <= c.answer_ns <= end)]
    return max(concurrency_at(load, at) for at in moments)


def first_failure(raw: Raw, load: Sequence[Call], failed: dict[str, list[Problem]]) -> dict[str, Any] | None:
    """The load call that failed first, with how many calls were up then. A failure on the wire (not
    answered, hung up by the far end, BYE refused) or RTP missing in the sample has a time; a failed
    check after the call (recording, ticket, frame stats) does not: then the first such call by its
    answer, with the most calls up while it was."""
    if not failed:
        return None
    by_id = {c.sip_call_id: c for c in load}
    timed = [(at, call_id, problems) for call_id, problems in failed.items() for at, _ in problems[:1] if at]
    if timed:
        at, call_id, problems = min(timed)
        first = by_id[call_id]
        return {
            "kind": "sip" if problems[0][1].startswith(ON_THE_WIRE) else "media",
            "at_s": round((at - raw.load_start_ns) / 1e9, 1),
            "concurrent": concurrency_at(load, at),
            "call_number": int(first.caller.removeprefix(CALLER_PREFIX) or 0),
            "reasons": [what for _, what in problems],
        }
    first = min((by_id[call_id] for call_id in failed), key=lambda c: c.answer_ns)
    end = first.bye_ns or raw.load_end_ns
    return {
        "kind": "check",
        "at_s": None,
        "up_s": [round((first.answer_ns - raw.load_start_ns) / 1e9, 1), round((end - raw.load_start_ns) / 1e9, 1)],
        "concurrent": most_concurrent(load, first.answer_ns, end),
        "call_number": int(first.caller.removeprefix(CALLER_PREFIX) or 0),
        "reasons": [what for _, what in failed[first.sip_call_id]],
    }


def pool_figures(raw: Raw, load: Sequence[Call], window: tuple[int, int], workers: int) -> dict[str, Any]:
    """Kamailio's DLGLOAD and the workers' heartbeat counts: at the middle of the full window (each
    worker should hold 2 by both counts), and the first moment a worker was marked inactive."""
    inside = [s for s in raw.timeline if window[0] <= s["at_ns"] <= window[1]]
    middle = inside[len(inside) // 2] if inside else None
    result: dict[str, Any] = {"samples": len(raw.timeline)}
    if middle is not None:
        loads, callers = middle["dlgload"], middle["callers"]
        both = sum(1 for w in loads if loads.get(w) == CALLERS_PER_WORKER and callers.get(w) == CALLERS_PER_WORKER)
        result["middle"] = {
            "at_s": round((middle["at_ns"] - raw.load_start_ns) / 1e9, 1),
            "dlgload_total": sum(loads.values()),
            "callers_total": sum(v for v in callers.values() if v is not None),
            "workers_full_by_both": both,
            "workers": workers,
            "disagree": sorted(w for w in loads if loads.get(w) != callers.get(w))[:10],
            "active": sum(1 for a in middle["active"].values() if a),
        }
    down = [s for s in raw.timeline if not all(s["active"].values())]
    if down:
        first = down[0]
        result["first_inactive"] = {
            "at_s": round((first["at_ns"] - raw.load_start_ns) / 1e9, 1),
            "concurrent": concurrency_at(load, first["at_ns"]),
            "workers": sorted(w for w, a in first["active"].items() if not a)[:10],
        }
        result["most_inactive"] = max(sum(1 for a in s["active"].values() if not a) for s in raw.timeline)
    result["dlgload_after"] = raw.dlgload_after
    return result


def _interval_pct(series: Sequence[Series], start: int, end: int) -> float:
    """CPU (% of one core) of these processes between two sampling times (each sampled at both)."""
    used = 0.0
    for one in series:
        if start in one.at_ns and end in one.at_ns:
            used += one.cpu_s[one.at_ns.index(end)] - one.cpu_s[one.at_ns.index(start)]
    return 100 * used / ((end - start) / 1e9)


def saturation(raw: Raw, load: Sequence[Call], window: tuple[int, int]) -> dict[str, Any]:
    """The machine's CPU second by second against the calls up: when it first ran out (95 % of every
    core busy, whoever used it), and the ramp (each second until every call was up)."""
    times, busy = raw.load_machine.at_ns, raw.load_machine.cpu_s
    everything = raw.load_everything
    workers = [one for name, one in raw.load.items() if component(name) == "workers"]
    threshold = 0.95 * 100 * _nproc()
    points = []
    for i in range(1, len(times)):
        start, end = times[i - 1], times[i]
        if end - start < 500_000_000:
            continue
        # The larger of /proc/stat (interrupts too, tick-sampled) and every process's exact time.
        stat_pct = 100 * (busy[i] - busy[i - 1]) / ((end - start) / 1e9)
        machine_pct = max(stat_pct, _interval_pct([everything], start, end))
        points.append((end, machine_pct, _interval_pct(workers, start, end)))
    first = next(((at, pct) for at, pct, _ in points if pct >= threshold), None)
    ramp = [
        {"at_s": round((at - raw.load_start_ns) / 1e9, 1), "calls": concurrency_at(load, at),
         "machine_pct": round(pct, 1), "workers_pct": round(w, 1)}
        for at, pct, w in points if at <= window[0]
    ]  # fmt: skip
    return {
        "threshold_pct": round(threshold),
        "peak_pct": round(max((pct for _, pct, _ in points), default=0.0), 1),
        "first_at_s": round((first[0] - raw.load_start_ns) / 1e9, 1) if first else None,
        "calls_up_then": concurrency_at(load, first[0]) if first else None,
        "ramp": ramp,
    }


def costs(raw: Raw, window: tuple[int, int], calls_up: float) -> dict[str, Any]:
    """CPU (% of one core) and RSS (MiB) per component: idle, under load over the full window, and
    per call ((load - idle) / calls up)."""
    start, end = window
    idle_cpu = cpu_by_component(raw.idle, 0, 2**63)
    load_cpu = cpu_by_component(raw.load, start, end)
    idle_rss = rss_by_component(raw.idle, 0, 2**63)
    load_rss = rss_by_component(raw.load, start, end)
    table: dict[str, Any] = {}
    for name in COMPONENTS:
        if name not in load_cpu:
            continue
        cpu, idle = load_cpu[name], idle_cpu.get(name, 0.0)
        rss, idle_mem = load_rss.get(name, 0.0), idle_rss.get(name, 0.0)
        pss, idle_pss = raw.pss_load.get(name, 0.0), raw.pss_idle.get(name, 0.0)
        table[name] = {
            "idle_cpu_pct": round(idle, 2),
            "cpu_pct": round(cpu, 2),
            "cpu_per_call_pct": round((cpu - idle) / calls_up, 3) if calls_up else 0.0,
            # The whole component's CPU per call, its idle share included (each worker is full here).
            "cpu_all_per_call_pct": round(cpu / calls_up, 3) if calls_up else 0.0,
            "idle_rss_mib": idle_mem,
            "rss_mib": rss,
            "idle_pss_mib": idle_pss,
            "pss_mib": pss,
            "pss_per_call_mib": round((pss - idle_pss) / calls_up, 3) if calls_up and idle_pss and pss else None,
        }
    ours = [table[n] for n in ("workers", "kamailio", "core", "redis") if n in table]
    table["gateway_total"] = {
        key: round(sum(t[key] or 0 for t in ours), 3)
        for key in ("idle_cpu_pct", "cpu_pct", "cpu_per_call_pct", "cpu_all_per_call_pct", "idle_pss_mib", "pss_mib",
                    "pss_per_call_mib", "idle_rss_mib", "rss_mib")
    }  # fmt: skip
    wall = (end - start) / 1e9
    machine_pct = raw.load_machine.cpu_pct(start, end)
    everything_pct = raw.load_everything.cpu_pct(start, end)
    bench_pct = 100 * raw.self_cpu_s / ((raw.self_window_ns[1] - raw.self_window_ns[0]) / 1e9) if raw.self_cpu_s else 0
    measured = sum(load_cpu.values())
    table["bench"] = {"cpu_pct": round(bench_pct, 2)}
    # Other processes: every process's CPU minus ours and this benchmark's (exact per-process
    # accounting); /proc/stat's figure for the machine also has interrupts, but samples by ticks.
    table["other"] = {"cpu_pct": round(max(0.0, everything_pct - measured - bench_pct), 2)}
    table["machine"] = {
        "cpu_pct": round(machine_pct, 2),
        "processes_cpu_pct": round(everything_pct, 2),
        "window_s": round(wall, 1),
    }
    return table


def baseline(raw: Raw, options: Options, gateway_per_call: float, workers_per_call: float) -> dict[str, Any]:
    """SIPp's own cost at the same concurrency: the same UAC against the trivial UAS, CPU averaged
    while every call was up (by SIPp's schedule: after the ramp, before the first BYE)."""
    start = raw.baseline_start_ns + int((options.ramp_s + 2 * WINDOW_MARGIN_S) * 1e9)
    end = raw.baseline_start_ns + int((options.call_seconds - WINDOW_MARGIN_S) * 1e9)
    cpu = {name: series.cpu_pct(start, end) for name, series in raw.baseline.items()}
    done = raw.baseline_sipp.successful if raw.baseline_sipp else 0
    calls = options.capacity if done == options.capacity else 0
    uas = cpu.get("sipp_uas", 0.0) / calls if calls else 0.0
    uac = cpu.get("sipp_uac", 0.0) / calls if calls else 0.0
    machine_share = (uas + uac) / 100  # of one core per call
    return {
        "calls": sipp_calls(raw.baseline_sipp, options.capacity),
        "window_s": round((end - start) / 1e9, 1),
        "uas_cpu_pct": round(cpu.get("sipp_uas", 0.0), 2),
        "uac_cpu_pct": round(cpu.get("sipp_uac", 0.0), 2),
        "uas_cpu_per_call_pct": round(uas, 4),
        "uac_cpu_per_call_pct": round(uac, 4),
        # Calls SIPp (UAC + trivial UAS) could carry if it had every core, at this cost per call.
        "sipp_ceiling_calls": round(100 * _nproc() / (100 * machine_share)) if machine_share else None,
        "gateway_vs_uas": round(gateway_per_call / uas, 1) if uas else None,
        "workers_vs_uas": round(workers_per_call / uas, 1) if uas else None,
    }


def _nproc() -> int:
    return int(machine()["nproc"])


def figures(options: Options, raw: Raw) -> dict[str, Any]:
    load = [c for c in raw.calls if is_load(c)]
    surplus = [c for c in raw.calls if is_surplus(c)]
    incidents: dict[str, list[Incident]] = {}
    for incident in raw.incidents:
        incidents.setdefault(incident.call_id, []).append(incident)
    failed = {c.sip_call_id: p for c in load if (p := call_problems(c, raw, incidents))}
    reasons = {call_id: [what for _, what in found] for call_id, found in failed.items()}
    window = full_window(raw, load, options)
    up = live_calls(load, *window)
    cost = costs(raw, window, up)
    answered = [c for c in load if c.final_status == 200]
    answers = sorted(c.answer_ns for c in answered)
    achieved = round((len(answers) - 1) / ((answers[-1] - answers[0]) / 1e9), 2) if len(answers) > 1 else 0.0
    held = [c for c in answered if c.answer_ns <= window[0] and (not c.bye_ns or c.bye_ns >= window[1])]
    held_ok = [c for c in held if c.sip_call_id not in failed]
    surplus_503 = [c for c in surplus if c.final_status == 503]
    refused = [c for c in surplus_503 if c.sip_call_id in raw.final_ns]
    calls = sipp_calls(raw.load_sipp, options.capacity)
    calls.update(
        {
            "in_capture": len(load),
            "answered": len(answered),
            "failed": len(failed),
            "failed_on_the_wire": sum(1 for found in reasons.values() if any(w.startswith(ON_THE_WIRE) for w in found)),
            "tickets": sum(1 for c in load if c.ticket),
            "queued_by_digit": sum(1 for c in load if c.ivr_path == "0"),
            "failure_reasons": _reasons(reasons),
        }
    )
    rejected_by_workers = int(raw.metrics.get("voice.rejected_full", 0) or 0)
    result: dict[str, Any] = {
        "workers": options.workers,
        "calls_per_worker": CALLS_PER_WORKER,
        "capacity": options.capacity,
        "rate": options.rate,
        "call_seconds": options.call_seconds,
        "ramp_s": round(options.ramp_s, 1),
        "surplus": options.surplus,
        "digit_at_s": round(raw.digit_at, 2),
        "workers_start_s": round(raw.workers_start_s, 1),
        "worker_processes": raw.worker_processes,
        "calls": calls,
        "achieved_rate": achieved,
        "peak_concurrent": max((concurrency_at(load, c.answer_ns) for c in answered), default=0),
        "held": {"calls": len(held), "ok": len(held_ok), "window_s": round((window[1] - window[0]) / 1e9, 1)},
        "live_calls": up,
        "answer_ms": summary([(c.answer_ns - c.invite_ns) / 1e6 for c in answered]),
        "surplus_calls": {
            "placed": options.surplus,
            "in_capture": len(surplus),
            "got_503": len(surplus_503),
            "statuses": _statuses(surplus),
            "reply_ms": summary([(raw.final_ns[c.sip_call_id] - c.invite_ns) / 1e6 for c in refused]),
        },
        "rejected_by_workers": rejected_by_workers,
        "kamailio_full_503": raw.kamailio_full_503,
        "kamailio_down_events": raw.kamailio_down,
        "first_failure": first_failure(raw, load, failed),
        "pool": pool_figures(raw, load, window, options.workers),
        "saturation": saturation(raw, load, window),
        "recordings": {**recordings(answered), "wav_files": raw.wav_files},
        "frames": frames(answered),
        "rtp_sample": _rtp(raw, answered),
        "cost": cost,
        "metrics": raw.metrics,
        "capture": {"received": raw.capture_received, "dropped": raw.capture_dropped},
        "worker_exits": _exits(raw.worker_exits),
        "worker_warnings": raw.worker_warnings,
        "core_exit": raw.core_exit,
        **machine(),
        "sipp_version": raw.sipp_version,
        "kamailio_version": raw.kamailio_version,
        "redis_version": raw.redis_version,
        "source": raw.source,
    }
    if raw.baseline_sipp is not None:
        result["baseline"] = baseline(
            raw, options, cost["gateway_total"]["cpu_per_call_pct"], cost.get("workers", {}).get("cpu_per_call_pct", 0)
        )
    per_call = cost["gateway_total"]["cpu_all_per_call_pct"] + cost.get("sipp_uac", {}).get("cpu_all_per_call_pct", 0)
    # What the machine's CPU would carry at this cost per call (workers full, SIPp included): an estimate.
    result["cpu_ceiling_calls"] = round(100 * _nproc() / per_call) if per_call else None
    result["targets"] = {
        "concurrent_recorded_calls": {"target": TARGET_CONCURRENT, "measured": len(held_ok),
                                      "met": len(held_ok) >= TARGET_CONCURRENT},
        "calls_per_s": {"target": TARGET_RATE, "measured": achieved,
                        "met": achieved >= TARGET_RATE * (1 - RATE_TOLERANCE) and len(answered) == options.capacity},
        "failed_below_capacity": {"target": 0, "measured": len(failed), "met": not failed},
        "clean_503_above": {"target": options.surplus, "measured": len(surplus_503),
                            "met": len(surplus_503) == options.surplus == len(surplus) and not rejected_by_workers},
    }  # fmt: skip
    result["problems"] = problems(raw, result, options)
    result["ok"] = not result["problems"]
    return result


def _reasons(failed: dict[str, list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reasons in failed.values():
        for reason in reasons:
            key = reason.split(":")[0].split(" (")[0]
            key = "recording length" if key.startswith("recording ") and " s for " in key else key
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def _statuses(calls: Sequence[Call]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        counts[str(call.final_status or "none")] = counts.get(str(call.final_status or "none"), 0) + 1
    return counts


def _exits(exits: dict[str, int | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in exits.values():
        counts[str(code)] = counts.get(str(code), 0) + 1
    return counts


def _rtp(raw: Raw, answered: Sequence[Call]) -> dict[str, Any]:
    rtp = raw.rtp
    if not rtp.start_ns:
        return {"taken": False}
    up = [c for c in answered if c.answer_ns < rtp.start_ns and (not c.bye_ns or c.bye_ns > rtp.end_ns)]
    sent = [rtp.from_worker.get(c.worker_port, 0) for c in up]
    got = [rtp.to_worker.get(c.worker_port, 0) for c in up]
    return {
        "taken": True,
        "at_s": round((rtp.start_ns - raw.load_start_ns) / 1e9, 1),
        "seconds": round((rtp.end_ns - rtp.start_ns) / 1e9, 2),
        "calls_up": len(up),
        "both_ways": sum(1 for s, g in zip(sent, got, strict=True) if s and g),
        "from_worker_min": min(sent, default=0),
        "to_worker_min": min(got, default=0),
        "from_worker_median": statistics.median(sent) if sent else 0,
        "expected_from_worker": round((rtp.end_ns - rtp.start_ns) / 1e9 * WORKER_PPS),
        "expected_to_worker": round((rtp.end_ns - rtp.start_ns) / 1e9 * raw.caller_pps),
        "received": rtp.received,
        "dropped": rtp.dropped,
    }


def problems(raw: Raw, result: dict[str, Any], options: Options) -> list[str]:
    """What makes the run invalid as a measurement (failed calls are figures, not problems)."""
    found = []
    if raw.load_sipp is None or raw.load_sipp.timed_out:
        found.append("SIPp did not finish its calls in time")
    if result["calls"]["in_capture"] != options.capacity:
        found.append(f"the capture saw {result['calls']['in_capture']} load calls of {options.capacity}")
    if raw.capture_dropped:
        found.append(f"the SIP capture dropped {raw.capture_dropped} packets")
    if result["held"]["window_s"] < 5:
        found.append(f"every call was up together for only {result['held']['window_s']} s (need >= 5)")
    base = result.get("baseline")
    if options.baseline and base is None:
        found.append("no baseline")
    elif base is not None and base["calls"]["failed"]:
        found.append(f"baseline: SIPp against its trivial UAS failed {base['calls']['failed']} call(s)")
    return found
