"""What `hotline-gateway sipfront render`, `status` and `run` (with `[sipfront] enabled`) do.

`gateway/cli.py` only parses arguments and calls these.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from gateway.shell.tasks import stop_task
from gateway.sipfront.config import password_errors
from gateway.sipfront.held import HeldCalls
from gateway.sipfront.janitor import DialogJanitor
from gateway.sipfront.kamailio import FrontPaths, Rendered, start_check, syntax_check, uri_address, write_front
from gateway.sipfront.process import KamailioCommand, KamailioProcess
from gateway.sipfront.rpc import FrontRpc

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger("gateway.sipfront")


async def render(config: GatewayConfig, source: str, *, start: bool = True) -> int:
    """Write kamailio.cfg and dispatcher.list, then check them with the real Kamailio. `config` was
    loaded by `load_config` (the front's checks are the config's own)."""
    rendered = write_front(config, source)
    front = config.sipfront
    maxload = rendered.destinations[0].maxload if rendered.destinations else 0
    print(
        f"wrote {rendered.paths.cfg} and {rendered.paths.dispatcher} "
        f"({len(rendered.destinations)} worker(s), at most {maxload} caller(s) each)"
    )
    await syntax_check(front.binary, rendered.paths.cfg)
    print(f"{front.binary} -c: OK")
    if start:
        began = time.monotonic()
        await start_check(config, rendered)
        print(f"start check: OK (started in the foreground and ready in {time.monotonic() - began:.1f} s)")
    for problem in password_errors(front, os.environ):
        print(f"warning: {problem} (Kamailio reads it when it starts)", file=sys.stderr)
    return 0


class RunningFront:
    """Kamailio as `run` keeps it, with what goes with each of its starts: the calls the workers hold
    put into its load before callers are routed (`held.HeldCalls`), and the task that ends dead
    workers' calls through it (`janitor.DialogJanitor`)."""

    def __init__(self, process: KamailioProcess, config: GatewayConfig, paths: FrontPaths, redis_url: str) -> None:
        import redis.asyncio as aioredis

        from gateway.queue import Keys
        from gateway.voice.link import VoiceKeys

        self.process = process
        self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        rpc = FrontRpc(config.sipfront.kamcmd, paths.ctl_socket)
        self.held = HeldCalls(
            rpc,
            self._redis,
            config.redis.key_prefix,
            self_address=uri_address(config.sipfront.listen),
            worker_timeout=config.voice.worker_timeout,
            heartbeat_interval=config.voice.heartbeat_interval,
        )
        self._held_task: asyncio.Task[None] | None = None
        process.on_ready = self._rebuild
        process.on_exit = self._forget
        stream = VoiceKeys(Keys(config.redis.key_prefix)).dead_workers
        janitor = DialogJanitor(self._redis, stream, rpc)
        self._janitor = asyncio.create_task(janitor.run(), name="sipfront-janitor")

    def _rebuild(self) -> None:
        """A Kamailio just became ready: its call load is rebuilt before it routes callers."""
        self._forget()
        self._held_task = asyncio.create_task(self._held_calls(), name="sipfront-held-calls")

    def _forget(self) -> None:
        """Kamailio exited (or another one starts): whatever it was being told is moot."""
        self.held.routing.clear()
        if self._held_task is not None:
            self._held_task.cancel()
            self._held_task = None

    async def _held_calls(self) -> None:
        try:
            await self.held.run()
        except Exception:
            # Fail closed: callers keep getting 503 from Kamailio rather than full workers.
            log.exception("rebuilding the call load failed; kamailio does not route callers")

    async def start(self) -> None:
        await self.process.start()
        self.process.supervise()

    async def wait_routing(self, timeout: float) -> None:
        """Until Kamailio dispatches callers after its latest start."""
        await asyncio.wait_for(self.held.routing.wait(), timeout)

    async def stop(self) -> None:
        for task in (self._held_task, self._janitor):
            await stop_task(task)
        await self._redis.aclose()
        await self.process.stop()


async def start_front(config: GatewayConfig, source: str, redis_url: str) -> RunningFront:
    """For `run`: render, check, start Kamailio and keep it running (restarted if it dies). `config`
    was loaded by `load_config`, which checked the front and the phones' passwords."""
    rendered: Rendered = write_front(config, source)
    await syntax_check(config.sipfront.binary, rendered.paths.cfg)
    command = KamailioCommand.for_paths(config.sipfront, rendered.paths)
    process = KamailioProcess(command, restart_delay=config.sipfront.restart_delay)
    front = RunningFront(process, config, rendered.paths, redis_url)
    try:
        await front.start()
    except BaseException:
        await front.stop()
        raise
    return front


async def show_status(config: GatewayConfig, redis_url: str) -> int:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from gateway.sipfront.status import format_report, gather

    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        report = await gather(config, client)
    except (RedisError, OSError) as exc:
        print(f"hotline-gateway status: cannot reach redis at {redis_url.split('@')[-1]}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    print(format_report(report))
    return 0
