"""Background tasks stop when asked, even a loop that swallowed one cancellation."""

from __future__ import annotations

import asyncio

from gateway.shell.tasks import stop_task


async def test_a_loop_that_swallowed_a_cancellation_is_stopped_all_the_same() -> None:
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)  # a blocking read that eats the cancellation (redis-py)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()  # as a library that swallows it leaves the task

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await stop_task(task, resend=0.05)
    assert task.cancelled() and swallowed == 1


async def test_a_finished_task_or_none_is_left_alone() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_task(done)
    await stop_task(None)
    assert done.done() and not done.cancelled()
