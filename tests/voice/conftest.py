"""Fixtures for the media worker tests: real SIP peers (baresip, SIPp) on loopback, the default
flow's prompts rendered once, and what `voice_stack` needs."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ivr.flow import parse_ivr_toml
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.voice.prompts import prompt_files, render_missing
from peers.audio import write_tone_wav
from peers.flows import DEFAULT_FLOW
from peers.sip import BARESIP_MODULE_PATH, PCAP_DIR, Peers, can_play_pcap
from tests.conftest import missing

SHARED_DIR = Path(__file__).resolve().parents[2].parent / "shared"
"""The team's read-only material, `../shared/` from the project root."""
SPEECH_8K = SHARED_DIR / "audio" / "tts" / "hotline_01_8k.wav"


def _require_baresip() -> None:
    if shutil.which("baresip") is None or not BARESIP_MODULE_PATH.is_dir():
        missing("baresip is not installed (Debian package baresip)")


def _require_sipp() -> None:
    if shutil.which("sipp") is None or not PCAP_DIR.is_dir():
        missing("SIPp is not installed (Debian package sip-tester)")


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Peers]:
    """Start real peers with `await peers.caller(wav)`, `.agent(wav)`, `.sipp(scenario, ...)`;
    all are closed when the test ends."""
    async with Peers(tmp_path) as started:
        yield started


@pytest.fixture
def baresip_available() -> None:
    _require_baresip()


@pytest.fixture
def sipp_available() -> None:
    _require_sipp()


@pytest.fixture
def pcap_playback(sipp_available: None) -> None:
    """SIPp's play_pcap_audio needs a raw socket: root or CAP_NET_RAW."""
    if not can_play_pcap():
        missing("SIPp play_pcap_audio needs root or CAP_NET_RAW (raw socket)")


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """10 s of 1 kHz sine at 8 kHz, amplitude 0.5: an agent phone's voice."""
    return write_tone_wav(tmp_path / "tone-1k.wav", 1000.0, 10.0)


@pytest.fixture
def speech_wav() -> Path:
    """6.6 s of synthesized Mandarin hotline speech at 8 kHz from ../shared."""
    if not SPEECH_8K.is_file():
        missing(f"{SPEECH_8K} is missing (team audio in ../shared)")
    return SPEECH_8K


@pytest.fixture(scope="session")
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default flow's prompts, rendered once (espeak-ng + sox) for every test that calls a worker."""
    directory = tmp_path_factory.mktemp("prompts")
    flow = parse_ivr_toml(DEFAULT_FLOW.read_text(encoding="utf-8")).flow
    prompts = {pid: (spec.text, spec.file) for pid, spec in flow.prompts.items()}
    # Spoken fast (espeak-ng -s 300) so a test call walks the flow in seconds, not minutes.
    render_missing(list(prompt_files(prompts, directory, flow.id, directory, max_position=5)), speed=300)
    return directory


StackArgs = dict[str, Any]


@pytest.fixture
def stack_args(tmp_path: Path, redis_server: EmbeddedRedis, key_prefix: str, prompts_dir: Path) -> StackArgs:
    """What `voice_stack` needs from the test session: `voice_stack(**stack_args, ...)`."""
    return {"tmp_path": tmp_path, "redis_url": redis_server.url, "key_prefix": key_prefix, "prompts_dir": prompts_dir}
