"""The engine alone, one stream at a time: model load and memory, RTF, accuracy, CER, first partial.

Load time and memory are measured in a fresh spawned process (this one has other things loaded).
Everything else decodes in this process with one recognizer, 100 ms chunks as the media worker
sends them. "Fed in real time" is reproduced without waiting: chunk i holds audio up to
(i + 1) x 100 ms, so it exists at that moment and its result exists when `feed` returns; a partial
that comes out of chunk i is therefore (i + 1) x 100 ms + that feed's processing time after the start
of the audio. Decoding is far faster than real time, so each feed finishes before the next chunk
would arrive and this equals what a clock-paced feed gives.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.asr.audio import Clip, cer, onsets, padded
from bench.common.stats import percentile
from gateway.asr.engine import Recognizer, Segment, load_recognizer
from gateway.asr.navigation import Thresholds, decide
from gateway.asr.settings import DEFAULT_TABLE, AsrSettings

CHUNK_S = 0.1


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# --- load time and memory, in a fresh process ----------------------------------------------------


def _probe(settings: AsrSettings, speech: bytes, extra_streams: int) -> dict[str, Any]:
    """Runs in a spawned process: import + load, then what `extra_streams` more streams cost."""
    before = rss_mb()
    started = time.perf_counter()
    recognizer = load_recognizer(settings)
    loaded = time.perf_counter()
    after_load = rss_mb()
    streams = []
    if settings.engine == "pocketsphinx":
        recognizer.prepare(1 + extra_streams)  # each pool stream holds its own decoder pair
    streams = [recognizer.open(8000) for _ in range(extra_streams)]
    prepared = time.perf_counter()
    for stream in streams:
        stream.feed(speech)  # Kaldi allocates as it decodes: measure streams that have heard speech
    after_streams = rss_mb()
    for stream in streams:
        stream.finish()
    recognizer.close()
    return {
        "python_rss_mb": before,
        "load_s": round(loaded - started, 3),
        "rss_after_load_mb": after_load,
        "extra_streams": extra_streams,
        "per_stream_s": round((prepared - loaded) / extra_streams, 3),
        "per_stream_mb": round((after_streams - after_load) / extra_streams, 1),
    }


def _probe_child(conn: Connection, settings: AsrSettings, speech: bytes, extra_streams: int) -> None:
    try:
        conn.send(_probe(settings, speech, extra_streams))
    except Exception as exc:  # the parent raises it
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def probe(settings: AsrSettings, speech: bytes, extra_streams: int = 2, timeout: float = 300.0) -> dict[str, Any]:
    """`_probe` in a fresh spawned process, which is always gone when this returns."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(
        target=_probe_child, args=(child, settings, speech, extra_streams), name="asr-probe", daemon=True
    )
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise BenchError(f"{settings.engine}: the load probe gave no answer within {timeout:.0f} s")
        try:
            result: dict[str, Any] = parent.recv()
        except EOFError:
            raise BenchError(f"{settings.engine}: the load probe died (exit code {process.exitcode})") from None
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        parent.close()
    if "error" in result:
        raise BenchError(f"{settings.engine} cannot load: {result['error']}")
    return result


# --- one stream at a time, in this process ---------------------------------------------------------


@dataclass
class Decoded:
    clip: Clip
    segments: list[Segment] = field(default_factory=list)
    processing_s: float = 0.0
    # (seconds from the start of the audio when the result exists, segment) for every segment
    timeline: list[tuple[float, Segment]] = field(default_factory=list)


def decode(recognizer: Recognizer, clip: Clip) -> Decoded:
    chunk = int(clip.rate * 2 * CHUNK_S)
    out = Decoded(clip)
    stream = recognizer.open(clip.rate)
    for index, at in enumerate(range(0, len(clip.pcm), chunk)):
        started = time.perf_counter()
        got = stream.feed(clip.pcm[at : at + chunk])
        spent = time.perf_counter() - started
        out.processing_s += spent
        ready = min((index + 1) * CHUNK_S, clip.seconds) + spent
        out.timeline += [(ready, segment) for segment in got]
        out.segments += got
    started = time.perf_counter()
    got = stream.finish()
    spent = time.perf_counter() - started
    out.processing_s += spent
    out.timeline += [(clip.seconds + spent, segment) for segment in got]
    out.segments += got
    return out


def rtf(decoded: Sequence[Decoded]) -> dict[str, Any]:
    audio = sum(d.clip.seconds for d in decoded)
    spent = sum(d.processing_s for d in decoded)
    per_file = sorted(d.processing_s / d.clip.seconds for d in decoded if d.clip.seconds > 0)
    return {
        "files": len(decoded),
        "audio_s": round(audio, 1),
        "processing_s": round(spent, 3),
        "rtf": round(spent / audio, 4) if audio else 0.0,
        "rtf_max_file": round(per_file[-1], 4) if per_file else 0.0,
    }


