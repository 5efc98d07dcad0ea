"""Shared fixtures: a real redis-server per test session, configs and keys per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig, hash_secret, parse_config
from gateway.embedded_redis import EmbeddedRedis, free_port

# Every log line of the suite is scanned for secrets and personal data (tests/logscan.py).
pytest_plugins = ["tests.logscan"]

_prefixes = itertools.count()

AGENT_TOKENS = {"a1": "token-a1-" + "x" * 24, "a2": "token-a2-" + "y" * 24, "boss": "token-boss-" + "z" * 24}
API_KEY = "key-webform-" + "k" * 32


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
def key_prefix() -> str:
    return f"t{next(_prefixes)}"


def make_raw_config(prefix: str, redis_url: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "http": {"listen": "127.0.0.1:0"},
        "seats": {"listen": "127.0.0.1:0", "offer_timeout": 5, "reconnect_grace": 2},
        "redis": {"url": redis_url, "key_prefix": prefix},
        "routing": {"default_queue": "general", "by_channel": {}},
        "queues": [
            {"name": "general", "label": "综合受理", "skills": ["general"], "priority": 0},
            {"name": "housing", "label": "住房", "skills": ["housing"], "priority": 0},
            {"name": "enterprise", "label": "政企通", "skills": ["enterprise"], "priority": 7},
        ],
        "agents": [
            {
                "id": "a1",
                "name": "张敏",
                "skills": ["general"],
                "token_hash": hash_secret(AGENT_TOKENS["a1"]),
            },
            {
                "id": "a2",
                "name": "李强",
                "skills": ["housing"],
                "token_hash": hash_secret(AGENT_TOKENS["a2"]),
            },
            {
                "id": "boss",
                "name": "王芳",
                "skills": ["general", "housing", "enterprise"],
                "token_hash": hash_secret(AGENT_TOKENS["boss"]),
            },
        ],
        "api_clients": [{"id": "webform", "key_hash": hash_secret(API_KEY), "channels": ["web", "wechat"]}],
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    return raw


@pytest.fixture
def config_factory(redis_server: EmbeddedRedis, key_prefix: str, tmp_path: Path) -> Any:
    def build(**overrides: Any) -> GatewayConfig:
        return parse_config(make_raw_config(key_prefix, redis_server.url, **overrides), tmp_path)

    return build


@pytest.fixture
def config(config_factory: Any) -> GatewayConfig:
    return config_factory()  # type: ignore[no-any-return]


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
