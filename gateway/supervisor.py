"""Media workers as child processes of `hotline-gateway run`, restarted when they die.

A worker is its own process (one pjsua2 endpoint, one GIL); this supervisor only starts it, watches
it and stops it (SIGTERM, then SIGKILL after a grace period). Calls of a worker that dies are settled
by the core's reaper through the worker's lapsed heartbeat, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass

log = logging.getLogger("gateway.supervisor")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    worker_id: str
    listen: str


class WorkerSupervisor:
    def __init__(
        self, config_path: str, redis_url: str, specs: list[WorkerSpec], restart_delay: float = 1.0
    ) -> None:
        self._config_path = config_path
        self._redis_url = redis_url
        self._specs = specs
        self._restart_delay = restart_delay
        self._tasks: list[asyncio.Task[None]] = []
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(spec), name=f"worker-{spec.worker_id}") for spec in self._specs]

    async def _keep(self, spec: WorkerSpec) -> None:
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "media-worker",
                "--config", self._config_path, "--redis-url", self._redis_url,
                "--id", spec.worker_id, "--listen", spec.listen,
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            self._processes[spec.worker_id] = process
            code = await process.wait()
            if self._stopping:
                return
            log.warning("media worker %s exited with %s; restarting", spec.worker_id, code)
            await asyncio.sleep(self._restart_delay)

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        for process in self._processes.values():
            if process.returncode is None:
                process.terminate()
        for process in self._processes.values():
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
