"""Fixtures for the ASR tests: the shared PocketSphinx model, synthesized speech, WAV writers.

Model and audio stay outside the repo (../shared beside it, or POCKETSPHINX_MODEL_PATH); tests that
need one say plainly why they could not run when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.asr.settings import AsrSettings
from tests.conftest import missing

SHARED_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "audio"


def write_wav(path: Path, pcm: bytes, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


def read_pcm(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), wav.readframes(wav.getnframes())


def have_tts() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def synthesize(text: str, path: Path, speed: int = 160, rate: int = 8000) -> Path:
    """Mandarin TTS as the baseline measured it: espeak-ng cmn-latn-pinyin, sox to 16-bit mono."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def sox_noise(
    path: Path, seconds: float = 2.0, kind: str = "whitenoise", rate: int = 8000, volume: float = 0.3
) -> Path:
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "synth",
            str(seconds),
            kind,
            "vol",
            str(volume),
        ],
        check=True,
    )
    return path


@pytest.fixture(scope="session")
def settings() -> AsrSettings:
    return AsrSettings()


@pytest.fixture(scope="session")
def model_dir(settings: AsrSettings) -> Path:
    path = settings.pocketsphinx_dir()
    if not (path / "tdt_sc_8k" / "mdef").exists():
        missing(f"PocketSphinx model not found at {path}: set POCKETSPHINX_MODEL_PATH; these tests could not run")
    return path


@pytest.fixture(scope="session")
def recognizer(settings: AsrSettings, model_dir: Path) -> Iterator[object]:
    import pocketsphinx  # noqa: F401 (a declared dependency: an ImportError here is a broken install)

    from gateway.asr.pocketsphinx_engine import PocketSphinxRecognizer

    yield PocketSphinxRecognizer.load(settings)


@pytest.fixture(scope="session")
def tts() -> None:
    if not have_tts():
        missing("espeak-ng or sox not installed (apt-get install espeak-ng sox): TTS tests could not run")


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not (SHARED_AUDIO / "manifest.tsv").exists():
        missing(f"shared test audio not found at {SHARED_AUDIO}: these tests could not run")
    return SHARED_AUDIO
