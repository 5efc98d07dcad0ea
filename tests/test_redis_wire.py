"""Commands packed by hiredis are the bytes redis-py packs, and a real redis-server answers them."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from gateway.config import RedisConfig
from gateway.shell.app import redis_client
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.shell.redis_wire import (
    PackedConnection,
    PackedSSLConnection,
    PackedUnixConnection,
    connection_class,
)

COMMANDS = [
    ("SET", "k", "v"),
    (b"EVALSHA", "0123abcd", 3, "hg:t:01KT", b"bytes", 7, -1, 2.5, 1e-7, 10**18, "中文：路灯坏了", ""),
    ("CONFIG GET", "maxmemory"),  # several words: several arguments
    (b"CLIENT SETNAME", "hg"),
    ("XADD", "s", "MAXLEN", "~", 1000, "*", "m", memoryview(b"\x00\xffbinary")),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_hiredis_packs_the_bytes_redis_py_packs(command: tuple[Any, ...]) -> None:
    packed, plain = PackedConnection(), Connection()
    assert b"".join(packed.pack_command(*command)) == b"".join(plain.pack_command(*command))
    many = [command, ("PING",), command]
    assert b"".join(packed.pack_commands(many)) == b"".join(plain.pack_commands(many))


@pytest.mark.parametrize("wrong", [None, True])
def test_what_hiredis_cannot_pack_fails_as_redis_py_says(wrong: Any) -> None:
    with pytest.raises(DataError, match="Invalid input"):
        PackedConnection().pack_command("SET", "k", wrong)


def test_each_url_scheme_gets_its_packed_connection() -> None:
    assert connection_class("redis://127.0.0.1:6379/0") is PackedConnection
    assert connection_class("rediss://example:6380/0") is PackedSSLConnection
    assert connection_class("unix:///run/redis.sock") is PackedUnixConnection


async def test_a_real_redis_answers_packed_commands(redis_server: EmbeddedRedis) -> None:
    client = redis_client(redis_server.url, RedisConfig())
    try:
        text = "市民：楼下饭店油烟太大" * 50
        assert await client.set("hg:wire:test", text)
        stored: Any = await client.get("hg:wire:test")
        assert stored.decode() == text
        script = "return {ARGV[1], ARGV[2], ARGV[3], #ARGV}"
        assert await client.eval(script, 0, "中文", 2.5, 7) == [b"\xe4\xb8\xad\xe6\x96\x87", b"2.5", b"7", 3]
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("hg:wire:n")
            pipe.incr("hg:wire:n")
            assert await pipe.execute() == [1, 2]
    finally:
        await client.delete("hg:wire:test", "hg:wire:n")
        await client.aclose()
