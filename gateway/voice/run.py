"""`hotline-gateway media-worker`: run one media worker until SIGTERM/SIGINT.

Signals only set an event; the loop thread (which owns PJSIP) does the shutdown: BYE to every
caller, tickets settled, then `libDestroy` (the order measured to never abort).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from redis.exceptions import RedisError

from gateway.config import GatewayConfig
from gateway.errors import ServiceUnavailable
from gateway.queue import TicketQueue
from gateway.shell.app import redis_client
from gateway.voice.worker import MediaWorker, WorkerSettings

log = logging.getLogger("gateway.voice")


async def run_media_worker(config: GatewayConfig, redis_url: str, worker_id: str, listen: str | None) -> int:
    # The core's client: commands fail after redis.command_timeout and are not retried by redis-py
    # (its default retries, with back-off, held a caller's refused intake for seconds).
    client = redis_client(redis_url, config.redis)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(f"cannot reach redis at {redis_url.split('@')[-1]}: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    settings = WorkerSettings.from_config(config, worker_id, listen)
    worker = MediaWorker(config, TicketQueue(client, config), settings)
    try:
        await worker.start()
        print(f"media-worker ready id={worker_id} sip={settings.sip}", flush=True)
        signalled, on_its_own = asyncio.create_task(stop.wait()), asyncio.create_task(worker.must_stop.wait())
        await asyncio.wait({signalled, on_its_own}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        on_its_own.cancel()
        if stop.is_set():
            log.info("media worker %s stopping with %d call(s)", worker_id, worker.callers)
    finally:
        await worker.stop()
        await client.aclose()
    return worker.exit_status
