"""Batch path: a WAV file through the same Stream code as live audio, and the `transcribe` CLI.

Input rules (each violation is an `AudioFormatError` naming the file and the fix):
* 0-byte files, non-RIFF/WAVE files, truncated headers, compressed or float WAVs: rejected;
* sample width must be 16 bits (we do not guess at 8-bit offsets or 24-bit scaling; sox converts);
* stereo/multichannel: downmixed by averaging the channels (a 2-channel call recording then holds
  caller and agent together; record legs separately when they must be told apart);
* any rate from 8 to 48 kHz: the engine's stream resamples to its model's rate;
* longer than `max_seconds`: rejected, so a runaway file cannot occupy a worker for hours.
Silence gives an empty transcript; noise gives whatever the engine makes of it, in bounded time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gateway.asr.engine import (
    SAMPLE_WIDTH,
    AsrUnavailable,
    AudioFormatError,
    Recognizer,
    Segment,
    check_rate,
    load_recognizer,
)
from gateway.asr.settings import AsrSettings

MAX_SECONDS = 3 * 3600.0
_FORMAT_NAMES = {3: "IEEE float", 6: "A-law", 7: "µ-law", 0x55: "MP3", 0xFFFE: "extensible"}
_CONVERT = "convert it with `sox IN.wav -b 16 -e signed-integer OUT.wav`"


@dataclass(frozen=True, slots=True)
class WavAudio:
    pcm: bytes  # 16-bit LE mono
    sample_rate: int
    channels: int  # in the file, before the downmix

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_WIDTH / self.sample_rate


@dataclass(frozen=True, slots=True)
class Transcript:
    path: str
    text: str
    raw: str
    segments: list[Segment]
    seconds: float
    sample_rate: int
    channels: int
    engine: str
    elapsed: float = field(compare=False)

    @property
    def rtf(self) -> float:
        return self.elapsed / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["segments"] = [{k: v for k, v in asdict(s).items() if k != "detail"} for s in self.segments]
        out["rtf"] = round(self.rtf, 4)
        return out


def _check_header(path: Path) -> None:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(12)
    except FileNotFoundError:
        raise AudioFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioFormatError(f"{path}: is a directory, not a WAV file") from None
    if size == 0:
        raise AudioFormatError(f"{path}: empty file (0 bytes)")
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioFormatError(f"{path}: not a WAV file (no RIFF/WAVE header); {_CONVERT}")


def _wave_error(path: Path, exc: Exception) -> AudioFormatError:
    message = str(exc)
    if message.startswith("unknown format:"):
        code = int(message.split(":")[1])
        name = _FORMAT_NAMES.get(code, f"format {code}")
        return AudioFormatError(f"{path}: {name} WAV is not supported, only 16-bit PCM; {_CONVERT}")
    return AudioFormatError(f"{path}: broken WAV file ({message or type(exc).__name__})")


def read_wav(path: str | Path, max_seconds: float = MAX_SECONDS) -> WavAudio:
    """16-bit mono PCM and its rate from a WAV file, validated as the module docstring says."""
    path = Path(path)
    _check_header(path)
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate, frames = wav.getsampwidth(), wav.getnchannels(), wav.getframerate(), wav.getnframes()
            if width != SAMPLE_WIDTH:
                raise AudioFormatError(f"{path}: {8 * width}-bit samples, only 16-bit PCM is supported; {_CONVERT}")
            if channels < 1:
                raise AudioFormatError(f"{path}: no audio channels")
            check_rate_for(path, rate)
            if frames / rate > max_seconds:
                raise AudioFormatError(f"{path}: {frames / rate:.0f} s is longer than the {max_seconds:.0f} s limit")
            data = wav.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise _wave_error(path, exc) from None
    data = data[: len(data) - len(data) % (SAMPLE_WIDTH * channels)]  # a truncated last frame
    return WavAudio(downmix(data, channels), rate, channels)


def check_rate_for(path: Path, rate: int) -> None:
    try:
        check_rate(rate)
    except AudioFormatError as exc:
        raise AudioFormatError(f"{path}: {exc.message}") from None


def downmix(pcm: bytes, channels: int) -> bytes:
    """Average interleaved channels into one (rounded, so a mono-in-stereo file stays identical)."""
    if channels == 1:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.int32)
    mixed: bytes = np.rint(samples.mean(axis=1)).astype("<i2").tobytes()
    return mixed


def transcribe_pcm(audio: WavAudio, recognizer: Recognizer, chunk_ms: int = 100) -> list[Segment]:
    """Feed the audio in live-sized chunks, exactly as the media side would, and keep final segments."""
    stream = recognizer.open(audio.sample_rate)
    step = audio.sample_rate * SAMPLE_WIDTH * chunk_ms // 1000
    segments: list[Segment] = []
    for at in range(0, len(audio.pcm), step):
        segments += stream.feed(audio.pcm[at : at + step])
    segments += stream.finish()
    return [s for s in segments if s.final]


def transcribe_file(path: str | Path, recognizer: Recognizer, max_seconds: float = MAX_SECONDS) -> Transcript:
    began = time.perf_counter()
    audio = read_wav(path, max_seconds)
    segments = transcribe_pcm(audio, recognizer)
    return Transcript(
        path=str(path),
        text="，".join(s.text for s in segments if s.text),
        raw=" | ".join(s.raw for s in segments if s.raw),
        segments=segments,
        seconds=round(audio.seconds, 3),
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        engine=recognizer.name,
        elapsed=round(time.perf_counter() - began, 4),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline-gateway transcribe", description="Transcribe WAV files.")
    parser.add_argument("files", nargs="+", help="16-bit PCM WAV files (8-48 kHz, mono or stereo)")
    parser.add_argument("--engine", choices=["pocketsphinx", "vosk"], default="vosk")
    parser.add_argument("--model", help="model folder (default: VOSK_MODEL_PATH / POCKETSPHINX_MODEL_PATH)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    return parser


def _settings(args: argparse.Namespace) -> AsrSettings:
    if args.engine == "vosk":
        return AsrSettings(engine="vosk", vosk_model_path=args.model)
    return AsrSettings(engine="pocketsphinx", pocketsphinx_model_path=args.model)


def main_transcribe(argv: list[str] | None = None) -> int:
    """Exit 0 when every file was transcribed, 1 if some file was rejected, 3 if no engine/model."""
    args = _parser().parse_args(argv)
    try:
        recognizer = load_recognizer(_settings(args))
    except AsrUnavailable as exc:
        print(f"transcribe: {exc.message}", file=sys.stderr)
        return 3
    status = 0
    for name in args.files:
        try:
            transcript = transcribe_file(name, recognizer)
        except AudioFormatError as exc:
            print(f"transcribe: {exc.message}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(transcript.to_json(), ensure_ascii=False))
        else:
            print(transcript.text if len(args.files) == 1 else f"{name}\t{transcript.text}")
    return status
