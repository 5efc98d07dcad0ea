"""`init-credentials` on the example config: a secret for every agent and API client, once."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from gateway.config import load_config, verify_secret

ROOT = Path(__file__).resolve().parents[1]


def _init(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "init-credentials", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_agent_and_client_of_the_example_gets_a_secret_once(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    config = tmp_path / "config" / "gateway.toml"
    first = _init(config)
    assert first.returncode == 0, first.stderr
    tokens = tmp_path / "var" / "dev-tokens.txt"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    issued = {tuple(line.split()[:2]): line.split()[2] for line in tokens.read_text().splitlines()}
    raw = tomllib.loads(config.read_text())
    expected = (
        {("agent", a["id"]) for a in raw["agents"]}
        | {("api_client", c["id"]) for c in raw["api_clients"]}
        | {("supervisor", s["id"]) for s in raw["supervisors"]}
    )
    assert set(issued) == expected
    # The tour's read key reads every channel's tickets (voice included) and submits none.
    loaded = load_config(config, environ={})
    reader = next(client for client in loaded.api_clients if client.id == "reader")
    assert verify_secret(issued[("api_client", "reader")], reader.key_hash)
    assert reader.read_only and "voice" in reader.channels
    agent = next(a for a in loaded.agents if a.id == "1001")
    assert verify_secret(issued[("agent", "1001")], agent.token_hash)

    again = _init(config)
    assert again.returncode == 0 and "already has credentials" in again.stdout
    assert len(tokens.read_text().splitlines()) == len(expected)
