"""The ASR benchmark's section of docs/benchmarks.md, from its JSON result."""

from __future__ import annotations

from typing import Any

from bench.common.report import figure_table

ENGINE_TITLES = {"pocketsphinx": "PocketSphinx (navigation grammar)", "vosk": "Vosk (dictation)"}


def _met(target: dict[str, Any] | None) -> str:
    if not target or target.get("met") is None:
        return "not measured"
    return "**met**" if target["met"] else "**not met**"


def _ms(figures: dict[str, Any]) -> str:
    return f"{figures['p50_ms']:,} / {figures['p90_ms']:,} / {figures['max_ms']:,} ms"


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "0/0"


def render(result: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in result["versions"].items())
    lines = [
        f"Measured {result['date']} on {result['nproc']} × {result['cpu']}, Python {result['python']}, {versions}; "
        f"the whole run took {result['wall_s']:.0f} s.",
        "",
    ]
    for name, engine in result["engines"].items():
        lines += [f"### {ENGINE_TITLES.get(name, name)}", ""]
        if not engine.get("measured"):
            lines += [f"{ENGINE_TITLES.get(name, name).split(' ')[0]}: {engine['reason']}.", ""]
            if name == "vosk":
                lines += [*_published(engine.get("published_cer", {})), ""]
            continue
        lines += [*_summary(name, engine, result["targets"]), ""]
        lines += [*_concurrency(name, engine["concurrency"]), ""]
        lines += [*_accuracy(engine["accuracy"]), ""]
        if "cer" in engine:
            lines += [*_cer(engine["cer"], engine.get("published_cer", {})), ""]
        lines += [*_e2e(engine["e2e"]), ""]
    if result.get("errors"):
        lines += ["Errors: " + "; ".join(result["errors"]), ""]
    lines += [*_method(result), ""]
    return "\n".join(lines).rstrip()


def _summary(name: str, engine: dict[str, Any], targets: dict[str, Any]) -> list[str]:
    load, rtf, conc = engine["load"], engine["rtf"], engine["concurrency"]
    fp, e2e = engine["first_partial_engine"], engine["e2e"]
    acc = engine["accuracy"]
    kept = conc["max_streams_kept_up"]
    tried = [lv["streams"] for lv in conc["levels"]]
    if conc["all_levels_kept_up"]:
        kept_text = f"**{kept}** (every level tried, up to {tried[-1]}, kept up: the ceiling is higher)"
    else:
        kept_text = f"**{kept}** (levels tried: {', '.join(map(str, tried))})"
    stream_target = targets.get(f"{name}_streams", {})
    fp_target = targets.get(f"{name}_first_partial_p90_ms", {})
    rows = [
        ("Model load in a fresh process (import excluded; PocketSphinx: with grammar and first decoder pair)",
         f"{load['load_s']:.2f} s", "", ""),
        ("Process RSS after load", f"{load['rss_after_load_mb']:,.0f} MB", "", ""),
        ("Memory per concurrent stream", _per_stream_memory(name, load, conc), "", ""),
        ("Time to make one more stream ready", f"{load['per_stream_s']:.2f} s", "", ""),
        ("RTF per stream, shared TTS clips 8 kHz", _rtf(rtf["shared_tts"]), "", ""),
        ("RTF per stream, shared real speech 8 kHz", _rtf(rtf["shared_real"]), "", ""),
        ("RTF per stream, synthesized navigation utterances", _rtf(rtf["navigation"]), "", ""),
        (f"Concurrent real-time streams kept up ({conc['workers']} workers)", kept_text,
         f"≥ {stream_target.get('target', '')}", _met(stream_target)),
        ("Pool start (workers load, every stream's decoders made)",
         f"{conc['pool_start_s']:.1f} s for {conc['workers']} × {conc['streams_per_worker']} streams", "", ""),
        ("First partial on the seat, end to end: p50 / p90 / max",
         _ms(e2e) + f" ({e2e['with_transcript']} utterances)" if e2e.get("measured") else e2e.get("reason", ""),
         "p90 ≤ 1,000 ms", _met(fp_target)),
        *_under_load(conc, stream_target.get("target")),
        ("First partial, engine only (fed as in real time): p50 / p90 / max",
         _ms(fp) + f" ({fp['utterances']} utterances)", "", ""),
        ("Navigation: in-domain routed right (accepted or confirmed, right target)",
         _pct(acc["routed_right"], acc["in_domain"]), "", ""),
        ("Navigation: in-domain sent to a confirmation / out-of-domain rejected",
         f"{_pct(acc['confirmed'], acc['in_domain'])} / {_pct(acc['out_rejected'], acc['out_of_domain'])}", "", ""),
    ]  # fmt: skip
    return figure_table(rows)


