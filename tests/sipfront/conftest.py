"""Fixtures for the SIP front tests: the real peers of tests/voice, Kamailio, rendered prompts."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.shell.embedded_redis import EmbeddedRedis
from peers.audio import write_tone_wav
from peers.sip import Peers
from tests.conftest import missing
from tests.logscan import register_secrets
from tests.sipfront.front_stack import PHONE_PASSWORDS, StackArgs, phone_env
from tests.voice.conftest import (  # noqa: F401 (fixtures)
    baresip_available,
    pcap_playback,
    peers,
    prompts_dir,
    sipp_available,
    tone_wav,
)

register_secrets(PHONE_PASSWORDS.values())


@pytest.fixture
def kamailio_available() -> None:
    if shutil.which("kamailio") is None or shutil.which("kamcmd") is None:
        missing("Kamailio is not installed (Debian package kamailio)")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Kamailio's files, in a short path: its control socket's path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="hgk-") as directory:
        yield Path(directory)


@pytest.fixture
def stack_args(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    key_prefix: str,
    prompts_dir: Path,  # noqa: F811 (the fixture imported above)
    run_dir: Path,
    kamailio_available: None,
) -> StackArgs:
    """`front_stack`'s arguments from the fixtures."""
    return {
        "tmp_path": tmp_path,
        "redis_url": redis_server.url,
        "key_prefix": key_prefix,
        "prompts_dir": prompts_dir,
        "run_dir": run_dir,
    }


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent phones' SIP passwords in the environment, as Kamailio reads them at start."""
    for user, password in PHONE_PASSWORDS.items():
        monkeypatch.setenv(phone_env(user), password)


@pytest.fixture
def callers(peers: Peers, passwords: None, sipp_available: None) -> Peers:  # noqa: F811 (fixtures imported above)
    """SIPp and the other peers, to call through the front, the agent phones' passwords set."""
    return peers


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    """20 s of 440 Hz: a caller's voice that outlasts the test's call (the test hangs up)."""
    return write_tone_wav(tmp_path / "caller-440.wav", 440.0, 20.0)
