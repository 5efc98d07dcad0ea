"""ASR benchmark: offline Mandarin speech per engine on this machine (PocketSphinx always, Vosk with a model).

Per engine:

1. model load time and memory, in a fresh process (bench/asr/engine.py);
2. one stream at a time, in this process: real-time factor on the shared 8 kHz clips
   (../shared/audio, tts/ and real/) and on the synthesized navigation set of
   tests/asr/test_accuracy.py; navigation accuracy on that set (the test's method and
   thresholds); the engine-only first partial (onset -> first partial segment, fed as in real time);
   for Vosk, CER on the shared clips beside the model's published figure;
3. concurrent real-time streams through an `AsrPool` (bench/asr/load.py): levels of N streams fed
   100 ms every 100 ms until one level does not keep up;
4. first partial on a seat, end to end through a real media worker and a baresip caller
   (bench/asr/e2e.py).

Vosk runs only when VOSK_MODEL_PATH is set; without it the result says so plainly and the benchmark
still succeeds. Processes started here (the probe, the pool's workers, redis-server, the media
worker, baresip phones) are all stopped before `run` returns, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import BenchError
from bench.asr.report import render as render
from bench.common.stats import machine

# The engines, numpy and the test helpers are imported when the benchmark runs, not when `python -m bench`
# builds its parser: the other benchmarks do not pay for them.
if TYPE_CHECKING:
    from bench.asr.audio import Clip
    from bench.asr.engine import Decoded
    from gateway.asr.settings import AsrSettings

NAME = "asr"
TITLE = "ASR: offline Mandarin recognition (PocketSphinx navigation, Vosk dictation)"
TARGETS = {"pocketsphinx": 50, "vosk": 8}  # concurrent real-time streams on 2 cores
FIRST_PARTIAL_TARGET_MS = 1000
MEMORY_SHARE = 0.6  # the pool may use at most this share of MemAvailable


@dataclass(frozen=True)
class Options:
    streams: tuple[int, ...] = (10, 25, 50, 75, 100, 125)
    vosk_streams: tuple[int, ...] = (2, 4, 8, 12, 16)
    level_seconds: float = 8.0
    max_lag: float = 1.0
    e2e: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        return cls(
            streams=_levels(args.asr_streams),
            vosk_streams=_levels(args.asr_vosk_streams),
            level_seconds=args.asr_level_seconds,
            max_lag=args.asr_max_lag,
            e2e=not args.asr_no_e2e,
        )


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise BenchError(f"stream levels must be numbers separated by commas, not {text!r}") from None
    if not levels or levels[0] < 1:
        raise BenchError(f"stream levels must be positive: {text!r}")
    return levels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("asr")
    defaults = Options()
    group.add_argument(
        "--asr-streams",
        default=",".join(map(str, defaults.streams)),
        help="PocketSphinx concurrent-stream levels, tried in order until one does not keep up (%(default)s)",
    )
    group.add_argument(
        "--asr-vosk-streams",
        default=",".join(map(str, defaults.vosk_streams)),
        help="Vosk concurrent-stream levels (%(default)s)",
    )
    group.add_argument(
        "--asr-level-seconds", type=float, default=defaults.level_seconds, help="seconds per level (%(default)s)"
    )
    group.add_argument(
        "--asr-max-lag",
        type=float,
        default=defaults.max_lag,
        help="a level keeps up while no stream is more than this many seconds behind (%(default)s)",
    )
    group.add_argument("--asr-no-e2e", action="store_true", help="skip the end-to-end (media worker, seat) part")


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if options.level_seconds < 2 or options.max_lag <= 0:
        raise BenchError("--asr-level-seconds must be at least 2 and --asr-max-lag positive")
    from bench.asr.audio import RATE, check_tools, navigation_set, shared_clips
    from bench.asr.load import progress
    from gateway.asr.settings import AsrSettings

    check_tools()
    started = time.monotonic()
    result: dict[str, Any] = {"bench": NAME, **machine(), "versions": versions(), "errors": []}
    result["options"] = {
        "streams": list(options.streams),
        "vosk_streams": list(options.vosk_streams),
        "level_s": options.level_seconds,
        "max_lag_s": options.max_lag,
    }
    with tempfile.TemporaryDirectory(prefix="bench-asr-") as tmp:
        folder = Path(tmp)
        progress("synthesizing the navigation set (espeak-ng, sox)")
        (folder / "nav").mkdir()
        navigation = navigation_set(folder / "nav")
        shared = shared_clips(RATE)
        engines: dict[str, dict[str, Any]] = {}
        engines["pocketsphinx"] = measure_engine(AsrSettings(), navigation, shared, options, folder, result)
        vosk_path = os.environ.get("VOSK_MODEL_PATH")
        if vosk_path:
            settings = AsrSettings(engine="vosk", vosk_model_path=vosk_path)
            engines["vosk"] = measure_engine(settings, navigation, shared, options, folder, result)
        else:
            progress("Vosk: no model here (VOSK_MODEL_PATH not set), not measured")
            engines["vosk"] = {"measured": False, "reason": "no model here (VOSK_MODEL_PATH is not set), not measured"}
        engines["vosk"]["published_cer"] = published_cer()
    result["engines"] = engines
    result["targets"] = targets(engines)
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["ok"] = not result["errors"]
    return result


def measure_engine(
    settings: AsrSettings,
    navigation: list[Clip],
    shared: list[Clip],
    options: Options,
    folder: Path,
    result: dict[str, Any],
) -> dict[str, Any]:
    from bench.asr.audio import RATE
    from bench.asr.engine import accuracy, decode, first_partial, probe, rtf
    from bench.asr.load import progress
    from gateway.asr.engine import AsrError, load_recognizer

    name = settings.engine
    out: dict[str, Any] = {"measured": True}
    progress(f"{name}: model load and memory (fresh process)")
    out["load"] = probe(settings, shared[0].pcm[: RATE * 2 * 3])
    progress(f"{name}: decoding the shared clips and the navigation set one stream at a time")
    try:
        recognizer = load_recognizer(settings)
    except AsrError as exc:
        raise BenchError(f"{name} cannot load: {exc}") from exc
    try:
        # The navigation set first, on fresh decoders as in the test: a PocketSphinx decoder pair carries
        # state (noise and cepstral-mean estimates) from one stream to the next, so the order matters.
        decoded_nav = [decode(recognizer, clip) for clip in navigation]
        decoded_shared = [decode(recognizer, clip) for clip in shared]
        out["rtf"] = {
            "shared_tts": rtf([d for d in decoded_shared if d.clip.kind == "tts"]),
            "shared_real": rtf([d for d in decoded_shared if d.clip.kind == "real"]),
            "navigation": rtf([d for d in decoded_nav if d.clip.kind in ("in", "out")]),
        }
        out["accuracy"] = accuracy(decoded_nav)
        out["first_partial_engine"] = first_partial(recognizer, [c for c in navigation if c.kind == "in"])
        if name == "vosk":
            out["cer"] = vosk_cer(recognizer, decoded_shared, settings)
    finally:
        recognizer.close()
    levels = list(options.vosk_streams if name == "vosk" else options.streams)
    out["concurrency"] = concurrency(settings, levels, navigation, shared, options, out["load"])
    if options.e2e:
        out["e2e"] = end_to_end(name, folder / f"e2e-{name}", result)
    else:
        out["e2e"] = {"measured": False, "reason": "skipped (--asr-no-e2e)"}
    return out


def concurrency(
    settings: AsrSettings,
    levels: list[int],
    navigation: list[Clip],
    shared: list[Clip],
    options: Options,
    load: dict[str, Any],
) -> dict[str, Any]:
    from bench.asr.audio import track
    from bench.asr.engine import mem_available_mb
    from bench.asr.load import Ramp, progress

    name = settings.engine
    if name == "vosk":  # dictation: callers describing their problem, the shared hotline sentences
        audio = track(shared, gap=1.0)
    else:  # navigation: short phrases with pauses, what callers say at a speech menu
        audio = track([c for c in navigation if c.kind in ("in", "out")], gap=1.0)
    available = mem_available_mb()
    budget = MEMORY_SHARE * available
    per_worker = load["rss_after_load_mb"]
    fits = [n for n in levels if 2 * per_worker + n * load["per_stream_mb"] <= budget]
    dropped = [n for n in levels if n not in fits]
    if dropped:
        progress(f"{name}: levels {dropped} left out: they would need more than {budget:.0f} MB")
    if not fits:
        raise BenchError(f"{name}: not even {levels[0]} streams fit in {budget:.0f} MB ({MEMORY_SHARE:.0%} of free)")
    progress(f"{name}: concurrent real-time streams, levels {fits}, {options.level_seconds:g} s each")
    ramp = Ramp(settings, audio, fits, options.level_seconds, options.max_lag).run()
    ramp["mem_available_mb"] = available
    ramp["levels_left_out_for_memory"] = dropped
    spw = ramp["streams_per_worker"]
    if name == "pocketsphinx" and spw > 1:  # a worker's RSS = the loaded process + its prepared pairs
        ramp["rss_per_stream_mb"] = round((max(ramp["worker_rss_mb"]) - per_worker) / (spw - 1), 1)
    passed = [lv for lv in ramp["levels"] if lv["kept_up"]]
    if passed:
        top = passed[-1]
        per_stream = sum(top["cpu_pct"]["workers"]) / top["streams"]
        ramp["cpu_pct_per_stream"] = round(per_stream, 2)
    return ramp


def end_to_end(name: str, folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    from bench.asr import e2e as asr_e2e
    from bench.asr.load import progress

    missing = [tool for tool in ("baresip", "redis-server") if shutil.which(tool) is None]
    if missing:
        return {"measured": False, "reason": f"{', '.join(missing)} not installed"}
    progress(f"{name}: first partial on a seat, end to end (media worker, baresip caller, seat)")
    folder.mkdir()
    try:
        return asr_e2e.run(folder, name)
    except Exception as exc:  # recorded (the result is then not ok); the other figures are kept
        message = f"{name} end to end: {type(exc).__name__}: {exc}"
        progress(message)
        result["errors"].append(message)
        return {"measured": False, "reason": message}


def vosk_cer(recognizer: Any, decoded_8k: list[Decoded], settings: AsrSettings) -> dict[str, Any]:
    from bench.asr.audio import shared_clips
    from bench.asr.engine import decode, transcript_cer

    out: dict[str, Any] = {"8k": transcript_cer(decoded_8k)}
    with contextlib.suppress(BenchError):  # the 16 kHz copies: the rate the published figures are for
        out["16k"] = transcript_cer([decode(recognizer, clip) for clip in shared_clips(16000)])
    root = settings.vosk_dir()
    out["model"] = root.name if root else ""
    return out


_NUMBER = r"\d+(?:\.\d+)?"
_VERSION = r"\d+(?:\.\d+)*"


def published_cer(path: Path | None = None) -> dict[str, Any]:
    """The model's published CER as the shared audio's baseline.md (../shared/audio) quotes it."""
    if path is None:
        from peers.speech import SHARED_AUDIO

        path = SHARED_AUDIO / "baseline.md"
    if not path.exists():
        return {}
    text = " ".join(path.read_text(encoding="utf-8").split())
    match = re.search(
        rf"Published CER for (vosk-model-small-cn-{_VERSION}): ({_NUMBER}) \(SpeechIO-02\), ({_NUMBER}) "
        rf"\(SpeechIO-06\), ({_NUMBER}) \(THCHS\); for (vosk-model-cn-{_VERSION}): ({_NUMBER}), ({_NUMBER}), "
        rf"({_NUMBER})",
        text,
    )
    if match is None:
        return {}
    small, big = match.group(1), match.group(5)
    return {
        small: {"speechio_02": float(match[2]), "speechio_06": float(match[3]), "thchs": float(match[4])},
        big: {"speechio_02": float(match[6]), "speechio_06": float(match[7]), "thchs": float(match[8])},
        "source": str(path),
    }


def targets(engines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, target in TARGETS.items():
        engine = engines.get(name, {})
        if not engine.get("measured"):
            out[f"{name}_streams"] = {"target": target, "met": None}
            continue
        kept = engine["concurrency"]["max_streams_kept_up"]
        out[f"{name}_streams"] = {"target": target, "met": kept >= target, "measured": kept}
        e2e = engine.get("e2e", {})
        if e2e.get("measured") and e2e.get("with_transcript"):
            p90 = e2e["p90_ms"]
            out[f"{name}_first_partial_p90_ms"] = {
                "target": FIRST_PARTIAL_TARGET_MS, "met": p90 <= FIRST_PARTIAL_TARGET_MS, "measured": p90,
            }  # fmt: skip
        else:
            out[f"{name}_first_partial_p90_ms"] = {"target": FIRST_PARTIAL_TARGET_MS, "met": None}
    return out


def versions() -> dict[str, str]:
    found = {}
    for package in ("pocketsphinx", "vosk", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    return found