def _under_load(conc: dict[str, Any], target: int | None) -> list[tuple[str, str, str, str]]:
    """The first partial through the pool at the target's level (or the largest below it)."""
    levels = [lv for lv in conc["levels"] if target is None or lv["streams"] <= target]
    if not levels:
        return []
    level = levels[-1]
    return [
        (
            f"First partial through the pool with {level['streams']} concurrent streams: p50 / p90 / max",
            _ms(level["first_partial"]) + f" ({level['first_partial']['utterances']} utterances)",
            "",
            "",
        )
    ]


def _rtf(figures: dict[str, Any]) -> str:
    return (
        f"{figures['rtf']:.4f} ({figures['audio_s']:.1f} s of audio in {figures['processing_s']:.2f} s, "
        f"{figures['files']} files; worst file {figures['rtf_max_file']:.4f})"
    )


def _per_stream_memory(name: str, load: dict[str, Any], conc: dict[str, Any]) -> str:
    probe = f"{load['per_stream_mb']:,.1f} MB ({load['extra_streams']} more streams in the load process)"
    workers = ", ".join(f"{rss:,.0f}" for rss in conc["worker_rss_mb"])
    pool = f"; pool workers {workers} MB RSS with {conc['streams_per_worker']} streams each"
    if "rss_per_stream_mb" in conc:
        pool += f" = {conc['rss_per_stream_mb']:,.1f} MB per stream"
    return probe + pool


