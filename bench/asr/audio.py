"""Audio for the ASR benchmark: the team's shared clips, the synthesized navigation set, speech onsets.

The navigation set is made exactly as tests/asr/test_accuracy.py makes it (its phrases, speeds and
`synthesize`/`sox_noise` helpers are imported, not copied), so the accuracy figures here and there
are the same measurement. Speech onset = the first 10 ms frame whose RMS reaches -40 dBFS.
"""

from __future__ import annotations

import csv
import re
import shutil
import wave
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import BenchError
from peers.speech import IN_DOMAIN, OUT_OF_DOMAIN, SHARED_AUDIO, SPEEDS, read_pcm, sox_noise, synthesize

RATE = 8000
CHUNK_BYTES = RATE * 2 // 10  # 100 ms of 16-bit mono at 8 kHz: what the media worker sends per pump
ONSET_RMS = 32768 * 10 ** (-40 / 20)  # -40 dBFS
NOISES = ("whitenoise", "pinknoise", "brownnoise")


@dataclass(frozen=True)
class Clip:
    """One utterance or file. `target` is the navigation target (None: out of domain / noise / shared)."""

    name: str
    kind: str  # "tts" / "real" (shared), "in" / "out" / "noise" (navigation set)
    pcm: bytes
    rate: int
    text: str = ""
    target: str | None = None
    speed: int = 0

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


def check_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"{' and '.join(missing)} not installed (apt-get install espeak-ng sox)")


def shared_clips(rate: int = RATE, root: Path = SHARED_AUDIO) -> list[Clip]:
    """The shared test audio at `rate` (8 kHz: tts/*_8k.wav and real/*_8k.wav), with reference texts."""
    manifest = root / "manifest.tsv"
    if not manifest.exists():
        raise BenchError(f"the shared test audio is missing: no {manifest}")
    clips = []
    with manifest.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["sample_rate"]) != rate:
                continue
            file_rate, pcm = read_pcm(root / row["file"])
            kind = row["file"].split("/", 1)[0]
            clips.append(Clip(Path(row["file"]).stem, kind, pcm, file_rate, row["reference_text"]))
    if not clips:
        raise BenchError(f"{manifest} lists no {rate} Hz file")
    return clips


def navigation_set(folder: Path) -> list[Clip]:
    """tests/asr/test_accuracy.py's set: in-domain and out-of-domain phrases x speeds, then noise."""
    jobs: list[tuple[str, str | None, int, Path]] = []
    phrases: list[tuple[str, str | None]] = [*IN_DOMAIN.items(), *((text, None) for text in OUT_OF_DOMAIN)]
    for i, (text, target) in enumerate(phrases):
        for speed in SPEEDS:
            jobs.append((text, target, speed, folder / f"{i}_{speed}.wav"))
    with ThreadPoolExecutor(4) as pool:  # espeak-ng and sox are separate processes: overlap them
        list(pool.map(lambda job: synthesize(job[0], job[3], speed=job[2]), jobs))
        noise_paths = [*pool.map(lambda kind: sox_noise(folder / f"{kind}.wav", 3, kind), NOISES)]
    noise_paths.append(sox_noise(folder / "quiet.wav", 3, volume=0.001))
    clips = []
    for text, target, speed, path in jobs:
        rate, pcm = read_pcm(path)
        clips.append(Clip(path.stem, "in" if target else "out", pcm, rate, text, target, speed))
    for path in noise_paths:
        rate, pcm = read_pcm(path)
        clips.append(Clip(path.stem, "noise", pcm, rate))
    return clips


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)


def frame_rms(pcm: bytes, rate: int, frame_s: float = 0.01) -> np.ndarray:
    values = samples(pcm)
    size = max(1, int(rate * frame_s))
    usable = len(values) - len(values) % size
    if usable == 0:
        return np.zeros(0)
    frames = values[:usable].reshape(-1, size)
    rms: np.ndarray = np.sqrt((frames**2).mean(axis=1))
    return rms


def onsets(pcm: bytes, rate: int, min_gap: float = 0.8, frame_s: float = 0.01) -> list[float]:
    """Seconds where speech starts: a loud frame at least `min_gap` s after the previous loud one."""
    found: list[float] = []
    last_loud: float | None = None  # end of the last loud frame
    for index, is_loud in enumerate(frame_rms(pcm, rate, frame_s) >= ONSET_RMS):
        at = index * frame_s
        if is_loud:
            if last_loud is None or at - last_loud >= min_gap:
                found.append(round(at, 3))
            last_loud = at + frame_s
    return found


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(2 * int(rate * seconds))


def padded(clip: Clip, before: float, after: float) -> Clip:
    pcm = silence(before, clip.rate) + clip.pcm + silence(after, clip.rate)
    return Clip(clip.name, clip.kind, pcm, clip.rate, clip.text, clip.target, clip.speed)


@dataclass(frozen=True)
class Track:
    """A long stream of speech for one simulated caller: `pcm` plus the onset (s) of each utterance."""

    pcm: bytes
    onsets: tuple[float, ...]
    speech_fraction: float

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE

    def chunk(self, offset_chunks: int, index: int) -> bytes:
        """The `index`-th 100 ms chunk of the track started `offset_chunks` chunks in (looping)."""
        count = len(self.pcm) // CHUNK_BYTES
        at = (offset_chunks + index) % count * CHUNK_BYTES
        return self.pcm[at : at + CHUNK_BYTES]

    def onsets_from(self, offset_chunks: int, seconds: float) -> list[float]:
        """Onsets in stream time for a stream that starts `offset_chunks` in and lasts `seconds`."""
        shift = offset_chunks * 0.1
        length = (len(self.pcm) // CHUNK_BYTES) * 0.1
        out = []
        for lap in range(int((shift + seconds) // length) + 1):
            out += [o + lap * length - shift for o in self.onsets]
        return sorted(round(t, 3) for t in out if 0.3 <= t < seconds)


def track(clips: Sequence[Clip], gap: float) -> Track:
    """Clips one after the other, each followed by `gap` s of silence, cut to whole 100 ms chunks."""
    pcm = bytearray()
    for clip in clips:
        if clip.rate != RATE:
            raise BenchError(f"{clip.name}: {clip.rate} Hz, the load test feeds 8 kHz")
        pcm += clip.pcm + silence(gap)
    pcm = pcm[: len(pcm) - len(pcm) % CHUNK_BYTES]
    found = onsets(bytes(pcm), RATE, min_gap=min(0.8, gap * 0.8))
    loud = frame_rms(bytes(pcm), RATE) >= ONSET_RMS
    return Track(bytes(pcm), tuple(found), round(float(loud.mean()) if len(loud) else 0.0, 3))


def write_wav(path: Path, pcm: bytes, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)


def cer_text(text: str) -> str:
    """What CER compares: no spaces, no punctuation (，。？ and ASCII)."""
    return _PUNCTUATION.sub("", text)


def edit_distance(reference: str, hypothesis: str) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref_char in enumerate(reference, 1):
        current = [i]
        for j, hyp_char in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_char != hyp_char)))
        previous = current
    return previous[-1]


def cer(pairs: Iterable[tuple[str, str]]) -> tuple[float, int, int]:
    """(CER, edits, reference characters) over (reference, hypothesis) pairs."""
    edits = chars = 0
    for reference, hypothesis in pairs:
        ref, hyp = cer_text(reference), cer_text(hypothesis)
        edits += edit_distance(ref, hyp)
        chars += len(ref)
    return (round(edits / chars, 4) if chars else 0.0), edits, chars
