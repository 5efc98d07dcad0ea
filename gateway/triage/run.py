"""`hotline-gateway triage`: a process that only triages (issue #15, item 1: several processes
share the work; a crash re-delivers).

It joins the consumer groups the gateway's own triage uses (`triage` on `hg:created`,
`triage-labels` on `hg:submitted`) as one more consumer, so it takes its share of new tickets
whether or not the core triages too; with `[triage] in_core = false` only these processes do, and
the core's event loop keeps to intake, seats and the queue. SIGTERM or Ctrl-C stops it after the
ticket in hand (what it read and did not acknowledge is taken over by another consumer).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from redis.exceptions import RedisError

from gateway.config import GatewayConfig, LiveConfig
from gateway.errors import ServiceUnavailable
from gateway.queue import TicketQueue
from gateway.shell.app import redis_client
from gateway.shell.services import Loop, Services
from gateway.triage.service import Triage, build_triager

log = logging.getLogger("gateway.triage")


async def run_triage(config: GatewayConfig, redis_url: str) -> int:
    client = redis_client(redis_url, config.redis)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(f"cannot reach redis at {redis_url.split('@')[-1]}: {exc}") from exc
    queue = TicketQueue(client, config)
    triage = Triage(LiveConfig(config), queue, build_triager(config))
    loops = [Loop("triage", triage.run), Loop("triage-labels", triage.learn), Loop("triage-said", triage.listen)]
    services = Services([*loops, Loop("triage-escalate", triage.escalate)])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await services.start()
        print(f"triage ready consumer={triage.name}", flush=True)
        await stop.wait()
        log.info("triage %s stopping after %d ticket(s)", triage.name, triage.triaged)
    finally:
        await services.stop()
        await client.aclose()
    return 0