def _concurrency(name: str, conc: dict[str, Any]) -> list[str]:
    out = [
        f"Concurrent streams: one `AsrPool` of {conc['workers']} worker processes × {conc['streams_per_worker']} "
        f"streams (max_pending_chunks {conc['max_pending_chunks']}); each level opens N streams and feeds each "
        f"100 ms of audio every 100 ms for {conc['level_s']:g} s, all on the same tick, as the media worker's pump "
        f"does. The audio is a {conc['track_s']:.0f} s track ({100 * conc['track_speech_fraction']:.0f} % speech) "
        "looped from a different offset per stream. A level keeps up when no stream overflowed or failed and none "
        f"ever had more than {conc['max_lag_s']:g} s of audio sent but not processed (backlog, sampled before "
        "every feed). First partial = utterance onset to the first segment event in this process; partial lag = "
        "arrival of a partial minus the moment the audio it covers was complete (PocketSphinx's endpointer "
        "holds about 0.5 s before decoding starts).",
        "",
        "| streams | kept up | backlog max | drained after | overflowed / errors | workers CPU % | bench CPU % "
        "| other CPU % | first partial p50 / p90 / max | partial lag p50 / p90 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in conc["levels"]:
        cpu = lv["cpu_pct"]
        out.append(
            f"| {lv['streams']} | {'yes' if lv['kept_up'] else '**no**'} | {lv['backlog_max_s']:.1f} s "
            f"| {lv['drain_s']:.2f} s | {lv['overflowed']} / {lv['errors']} "
            f"| {' + '.join(f'{c:.0f}' for c in cpu['workers'])} | {cpu['bench']:.0f} | {cpu.get('other', 0):.0f} "
            f"| {_ms(lv['first_partial'])} | {lv['partial_lag']['p50_ms']:,} / {lv['partial_lag']['p90_ms']:,} ms |"
        )
    notes = []
    if conc.get("cpu_pct_per_stream"):
        note = (
            f"CPU per stream at the largest level that kept up: {conc['cpu_pct_per_stream']:.2f} % of a core "
            "(the workers' average over the level)."
        )
        half = conc["max_lag_s"] / 2
        full = 0.95 * 100 * conc["workers"]
        saturated = [lv["streams"] for lv in conc["levels"] if lv["cpu_pct"]["machine"] >= full]
        bursty = [
            lv["streams"]
            for lv in conc["levels"]
            if lv["backlog_max_s"] >= half and lv["cpu_pct"]["machine"] < full and max(lv["cpu_pct"]["workers"]) < 90
        ]
        if saturated:
            note += (
                f" At {', '.join(map(str, saturated))} streams the machine's CPUs were saturated (busy ≥ {full:.0f} % "
                "of the pool, this process and everything else together): the workers got what the rest left them."
            )
        if bursty:
            note += (
                f" At {', '.join(map(str, bursty))} streams the backlog reached {half:g} s or more with CPU to spare: "
                "it grows in bursts, when many of a worker's streams are in speech at once."
            )
        notes.append(note)
    others = [lv["cpu_pct"].get("other", 0.0) for lv in conc["levels"]]
    if others and max(others) >= 25:
        notes.append(
            f"Other processes used {min(others):.0f}-{max(others):.0f} % of the machine's {100 * conc['workers']} % "
            "during the levels (the `other` column: work this benchmark did not start, on a shared machine), so "
            "the stream counts are what the pool got alongside it: a lower bound for a machine of its own."
        )
    if conc.get("levels_left_out_for_memory"):
        notes.append(
            f"Levels {', '.join(map(str, conc['levels_left_out_for_memory']))} were not tried: they need more "
            f"memory than {conc['mem_available_mb']:,.0f} MB × 0.6 free at the start."
        )
    if name == "pocketsphinx" and conc.get("rss_per_stream_mb"):
        notes.append(
            f"Every PocketSphinx stream holds its own decoder pair ({conc['rss_per_stream_mb']:.0f} MB), all made "
            f"when the pool starts: {conc['workers']} × {conc['streams_per_worker']} streams took "
            f"{conc['pool_start_s']:.0f} s to start and {sum(conc['worker_rss_mb']) / 1024:.1f} GB."
        )
    return out + [line for note in notes for line in ("", note)]


def _accuracy(acc: dict[str, Any]) -> list[str]:
    n, n_out = acc["in_domain"], acc["out_of_domain"]
    speeds = ", ".join(f"{speed}: {v['routed_right']}/{v['n']}" for speed, v in acc["by_speed"].items())
    targets = ", ".join(f"{t} {v['keyword_right']}/{v['n']}" for t, v in acc["by_target"].items())
    return [
        "Navigation accuracy on the synthesized set of tests/asr/test_accuracy.py (espeak-ng cmn-latn-pinyin at "
        f"130/160/190 words per minute, 8 kHz; {n} in-domain, {n_out} out-of-domain utterances, "
        f"{acc['noise']} noise/silence clips; `decide` with the default thresholds). No target: synthesized speech "
        "bounds regressions, it does not predict callers.",
        "",
        "| measure | measured |",
        "|---|---|",
        f"| in-domain, best keyword right (before confidence) | {_pct(acc['keyword_right'], n)} |",
        f"| in-domain, accepted and right | {_pct(acc['accepted_right'], n)} |",
        f"| **in-domain accuracy**: routed right (accepted, or confirmed, with the right target) "
        f"| {_pct(acc['routed_right'], n)} |",
        f"| in-domain, confirm rate (asked 'did you mean ...?') | {_pct(acc['confirmed'], n)} |",
        f"| in-domain, confirmed with a wrong target | {_pct(acc['confirmed_wrong'], n)} |",
        f"| in-domain, accepted wrong | {_pct(acc['accepted_wrong'], n)} |",
        f"| in-domain, rejected (general queue) | {_pct(acc['rejected'], n)} |",
        f"| **out-of-domain rejected** | {_pct(acc['out_rejected'], n_out)} |",
        f"| out-of-domain confirmed / accepted | {acc['out_confirmed']} / {acc['out_accepted']} |",
        f"| noise and silence rejected | {_pct(acc['noise_rejected'], acc['noise'])} |",
        f"| routed right per speed | {speeds} |",
        f"| best keyword right per target | {targets} |",
    ]


def _cer(cer: dict[str, Any], published: dict[str, Any]) -> list[str]:
    out = [
        f"CER of `{cer.get('model', '')}` on the shared clips (final segments joined, punctuation and spaces "
        "removed, references from manifest.tsv):",
        "",
    ]
    for rate in ("8k", "16k"):
        if rate in cer:
            figures = cer[rate]
            out.append(
                f"- {rate}: **{figures['cer']:.3f}** ({figures['edits']} edits over {figures['chars']} "
                f"characters, {figures['files']} files)"
            )
    return [*out, "", *_published(published)]


def _published(published: dict[str, Any]) -> list[str]:
    models = {k: v for k, v in published.items() if k != "source"}
    if not models:
        return []
    parts = [
        f"{model}: {v['speechio_02']} (SpeechIO-02), {v['speechio_06']} (SpeechIO-06), {v['thchs']} (THCHS)"
        for model, v in models.items()
    ]
    return [f"Published CER (%, as quoted in {published.get('source', 'baseline.md')}): " + "; ".join(parts) + "."]


def _e2e(e2e: dict[str, Any]) -> list[str]:
    if not e2e.get("measured"):
        return [f"End to end: not measured: {e2e.get('reason', '')}."]
    heard = "; ".join(
        f"{s['latency_ms']:,} ms '{s['text']}'" if s.get("latency_ms") is not None else "none" for s in e2e["samples"]
    )
    skew = e2e.get("capture_vs_estimate_ms") or []
    return [
        "End to end: a baresip caller dials the media worker (shipped flow, live ASR on: 1 worker × 2 streams), "
        "presses 0 and is offered to seat a1, which accepts; a1's phone rings unanswered, so the caller stays "
        f"queued and transcribed. Its microphone is 4 s of silence, then {e2e['utterances']} navigation phrases "
        "(espeak-ng, 160 wpm) 2 s apart. Onset = the caller's first RTP packet at -40 dBFS or more after a quiet "
        f"stretch ({e2e['onsets_from']}); latency = the seat's receipt of the first `transcript` frame after it, "
        f"same wall clock. Media worker ready in {e2e['worker_start_s']:.1f} s (two ASR pools: dictation and "
        "navigation, when the flow has a speech menu).",
        "",
        f"- first frame after each onset: {heard}",
        f"- {e2e['transcript_frames']} transcript frames reached the seat, {e2e['finals']} of them final",
    ] + ([f"- capture vs. 'established + offset' estimate: {', '.join(map(str, skew))} ms"] if skew else [])


def _method(result: dict[str, Any]) -> list[str]:
    return [
        "How to run: `.venv/bin/python -m bench asr` (about 3 minutes; `--asr-streams 10,50,100,150` tries "
        "other levels, `--asr-level-seconds`, `--asr-max-lag`, `--asr-no-e2e`). It needs espeak-ng and sox "
        "(`apt-get install espeak-ng sox`), the PocketSphinx model (`../shared/models` or "
        "`POCKETSPHINX_MODEL_PATH`), the shared audio (`../shared/audio`); the end-to-end part needs baresip and "
        "redis-server, and root or CAP_NET_RAW for the RTP capture (without it onsets are estimated). Vosk is "
        "measured when `VOSK_MODEL_PATH` points at an unzipped model (docs/asr.md, 'Installing the Vosk model'). "
        "RTF = processing time / audio time for one stream in one process (100 ms chunks, VAD and both "
        "PocketSphinx decoders included); load and memory are measured in a fresh process.",
    ]