def accuracy(decoded: Sequence[Decoded]) -> dict[str, Any]:
    """The tally of tests/asr/test_accuracy.py, plus per speed and per target."""
    tally: dict[str, Counter[str]] = {"in": Counter(), "out": Counter(), "noise": Counter()}
    by_speed: dict[str, Counter[str]] = {}
    by_target: dict[str, Counter[str]] = {}
    for d in decoded:
        decision = decide(d.segments, DEFAULT_TABLE, Thresholds())
        clip = d.clip
        if clip.kind != "in":
            tally[clip.kind][decision.action] += 1
            continue
        right = decision.target == clip.target
        outcome = "reject" if decision.action == "reject" else f"{decision.action}_{'right' if right else 'wrong'}"
        tally["in"][outcome] += 1
        scores: dict[str, float] = decision.evidence.get("scores", {})  # type: ignore[assignment]
        best = max(scores, key=lambda target: scores[target]) if scores else None
        keyword_right = "keyword_right" if best == clip.target else "keyword_wrong"
        tally["in"][keyword_right] += 1
        for key, table in ((str(clip.speed), by_speed), (str(clip.target), by_target)):
            table.setdefault(key, Counter())[outcome] += 1
            table[key][keyword_right] += 1
            table[key]["n"] += 1
    n_in = sum(tally["in"][k] for k in ("accept_right", "accept_wrong", "confirm_right", "confirm_wrong", "reject"))
    n_out, n_noise = sum(tally["out"].values()), sum(tally["noise"].values())

    def share(count: int, total: int) -> float:
        return round(count / total, 3) if total else 0.0

    def routed(counts: Counter[str]) -> int:
        return counts["accept_right"] + counts["confirm_right"]

    return {
        "in_domain": n_in,
        "accepted_right": tally["in"]["accept_right"],
        "routed_right": routed(tally["in"]),
        "confirmed": tally["in"]["confirm_right"] + tally["in"]["confirm_wrong"],
        "confirmed_wrong": tally["in"]["confirm_wrong"],
        "accepted_wrong": tally["in"]["accept_wrong"],
        "rejected": tally["in"]["reject"],
        "keyword_right": tally["in"]["keyword_right"],
        "accuracy": share(routed(tally["in"]), n_in),
        "accepted_right_rate": share(tally["in"]["accept_right"], n_in),
        "confirm_rate": share(tally["in"]["confirm_right"] + tally["in"]["confirm_wrong"], n_in),
        "out_of_domain": n_out,
        "out_rejected": tally["out"]["reject"],
        "out_confirmed": tally["out"]["confirm"],
        "out_accepted": tally["out"]["accept"],
        "out_rejection_rate": share(tally["out"]["reject"], n_out),
        "noise": n_noise,
        "noise_rejected": tally["noise"]["reject"],
        "by_speed": {k: {"n": v["n"], "routed_right": routed(v)} for k, v in sorted(by_speed.items())},
        "by_target": {k: {"n": v["n"], "keyword_right": v["keyword_right"], "routed_right": routed(v)}
                      for k, v in by_target.items()},
    }  # fmt: skip


def first_partial(recognizer: Recognizer, clips: Iterable[Clip], lead: float = 1.0) -> dict[str, Any]:
    """Onset to the first partial (or, lacking one, the first segment) for utterances after `lead` s of silence."""
    latencies: list[float] = []
    no_partial = no_result = 0
    for clip in clips:
        d = decode(recognizer, padded(clip, lead, 1.0))
        found = onsets(d.clip.pcm, d.clip.rate)
        if not found:
            continue
        timeline = [(at, segment) for at, segment in d.timeline if at >= found[0]]
        partials = [at for at, segment in timeline if not segment.final]
        first = partials[0] if partials else (timeline[0][0] if timeline else None)
        no_partial += not partials
        if first is None:
            no_result += 1
            continue
        latencies.append(first - found[0])
    return {"utterances": len(latencies) + no_result, "no_partial": no_partial, "no_result": no_result,
            **summary(latencies)}  # fmt: skip


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / max in ms; zeros for no samples (the counts beside say so)."""
    if not seconds:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(seconds)
    return {
        "p50_ms": round(percentile(ordered, 0.5) * 1000),
        "p90_ms": round(percentile(ordered, 0.9) * 1000),
        "max_ms": round(ordered[-1] * 1000),
    }


def transcript_cer(decoded: Sequence[Decoded]) -> dict[str, Any]:
    pairs = [(d.clip.text, "".join(s.raw for s in d.segments if s.final)) for d in decoded]
    value, edits, chars = cer(pairs)
    return {"cer": value, "edits": edits, "chars": chars, "files": len(pairs)}
