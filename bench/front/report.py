"""The front benchmark's section of docs/benchmarks.md, rendered from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import disturbed, load_section, met

LABELS = {
    "workers": "media workers (sum)",
    "kamailio": "Kamailio (all its processes)",
    "core": "gateway core (`hotline-gateway run`)",
    "redis": "redis-server",
    "sipp_uac": "SIPp UAC (the load)",
}


def _ms(s: dict[str, float]) -> str:
    return f"{s['p50']:g} / {s['p99']:g} / {s['max']:g} ms" if s["n"] else "–"


def _num(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:,g}{unit}"


def render(result: dict[str, Any]) -> str:
    """The markdown section of docs/benchmarks.md for one front result."""
    return load_section(result, _intro, _figure_rows, _disturbance, _cost_table, _method, _checks, _how_to_run)


def _intro(r: dict[str, Any]) -> list[str]:
    calls, surplus = r["calls"], r["surplus_calls"]
    base = r.get("baseline")
    lines = [
        f"Measured {r['date']} on {r['nproc']} × {r['cpu']}, Python {r['python']}, SIPp {r['sipp_version']}, "
        f"Kamailio {r['kamailio_version']}, redis-server {r['redis_version']}, the pjsua2 wheel, gateway at "
        f"{r.get('source', '?')}. Everything real and on this machine: redis-server, the core (`hotline-gateway run`, "
        f"HTTP and seats; no agent logged in, so every ticket waits in its queue), **{r['workers']} media workers** "
        f"(`hotline-gateway media-worker`, calls_per_worker = {r['calls_per_worker']}: 2 callers each, "
        f"{r['capacity']} in all; ids and ports from `worker_specs`), and Kamailio rendered from the same config "
        "(`write_front`: dispatcher call-load algorithm, maxload 2 per worker, OPTIONS probes). SIPp talks to "
        "Kamailio only. The shipped flow `config/flows/12345.toml`, prompts rendered by espeak-ng. Speech is off "
        "(`[asr] enabled = false` and `navigation_enabled = false`; the first alone still starts the navigation "
        "grammar's recognizer in every worker, measured 232 MB RSS and ~4 % CPU each): a recognizer process per "
        "worker (PocketSphinx ~155 MB and ~1 % CPU per stream, Vosk more; see the ASR section) would not fit 100 "
        "workers on 2 cores, so live speech recognition is not part of this load.",
        "",
        f"- **Load**: SIPp placed {calls['planned']} calls at {r['rate']:g} calls/s (`-l {r['capacity']}`; ramp "
        f"{r['ramp_s']:g} s), each {r['call_seconds']:g} s long, so every call was up at once for "
        f"{r['held']['window_s']:g} s (CPU is averaged over that window). Each call is the voice benchmark's: speech "
        "for its whole length (g711a.pcap's PCMA as one RTP stream), the digit 0 (RFC 4733) "
        f"{r['digit_at_s']:g} s after the ACK, two seconds into the main menu; the worker queues the ticket and "
        "loops the hold prompt, recording the caller, until SIPp hangs up.",
        f"- **Over capacity**: once the ramp was done, a second SIPp placed {surplus['placed']} more calls: each "
        "should get 503 from Kamailio itself, without a worker being asked.",
    ]
    if base is not None:
        lines.append(
            f"- **Baseline**: after the stack stopped, the same UAC scenario, {base['calls']['planned']} calls at the "
            "same rate and concurrency, against SIPp's trivial UAS (`peers/sipp/uas_trivial.xml`: answers, "
            "absorbs the RTP, sends none): what SIPp itself costs per call here."
        )
    return lines


def _first_failure(r: dict[str, Any]) -> str:
    found = r["first_failure"]
    if found is None:
        return f"none: every call up to {r['capacity']} went through"
    reasons = "; ".join(found["reasons"][:2])
    if found["at_s"] is None:
        start, end = found["up_s"]
        return (
            f"call {found['call_number']}, up from {start:g} to {end:g} s into the load with at most "
            f"{found['concurrent']} calls up (a check after the call; when it went wrong is not known: {reasons})"
        )
    what = "on the wire" if found["kind"] == "sip" else "RTP missing in the sample"
    return (
        f"call {found['call_number']}, {found['at_s']:g} s into the load, with {found['concurrent']} calls up "
        f"({what}: {reasons})"
    )


def _pool(r: dict[str, Any]) -> str:
    pool = r["pool"]
    middle = pool.get("middle")
    if middle is None:
        return "no sample"
    text = (
        f"{middle['workers_full_by_both']} of {middle['workers']} workers at 2 by both counts "
        f"(DLGLOAD total {middle['dlgload_total']}, heartbeats {middle['callers_total']}; {middle['active']} active)"
    )
    if "first_inactive" in pool:
        first = pool["first_inactive"]
        text += (
            f"; first worker marked inactive {first['at_s']:g} s into the load with {first['concurrent']} calls up "
            f"(at most {pool['most_inactive']} at once)"
        )
    text += f"; Kamailio logged {r['kamailio_down_events']} worker-down event(s)"
    return text + f"; load after the calls: {_num(pool.get('dlgload_after'))}"


def _saturation(r: dict[str, Any]) -> str:
    found = r["saturation"]
    ramp = ", ".join(f"{p['calls']} calls {p['machine_pct']:g} %" for p in found["ramp"])
    if found["first_at_s"] is None:
        head = f"never (peak {found['peak_pct']:g} % of {r['nproc'] * 100} %)"
    else:
        head = f"{found['first_at_s']:g} s into the load, with {found['calls_up_then']} calls up"
    return head + (f"; during the ramp: {ramp}" if ramp else "")


def _figure_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    t, calls, cost = r["targets"], r["calls"], r["cost"]
    rec, fr, rtp, surplus = r["recordings"], r["frames"], r["rtp_sample"], r["surplus_calls"]
    n, total, workers = r["capacity"], cost["gateway_total"], cost.get("workers", {})
    rows = [
        (f"Concurrent answered calls, each recorded, queued by its digit and carrying RTP both ways, up together "
         f"for {r['held']['window_s']:g} s", f"{t['concurrent_recorded_calls']['measured']} of {n}",
         f"≥ {t['concurrent_recorded_calls']['target']}", met(t["concurrent_recorded_calls"]["met"])),
        ("New calls answered per second during the ramp (SIPp `-r`)",
         f"{t['calls_per_s']['measured']:g} /s ({calls['answered']} of {n} answered)",
         f"≥ {t['calls_per_s']['target']:g} /s", met(t["calls_per_s"]["met"])),
        ("Failed calls below capacity (not answered, cut off, or failing a check below)",
         f"{calls['failed']}" + (f": {_reasons(calls['failure_reasons'])}" if calls["failed"] else ""),
         "0", met(t["failed_below_capacity"]["met"])),
        ("Calls over capacity answered 503 by Kamailio (INVITE → 503 p50 / max)",
         f"{surplus['got_503']} of {surplus['placed']} ({_statuses(surplus['statuses'])}; "
         f"{surplus['reply_ms']['p50']:g} / {surplus['reply_ms']['max']:g} ms); workers' own 503s: "
         f"{r['rejected_by_workers']}", f"{surplus['placed']} of {surplus['placed']}, from Kamailio",
         met(t["clean_503_above"]["met"])),
        ("First failure point", _first_failure(r), "", ""),
        ("The machine's CPU ran out (≥ 95 % of every core busy, whoever used it)", _saturation(r), "", ""),
        ("INVITE → 200 OK through Kamailio, p50 / p99 / max", _ms(r["answer_ms"]), "", ""),
        ("Calls per worker at full load: Kamailio's DLGLOAD and the workers' heartbeats", _pool(r), "", ""),
        ("Recordings complete (length − answer-to-BYE within ±0.25 s) and non-silent",
         f"{min(rec['complete'], rec['non_silent'])} of {calls['answered']} ({rec['diff_s_min']:+.2f} … "
         f"{rec['diff_s_max']:+.2f} s; RMS ≥ {rec['rms_min']:g}); WAV files on disk: {rec.get('wav_files', '?')}",
         "", ""),
        ("RTP both ways in a 2 s sample at full load (packets per call, fewest: from the worker / to it)",
         f"{rtp['both_ways']} of {rtp['calls_up']} calls ({rtp['from_worker_min']} of {rtp['expected_from_worker']} / "
         f"{rtp['to_worker_min']} of {rtp['expected_to_worker']})" if rtp["taken"] else "not taken", "", ""),
        ("Live-audio frame gap p99, worst call (median call) / max",
         f"{fr['gap_p99_ms']:g} ms ({fr['gap_p99_median_call_ms']:g} ms) / {fr['gap_max_ms']:g} ms", "", ""),
        ("CPU per call: workers / Kamailio / core / redis (load − idle, ÷ calls up)",
         _per_call(cost), "", ""),
        ("CPU per call, the whole gateway, idle included (each worker is full)",
         f"{total['cpu_all_per_call_pct']:g} % (workers {workers.get('cpu_all_per_call_pct', 0):g} %)", "", ""),
        ("Memory per call (PSS, load − idle) / the whole gateway at full load",
         f"{_num(total['pss_per_call_mib'], ' MiB')} / {total['pss_mib']:,g} MiB "
         f"(workers {workers.get('pss_mib', 0):,g} MiB, {workers.get('pss_mib', 0) / max(1, r['workers']):.1f} MiB "
         "each)", "", ""),
        ("SIPp UAC per call in this run", f"{cost.get('sipp_uac', {}).get('cpu_all_per_call_pct', 0):g} %", "", ""),
        ("Calls this machine's CPU would carry at these costs (workers full, SIPp included; an estimate)",
         _num(r.get("cpu_ceiling_calls")), "", ""),
    ]  # fmt: skip
    base = r.get("baseline")
    if base is not None:
        rows += [
            ("Baseline: SIPp trivial UAS / SIPp UAC CPU per call",
             f"{base['uas_cpu_per_call_pct']:g} % / {base['uac_cpu_per_call_pct']:g} % "
             f"({base['calls']['successful']} of {base['calls']['planned']} calls ok)", "", ""),
            ("SIPp's own ceiling here: calls UAC + trivial UAS could carry with every core (an estimate)",
             _num(base["sipp_ceiling_calls"]), "", ""),
            ("**Gateway CPU per call ÷ SIPp UAS per call (workers alone)**",
             f"{_num(base['gateway_vs_uas'], '×')} ({_num(base['workers_vs_uas'], '×')})", "", ""),
        ]  # fmt: skip
    return rows


def _per_call(cost: dict[str, Any]) -> str:
    parts = (f"{cost.get(key, {}).get('cpu_per_call_pct', 0):g} %" for key in ("workers", "kamailio", "core", "redis"))
    return " / ".join(parts) + " of one core"


def _reasons(reasons: dict[str, int]) -> str:
    return "; ".join(f"{reason} {count}" for reason, count in list(reasons.items())[:4])


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{code}×{count}" for code, count in statuses.items()) or "no answer"


def _disturbance(r: dict[str, Any]) -> list[str]:
    other = r["cost"]["other"]["cpu_pct"]
    return disturbed(
        other,
        f"**This run was disturbed**: other processes on the machine used {other:g} % of one core while every "
        "call was up (`every other process` below), so CPU was scarcer than the stack alone would make it.",
    )


def _cost_table(r: dict[str, Any]) -> list[str]:
    cost = r["cost"]
    rows = [
        f"CPU (% of one core; the machine has {r['nproc'] * 100} %) sampled every second from `/proc` and averaged "
        f"over the {cost['machine']['window_s']:g} s when every call was up; memory is PSS (shared pages divided "
        "among the processes sharing them), read once idle and once at full load:",
        "",
        "| Process | CPU idle | CPU under load | per call (load − idle) | PSS idle | PSS under load | per call |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        one = cost.get(key)
        if one is None:
            continue
        rows.append(
            f"| {label} | {one['idle_cpu_pct']:g} % | {one['cpu_pct']:g} % | {one['cpu_per_call_pct']:g} % | "
            f"{one['idle_pss_mib']:,g} MiB | {one['pss_mib']:,g} MiB | {_num(one['pss_per_call_mib'], ' MiB')} |"
        )
    total = cost["gateway_total"]
    rows += [
        f"| **the gateway** (workers, Kamailio, core, redis) | {total['idle_cpu_pct']:g} % | {total['cpu_pct']:g} % "
        f"| {total['cpu_per_call_pct']:g} % | {total['idle_pss_mib']:,g} MiB | {total['pss_mib']:,g} MiB "
        f"| {_num(total['pss_per_call_mib'], ' MiB')} |",
        f"| this benchmark (orchestration, SIP capture, pool sampler) | | {cost['bench']['cpu_pct']:g} % | | | | |",
        f"| every other process on the machine | | {cost['other']['cpu_pct']:g} % | | | | |",
        f"| the whole machine: all processes / `/proc/stat` (interrupts too, sampled by ticks) | "
        f"| {cost['machine'].get('processes_cpu_pct', 0):g} % / {cost['machine']['cpu_pct']:g} % | | | | |",
    ]
    base = r.get("baseline")
    if base is not None:
        rows += [
            f"| baseline: SIPp trivial UAS ({r['capacity']} calls) | | {base['uas_cpu_pct']:g} % "
            f"| {base['uas_cpu_per_call_pct']:g} % | | | |",
            f"| baseline: SIPp UAC | | {base['uac_cpu_pct']:g} % | {base['uac_cpu_per_call_pct']:g} % | | | |",
        ]
    return rows


def _method(r: dict[str, Any]) -> list[str]:
    return [
        "How it is measured: SIP between SIPp and Kamailio is captured for the whole run (AF_PACKET on `lo`, a "
        "kernel filter on Kamailio's port, kernel timestamps): each call's INVITE, answer, final status and BYE; "
        "calls up at a moment are those answered and not yet hung up; the *first failure point* is the first call "
        "not answered or hung up by the far end, with the calls up then (or, if none, the first failing a check). "
        "Each call is joined by its caller id to its ticket (queued by the digit?), its recording (length against "
        "answer-to-BYE, RMS) and the worker's live-audio frame stats (`hg:voice:frames`). RTP is captured for "
        "2 s shortly before the calls end, counting packets per call and direction. Every 2 s Kamailio's "
        "`dispatcher.list` (active flag, DLGLOAD) and each worker's heartbeat (`hg:worker:{id}` `callers`) are "
        "read. *Per call* CPU is (under load − idle) ÷ calls up; *idle included* divides the whole load figure, "
        f"which for full workers is what a call really costs. {_rate_note(r)}",
    ]


def _rate_note(r: dict[str, Any]) -> str:
    return (
        "The call rate is (answers − 1) ÷ (last answer − first answer) on the wire; SIPp paces `-r` to within a "
        "fraction of a percent, so the target counts as met at 99 % of it when every call was answered."
    )


def _checks(r: dict[str, Any]) -> str:
    cap, exits = r["capture"], r["worker_exits"]
    verdict = "yes" if r["ok"] else "**NO**: " + "; ".join(r["problems"])
    warnings = "; ".join(r.get("worker_warnings", [])) or "nothing at WARNING or above"
    return (
        f"A valid measurement (SIPp finished, the capture saw every call and dropped nothing, the baseline ran "
        f"clean): {verdict} (SIP packets captured {cap['received']:,}, dropped {cap['dropped']}; workers' exit "
        f"status on SIGTERM: {', '.join(f'{code} × {n}' for code, n in exits.items())}; core {r['core_exit']}; "
        f"workers started in {r['workers_start_s']:g} s). The workers logged: {warnings}. Failed calls and missed "
        "targets are results, not an invalid run: they are published as measured."
    )


def _how_to_run(r: dict[str, Any]) -> str:
    return (
        "Run: `sudo .venv/bin/python -m bench front` (root or CAP_NET_RAW: SIPp's pcap playback and the capture "
        "use raw sockets; needs `sip-tester`, `kamailio`, `espeak-ng`, `sox`, `redis-server`; about "
        f"{_minutes(r)} minutes). `--front-workers 10 --front-call-seconds 30` for a quick run (default 100 workers, "
        "75 s calls), `--front-rate`, `--front-surplus`, `--front-no-baseline`, `--front-raw FILE` saves every "
        "call's measurements and the pool timeline."
    )


def _minutes(r: dict[str, Any]) -> int:
    seconds = float(r["workers_start_s"]) + 2 * (float(r["ramp_s"]) + float(r["call_seconds"])) + 90
    return max(1, round(seconds / 60))
