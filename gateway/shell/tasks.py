"""Background tasks that are kept referenced until done, their failures logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("gateway.shell.tasks")


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop.

    redis-py (8.1, measured) can swallow a cancellation that lands while a blocking command (XREAD
    BLOCK, a pub/sub read) is under way and return an empty answer instead; a loop that only stops
    by cancellation then runs on, and whoever awaits it waits forever. Call this after each
    blocking Redis call in a loop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[Any] | None, resend: float = 0.5) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `resend` seconds.

    One cancellation is not always enough: redis-py can swallow one during a blocking read (see
    `stop_if_cancelled`), and a loop that then sleeps on never stops (a `run` hung 16 minutes on
    SIGTERM in its worker pool's loop, seen once in a full suite run). Whatever the task raises
    as it ends is its own business here: it was asked to stop."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=resend)
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s failed as it stopped: %r", task.get_name(), task.exception())


class Tasks:
    """Background tasks kept referenced until done; errors are logged, never lost silently."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def drain(self, timeout: float = 5.0) -> None:
        """Let running tasks finish (bounded: a shutdown must never hang), then cancel the rest."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            log.warning("cancelling background task %s at shutdown", task.get_name())
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=1.0)
