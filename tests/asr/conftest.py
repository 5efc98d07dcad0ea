"""Fixtures for the ASR tests: the shared PocketSphinx model, synthesized speech, WAV writers.

Model and audio stay outside the repo (../shared beside it, or POCKETSPHINX_MODEL_PATH); tests that
need one say plainly why they could not run when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.asr.settings import AsrSettings
from peers.speech import SHARED_AUDIO, have_tts
from tests.conftest import missing


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
