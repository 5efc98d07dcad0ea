"""The voice worker tests use the real SIP peers of tests/voice, and the default flow's prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.embedded_redis import EmbeddedRedis
from gateway.ivr.flow import parse_ivr_toml
from gateway.ivr.prompts import prompt_files, render_missing
from tests.ivr.voice_stack import DEFAULT_FLOW
from tests.voice.conftest import (  # noqa: F401 (fixtures)
    baresip_available,
    pcap_playback,
    peers,
    sipp_available,
    speech_wav,
    tone_wav,
)


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
