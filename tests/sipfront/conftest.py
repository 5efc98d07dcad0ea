"""Fixtures for the SIP front tests: the real peers of tests/voice, Kamailio, rendered prompts."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ivr.flow import parse_ivr_toml
from gateway.ivr.prompts import prompt_files, render_missing
from tests.conftest import missing
from tests.ivr.voice_stack import DEFAULT_FLOW
from tests.voice.audio import write_tone_wav
from tests.voice.conftest import (  # noqa: F401 (fixtures)
    baresip_available,
    pcap_playback,
    peers,
    sipp_available,
    tone_wav,
)


@pytest.fixture
def kamailio_available() -> None:
    if shutil.which("kamailio") is None or shutil.which("kamcmd") is None:
        missing("Kamailio is not installed (Debian package kamailio)")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Kamailio's files, in a short path: its control socket's path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="hgk-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default flow's prompts, rendered once, spoken fast (a test call walks the flow in seconds)."""
    directory = tmp_path_factory.mktemp("prompts")
    flow = parse_ivr_toml(DEFAULT_FLOW.read_text(encoding="utf-8")).flow
    prompts = {pid: (spec.text, spec.file) for pid, spec in flow.prompts.items()}
    render_missing(list(prompt_files(prompts, directory, flow.id, directory, max_position=5)), speed=300)
    return directory


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    """20 s of 440 Hz: a caller's voice that outlasts the test's call (the test hangs up)."""
    return write_tone_wav(tmp_path / "caller-440.wav", 440.0, 20.0)
