"""Media workers as child processes of `hotline-gateway run`, restarted when they die.

A worker is its own process (one pjsua2 endpoint, one GIL); this supervisor only starts it, watches
it and stops it (SIGTERM, then SIGKILL after a grace period). Which workers run is decided by the
pool (`gateway.sipfront.autoscale`). Calls of a worker that dies are settled by the core's reaper
through the worker's lapsed heartbeat, not here; `on_exit` lets the pool react at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from gateway.shell.embedded_redis import die_with_parent
from gateway.shell.tasks import stop_task

log = logging.getLogger("gateway.shell.supervisor")

CONFIG_REFUSED = 2  # `hotline-gateway media-worker`'s exit status for a refused configuration
RUN_ID_ENV = "HG_RUN_ID"  # the id of the `run` a process belongs to (in its environment)
STABLE_AFTER = 30.0  # s up after which a worker's exit no longer counts as a failed restart
MAX_RESTART_DELAY = 30.0


def restart_delay(base: float, failures: int) -> float:
    """The wait before restarting a child (a media worker, Kamailio): `base` after one that ran a
    while, doubling with each quick exit in a row (a worker whose Redis is gone exits every few
    seconds), at most 30 s."""
    return float(min(base * 2 ** max(failures - 1, 0), MAX_RESTART_DELAY))


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    worker_id: str
    listen: str


class WorkerSupervisor:
    def __init__(
        self,
        config_path: str,
        redis_url: str,
        restart_delay: float = 1.0,
        on_exit: Callable[[WorkerSpec, int], None] | None = None,
    ) -> None:
        self._config_path = config_path
        self._redis_url = redis_url
        self._restart_delay = restart_delay
        self._on_exit = on_exit
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._stopping: set[str] = set()

    def running(self) -> set[str]:
        """Workers kept running (a dead one is being restarted; a stopping one is not counted)."""
        return set(self._tasks) - self._stopping

    def pid(self, worker_id: str) -> int | None:
        process = self._processes.get(worker_id)
        return process.pid if process is not None and process.returncode is None else None

    def start_worker(self, spec: WorkerSpec) -> None:
        if spec.worker_id in self._tasks:
            return
        self._stopping.discard(spec.worker_id)
        self._tasks[spec.worker_id] = asyncio.create_task(self._keep(spec), name=f"worker-{spec.worker_id}")

    async def _keep(self, spec: WorkerSpec) -> None:
        failures = 0  # quick exits in a row: the restart delay doubles with each (Redis down, say)
        while spec.worker_id not in self._stopping:
            began = asyncio.get_running_loop().time()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "media-worker",
                "--config", self._config_path, "--redis-url", self._redis_url,
                "--id", spec.worker_id, "--listen", spec.listen,
                stdout=asyncio.subprocess.DEVNULL,
                # A worker dies with the process that started it, however that one ends (SIGKILL
                # included): an orphan kept its SIP port and answered the next run's Redis.
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )  # fmt: skip
            self._processes[spec.worker_id] = process
            code = await process.wait()
            if spec.worker_id in self._stopping:
                return
            if code == CONFIG_REFUSED:
                # Its config or id is refused (e.g. the id beats from another host): starting it
                # again every second would only repeat the refusal.
                log.error("media worker %s refused to start (exit %s); not restarted", spec.worker_id, code)
                return
            failures = 0 if asyncio.get_running_loop().time() - began >= STABLE_AFTER else failures + 1
            delay = restart_delay(self._restart_delay, failures)
            log.warning("media worker %s exited with %s; restarting in %.0f s", spec.worker_id, code, delay)
            if self._on_exit is not None:
                self._on_exit(spec, code)
            await asyncio.sleep(delay)

    async def stop_worker(self, worker_id: str, grace: float = 10.0) -> None:
        """SIGTERM (the worker hangs up its calls and exits), SIGKILL after `grace` seconds."""
        task = self._tasks.get(worker_id)
        if task is None:
            return
        self._stopping.add(worker_id)
        process = self._processes.get(worker_id)
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                process.kill()
                await process.wait()
        await stop_task(task)
        self._tasks.pop(worker_id, None)
        self._processes.pop(worker_id, None)
        self._stopping.discard(worker_id)

    async def stop(self, grace: float = 10.0) -> None:
        await asyncio.gather(*(self.stop_worker(worker_id, grace) for worker_id in list(self._tasks)))
