"""`make run SMS=...`: the example config, pointed at a faithful carrier, is one `run` accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.config import load_config
from peers.demo_sms import CARRIERS, demo_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("protocol", sorted(CARRIERS))
def test_the_demo_config_enables_sms_at_the_carrier_and_passes_runs_checks(protocol: str, tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(EXAMPLE, config_dir)
    assert cli_main(["init-credentials", "--config", str(config_dir / "gateway.toml")]) == 0  # as `make run` does
    path = demo_config(config_dir / "gateway.toml", CARRIERS[protocol], "HG_DEMO_SECRET")
    assert path.parent == config_dir  # beside the original: its relative paths (flows, prompts) still hold
    config = load_config(path, {"HG_DEMO_SECRET": "abcd1234"}, check_environment=True)
    sms = config.channels.sms
    assert sms.enabled and sms.protocol == protocol and sms.smsc == CARRIERS[protocol].listen
    assert config.voice.flows == load_config(config_dir / "gateway.toml", check_environment=False).voice.flows
