"""The HTTP API in a process of its own with a low file-descriptor limit (test_http_fd_exhaustion).

`python -m tests.web.fd_exhaustion_server REDIS_URL KEY_PREFIX NOFILE DIR`: sets RLIMIT_NOFILE
(soft and hard, so it cannot be raised again), logs to stderr, prints `ready URL`, and serves until
its stdin closes.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from pathlib import Path

from gateway.config import parse_config
from peers.gateway_config import make_raw_config
from tests.web.http_support import http_server

# Connections are bounded by the file descriptors here, not by the limit; the report comes every
# second so a short test sees several intervals.
REPORT_INTERVAL = 1.0
LIMITS = {
    "listen": "127.0.0.1:0",
    "max_connections": 10_000,
    "header_timeout": 60.0,
    "keepalive_timeout": 60.0,
    "report_interval": REPORT_INTERVAL,
    "accept_retry_delay": 0.1,
}


async def serve(redis_url: str, prefix: str, base: Path) -> None:
    config = parse_config(make_raw_config(prefix, redis_url, http=LIMITS), base)
    async with http_server(config) as server:
        print(f"ready {server.url}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main() -> None:
    redis_url, prefix, nofile, base = sys.argv[1:5]
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(nofile), int(nofile)))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(redis_url, prefix, Path(base)))


if __name__ == "__main__":
    main()
