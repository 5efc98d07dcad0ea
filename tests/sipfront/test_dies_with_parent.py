"""Kamailio dies with the process that started it, whatever kills that process (SIGKILL included):
its main process, the children it forked, its pid file and its SIP port all go within seconds.

The parent here is a small Python process that starts Kamailio with the code `run` uses
(`KamailioProcess`) and is then SIGKILLed, so nothing of it runs a cleanup. Its PATH holds Kamailio's
programs and nothing else: this used to rely on util-linux's `setpriv --pdeathsig`, and without it (not found)
Kamailio outlived its parent and kept the SIP port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.sipfront.kamailio import free_udp_port, write_front
from peers.flows import DEFAULT_FLOW
from peers.gateway_config import make_raw_config
from peers.sip import udp_bound
from tests.sipfront.front_stack import cover_flow_queues

pytestmark = pytest.mark.slow

PARENT = """
import asyncio, sys
from pathlib import Path
from gateway.sipfront.kamailio import FrontPaths
from gateway.sipfront.process import KamailioCommand, KamailioProcess

async def main() -> None:
    paths = FrontPaths(Path(sys.argv[1]))
    command = KamailioCommand("kamailio", paths.cfg, paths.pidfile, paths.dir, paths.ctl_socket, 32)
    kamailio = KamailioProcess(command, log_path=paths.log)
    await kamailio.start()
    print(kamailio.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def tree(root: int) -> set[int]:
    """`root` and every process below it."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        children = {pid for pid, ppid in parents.items() if ppid == parent} - found
        found |= children
        todo.extend(children)
    return found


async def test_kamailio_and_its_children_die_with_a_sigkilled_parent(
    tmp_path: Path, run_dir: Path, kamailio_available: None
) -> None:
    port = free_udp_port()
    raw = make_raw_config("t", "redis://127.0.0.1:1/0")
    raw["voice"] = {"enabled": True, "flows": [str(DEFAULT_FLOW)], "listen": "127.0.0.1:5101", "embedded_workers": 2}
    cover_flow_queues(raw, DEFAULT_FLOW)
    raw["sipfront"] = {"enabled": True, "listen": f"127.0.0.1:{port}", "dir": str(run_dir), "children": 2}
    paths = write_front(parse_config(raw, tmp_path)).paths
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kamailio", "kamcmd"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(paths.dir), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": str(bin_dir)},
    )  # fmt: skip
    assert parent.stdout is not None
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 20)
        main = int(line)
        kamailio = tree(main)
        assert len(kamailio) >= 4, f"kamailio forks its receivers, timers and control process: {kamailio}"
        assert udp_bound(port) and int(paths.pidfile.read_text()) == main
    finally:
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
    killed_at = time.monotonic()

    def left() -> list[str]:
        living = [f"pid {pid}" for pid in sorted(kamailio) if alive(pid)]
        return living + [f"UDP {port} bound"] * udp_bound(port) + [f"{paths.pidfile}"] * paths.pidfile.exists()

    try:
        async with asyncio.timeout(5):
            while left():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"5 s after its parent was killed, Kamailio left: {left()}") from None
    finally:
        for pid in [pid for pid in kamailio if alive(pid)]:  # a failed run leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
    gone_in = time.monotonic() - killed_at
    print(f"\nkamailio ({len(kamailio)} processes), its port and pid file gone {gone_in:.2f} s after the kill")
    assert not paths.ctl_socket.exists()
    assert paths.cfg.exists()  # the rendered files stay
