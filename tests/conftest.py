"""Shared fixtures: a real redis-server per test session, configs and keys per test."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig, parse_config
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from peers.gateway_config import AGENT_TOKENS, API_KEY, make_raw_config

# Every log line of the suite is scanned for secrets and personal data (tests/logscan.py).
pytest_plugins = ["tests.logscan"]

_prefixes = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    from tests.logscan import register_secrets  # after pytest loaded it as a plugin (assert rewriting)

    register_secrets([*AGENT_TOKENS.values(), API_KEY])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, to stop, freeze or restart (same port, same data): the
    session's must not be."""
    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server._process is not None and server._process.poll() is None:
            os.kill(server._process.pid, signal.SIGCONT)  # a test that froze it may have failed
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"t{next(_prefixes)}"


class ConfigFactory(Protocol):
    """The `config_factory` fixture: this test's config, with `make_raw_config`'s overrides."""

    def __call__(self, **overrides: Any) -> GatewayConfig: ...


@pytest.fixture
def config_factory(redis_server: EmbeddedRedis, key_prefix: str, tmp_path: Path) -> ConfigFactory:
    def build(**overrides: Any) -> GatewayConfig:
        return parse_config(make_raw_config(key_prefix, redis_server.url, **overrides), tmp_path)

    return build


@pytest.fixture
def config(config_factory: ConfigFactory) -> GatewayConfig:
    return config_factory()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def missing(reason: str) -> NoReturn:
    """A test's real peer or data is not on this machine: skip here, but fail in CI, where
    `.ci/run` installs everything (a skipped test must never hide missing work)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: check .ci/run)")
    pytest.skip(reason)
