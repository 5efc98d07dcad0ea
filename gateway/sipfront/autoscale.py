"""The media worker pool `run` keeps: boot workers, restarts, and scaling by load (`[voice.pool]`).

The decision is `gateway.sipfront.scaling.decide` (pure); this module gathers its inputs and carries
it out. Load per worker is the larger of Kamailio's call-load count (DLGLOAD: calls dispatched and
not yet ended, ringing ones included) and the worker's own heartbeat (`callers`). A worker is
switched on and off in Kamailio with `dispatcher.set_state` (no reload: the load table survives),
and the dispatcher list file is rewritten with the same switches, so a restarted Kamailio starts
from them. Each slot's state is published in `{prefix}:pool` (`Keys.pool`) for `hotline-gateway status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import GatewayError
from gateway.keys import Keys
from gateway.shell.supervisor import WorkerSupervisor
from gateway.shell.tasks import stop_task
from gateway.sipfront.kamailio import front_paths, write_dispatcher
from gateway.sipfront.pool import boot_specs, caller_capacity, destinations, worker_specs
from gateway.sipfront.rpc import FrontRpc
from gateway.sipfront.scaling import Limits, Plan, Slot, State, decide
from gateway.sipfront.status import worker_rows

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger("gateway.pool")

STOP_GRACE = 10.0  # s a drained worker gets to exit after SIGTERM


def limits_for(config: GatewayConfig) -> Limits:
    voice = config.voice
    low, high = voice.pool_bounds()
    return Limits(
        min_workers=low,
        max_workers=high,
        callers_per_worker=caller_capacity(voice.calls_per_worker),
        spare_callers=voice.pool.spare_callers,
        scale_down_after=voice.pool.scale_down_after,
    )


class WorkerPool:
    def __init__(self, config: GatewayConfig, config_path: str, redis_url: str) -> None:
        self.config = config
        self.limits = limits_for(config)
        self.specs = {spec.worker_id: spec for spec in worker_specs(config)}
        self.states: dict[str, State] = dict.fromkeys(self.specs, "stopped")
        self.supervisor = WorkerSupervisor(config_path, redis_url)
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        self.keys = Keys(config.redis.key_prefix)
        front = config.sipfront
        self.paths = front_paths(config)
        self.rpc = FrontRpc(front.kamcmd, self.paths.ctl_socket)
        self.entries = {entry.duid: entry for entry in destinations(config)}
        self.surplus_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for spec in boot_specs(self.config):
            self.supervisor.start_worker(spec)
            self.states[spec.worker_id] = "serving"  # listed enabled by the rendered dispatcher list
        await self._publish()
        if self.config.voice.autoscaled:
            self._task = asyncio.create_task(self._run(), name="worker-pool")
            log.info("worker pool scales between %d and %d workers", self.limits.min_workers, self.limits.max_workers)

    async def stop(self) -> None:
        await stop_task(self._task)
        await self.supervisor.stop()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.hdel(self.keys.pool, *self.specs)
        await self.redis.aclose()

    async def _run(self) -> None:
        interval = self.config.voice.pool.check_interval
        while True:
            try:
                await self.step(time.monotonic())
            except (GatewayError, RedisError, OSError) as exc:
                # Kamailio restarting or Redis away: keep the pool as it is and look again.
                log.warning("worker pool check failed: %s", exc)
            await asyncio.sleep(interval)

    async def step(self, now: float) -> Plan:
        busy, alive = await self._observe()
        for worker_id, state in self.states.items():
            if state == "starting" and worker_id in alive:
                await self._set(worker_id, "serving")
        slots = [Slot(worker_id, self.states[worker_id], busy.get(worker_id, 0)) for worker_id in self.specs]
        plan = decide(self.limits, slots, self.surplus_since, now)
        self.surplus_since = plan.surplus_since
        await self._apply(plan)
        return plan

    async def _observe(self) -> tuple[dict[str, int], set[str]]:
        """Callers per worker id, and the ids with a live heartbeat."""
        busy: dict[str, int] = {}
        for target in await self.rpc.dispatcher():
            if target.duid in self.specs:
                busy[target.duid] = target.load
        alive = set()
        for row in await worker_rows(self.redis, self.keys.prefix):
            if row.worker_id not in self.specs or not row.alive:
                continue
            alive.add(row.worker_id)
            with contextlib.suppress(ValueError):
                busy[row.worker_id] = max(busy.get(row.worker_id, 0), int(row.info.get("callers", "0")))
        return busy, alive

    async def _apply(self, plan: Plan) -> None:
        for worker_id in plan.start:
            log.info("worker pool: starting %s", worker_id)
            self.supervisor.start_worker(self.specs[worker_id])
            self.states[worker_id] = "starting"  # switched on once its heartbeat shows it listening
        for worker_id in plan.resume:
            log.info("worker pool: %s takes calls again", worker_id)
            await self._set(worker_id, "serving")
        for worker_id in plan.drain:
            log.info("worker pool: draining %s", worker_id)
            await self._set(worker_id, "draining")
        for worker_id in plan.stop:
            log.info("worker pool: stopping %s (drained)", worker_id)
            await self.supervisor.stop_worker(worker_id, STOP_GRACE)
            self.states[worker_id] = "stopped"
        if plan.start or plan.stop:
            await self._publish()

    async def _set(self, worker_id: str, state: State) -> None:
        """Switch a worker on (serving) or off in the file first, then in the running Kamailio."""
        self.states[worker_id] = state
        enabled = {w for w, s in self.states.items() if s == "serving"}
        write_dispatcher(self.paths, list(self.entries.values()), enabled)
        flag = "a" if state == "serving" else "d"
        await self.rpc.call("dispatcher.set_state", flag, "1", self.entries[worker_id].uri)
        await self._publish()

    async def _publish(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            # Only this pool's fields: ids carry the host's prefix, other hosts' pools share the hash.
            await self.redis.hset(self.keys.pool, mapping=dict(self.states))  # type: ignore[arg-type]
