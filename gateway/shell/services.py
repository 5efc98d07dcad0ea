"""Services with a lifecycle: what a gateway process runs, started in order, stopped in reverse,
each with a health that `/readyz` reports.

A `Service` is anything with `start`, `stop` and `health`: the HTTP API, the seats' websocket
server, and each background loop (the dispatcher, the pub/sub listener, the reaper, the lease
keeper; later each channel's connection, an SMPP bind, a Telegram poller). A `Loop` runs one
coroutine under supervision: when it dies on a bug it is logged with its traceback, counted, and
started again after a delay that doubles while it keeps dying (`restart_delay`), instead of
staying dead and silent until shutdown. `Services` holds a process's list.

Stopping never depends on a single cancellation being honoured (`stop_task`), and is bounded per
service: a stuck one delays a shutdown, never stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.shell.supervisor import STABLE_AFTER, restart_delay
from gateway.shell.tasks import stop_task

log = logging.getLogger("gateway.services")

State = Literal["stopped", "starting", "up", "restarting", "failed"]


@dataclass(frozen=True, slots=True)
class Health:
    state: State
    detail: str = ""
    restarts: int = 0

    @property
    def ready(self) -> bool:
        return self.state == "up"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state, "restarts": self.restarts}
        if self.detail:
            out["detail"] = self.detail
        return out


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> Health: ...


class Loop:
    """One supervised background coroutine. `body` is expected to run until cancelled; if it
    returns or raises, that is a crash: logged, counted, restarted after `restart_delay`."""

    def __init__(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        *,
        base_delay: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self._body = body
        self._base_delay = base_delay
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._state: State = "stopped"
        self._restarts = 0
        self._last_error = ""

    async def start(self) -> None:
        if self._task is None:
            self._state = "up"
            self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        self._state = "stopped"

    def health(self) -> Health:
        return Health(self._state, self._last_error, self._restarts)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        now = self._clock or loop.time
        failures = 0
        while True:
            began = now()
            failure: Exception | None = None
            try:
                await self._body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            failures = 0 if now() - began >= STABLE_AFTER else failures + 1
            delay = restart_delay(self._base_delay, failures)
            self._restarts += 1
            problem = f"{type(failure).__name__}: {failure}"[:200] if failure else "it returned"
            self._state, self._last_error = "restarting", problem
            log.error(
                "service %s stopped (%s); restart %d in %.1f s",
                self.name,
                problem,
                self._restarts,
                delay,
                exc_info=failure,
            )
            await asyncio.sleep(delay)
            self._state = "up"


@dataclass(frozen=True, slots=True)
class Report:
    ready: bool
    services: dict[str, Health]


class Services:
    """A process's services: started in order (a failure stops those already started, in reverse,
    and is raised), stopped in reverse order, each stop bounded by `stop_timeout`."""

    def __init__(self, services: Sequence[Service] = (), stop_timeout: float = 15.0) -> None:
        self._services = list(services)
        self._started: list[Service] = []
        self._stop_timeout = stop_timeout

    def add(self, service: Service) -> None:
        self._services.append(service)

    async def start(self) -> None:
        for service in self._services:
            try:
                await service.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(service)

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                async with asyncio.timeout(self._stop_timeout):
                    await service.stop()
            except TimeoutError:
                log.warning("service %s took longer than %.0f s to stop; going on", service.name, self._stop_timeout)
            except Exception:
                log.exception("service %s failed to stop cleanly", service.name)

    def report(self) -> Report:
        healths = {service.name: service.health() for service in self._services}
        return Report(all(health.ready for health in healths.values()), healths)
