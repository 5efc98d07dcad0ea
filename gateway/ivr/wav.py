"""Small WAV measurements used by tests, benchmarks and recording checks (16-bit PCM mono)."""

from __future__ import annotations

import array
import math
import wave
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class WavInfo:
    rate: int
    channels: int
    seconds: float
    rms: float  # 0..1 of full scale


def read_pcm(path: Path) -> tuple[int, array.array[int]]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: not 16-bit PCM")
        rate = wav.getframerate()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    return rate, samples


def rms(samples: array.array[int]) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768.0


def wav_info(path: Path) -> WavInfo:
    with wave.open(str(path), "rb") as wav:
        channels = wav.getnchannels()
    rate, samples = read_pcm(path)
    return WavInfo(rate=rate, channels=channels, seconds=len(samples) / channels / rate, rms=rms(samples))


def rms_per_second(path: Path) -> list[float]:
    rate, samples = read_pcm(path)
    return [rms(samples[start : start + rate]) for start in range(0, len(samples), rate)]
