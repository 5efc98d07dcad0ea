"""The Redis connections of every process: commands packed by hiredis.

redis-py's asyncio connection packs each command in Python (its synchronous one already uses
hiredis when installed): the intake profile spent about 0.5 ms a ticket there, the largest single
cost of the gateway's CPU per ticket, as the queue scripts carry 15 to 20 arguments each. hiredis
(a dependency already, for parsing replies) packs the same bytes in C; a test holds the two equal.
An argument hiredis cannot pack (None, a bool) goes to redis-py's packer, which raises its own
clear `DataError`.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, SSLConnection, UnixDomainSocketConnection


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a command name of several words ('CONFIG GET') is several arguments.
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # raises redis-py's DataError naming the type


class PackedConnection(_HiredisPacking, aioredis.Connection):
    """redis://"""


class PackedSSLConnection(_HiredisPacking, SSLConnection):
    """rediss://"""


class PackedUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """unix://"""


def connection_class(url: str) -> type[AbstractConnection]:
    """The packed connection for a URL's scheme (what redis-py would pick, packed by hiredis)."""
    if url.startswith("unix://"):
        return PackedUnixConnection
    if url.startswith("rediss://"):
        return PackedSSLConnection
    return PackedConnection
