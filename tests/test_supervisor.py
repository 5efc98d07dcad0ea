"""The media worker supervisor: a worker refused for its configuration is not restarted in a loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.shell.supervisor import WorkerSpec, WorkerSupervisor


async def test_a_worker_refused_for_its_config_is_not_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text("[voice]\nenabled = 'sometimes'\n")
    supervisor = WorkerSupervisor(str(bad), "redis://127.0.0.1:1/0", restart_delay=0.05)
    caplog.set_level(logging.WARNING, logger="gateway.shell.supervisor")
    supervisor.start_worker(WorkerSpec("w1", "127.0.0.1:5999"))
    task = supervisor._tasks["w1"]
    await asyncio.wait_for(asyncio.shield(task), 30)  # ends on its own: no restart loop
    assert [r.getMessage() for r in caplog.records] == ["media worker w1 refused to start (exit 2); not restarted"]
    await supervisor.stop()


def test_the_restart_delay_doubles_with_quick_exits_in_a_row_up_to_a_bound() -> None:
    from gateway.shell.supervisor import MAX_RESTART_DELAY, restart_delay

    assert [restart_delay(1.0, n) for n in range(7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert restart_delay(1.0, 100) == MAX_RESTART_DELAY
