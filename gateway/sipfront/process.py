"""Kamailio as a supervised child process.

Kamailio runs in the foreground (`-DD -E`): the process we start stays Kamailio's main process and
logs to stderr, though it still forks its receivers, timers and the control process. It gets its
own session (process group), so stopping it can reach every process it forked, and nothing else.
Its main process gets SIGTERM when the gateway dies, however it dies (PR_SET_PDEATHSIG): it then
stops its children and removes its pid file. (Its children outlive a main process that is itself
SIGKILLed: `_end` kills the whole group.)
`-P` writes the main pid; `-Y` keeps its runtime files beside the rendered config.

Ready means Kamailio answers an RPC on its control socket (`kamcmd core.uptime`): the control
process that answers is forked only after every module initialised and every route was fixed up,
so a config that fails its run-time fixups never looks ready. (The socket itself accepts
connections earlier, from module init on: a connect alone would not prove it.)

When Kamailio dies, `supervise()` starts it again after `restart_delay` (doubling up to 30 s while
it keeps failing). Its state is in memory: registrations are lost until the phones re-register,
and the call-load table starts empty (see docs/deploy.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from gateway.shell.embedded_redis import die_with_parent
from gateway.shell.supervisor import STABLE_AFTER, restart_delay
from gateway.shell.tasks import stop_task
from gateway.sipfront.kamailio import SipFrontError
from gateway.sipfront.rpc import kamcmd

if TYPE_CHECKING:
    from gateway.sipfront.config import KamailioConfig
    from gateway.sipfront.kamailio import FrontPaths

log = logging.getLogger("gateway.sipfront")



@dataclass(frozen=True, slots=True)
class KamailioCommand:
    binary: str
    cfg: Path
    pidfile: Path
    run_dir: Path
    ctl_socket: Path
    shm_mb: int = 64
    kamcmd: str = "kamcmd"

    @classmethod
    def for_paths(cls, front: KamailioConfig, paths: FrontPaths) -> KamailioCommand:
        return cls(front.binary, paths.cfg, paths.pidfile, paths.dir, paths.ctl_socket, front.shm_mb, front.kamcmd)

    def args(self) -> list[str]:
        args = [self.binary, "-DD", "-E", "-f", str(self.cfg), "-P", str(self.pidfile)]
        return [*args, "-Y", str(self.run_dir), "-m", str(self.shm_mb)]


class KamailioProcess:
    """Start, watch, restart and stop one Kamailio."""

    def __init__(
        self,
        command: KamailioCommand,
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 10.0,
        restart_delay: float = 1.0,
    ) -> None:
        self.command = command
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.ready_timeout = ready_timeout
        self.restart_delay = restart_delay
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        # Called each time a Kamailio this object started is ready (the first start and restarts),
        # and each time one exits on its own (not by stop()), before it is started again.
        self.on_ready: Callable[[], None] | None = None
        self.on_exit: Callable[[], None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    async def start(self) -> None:
        """Start Kamailio and wait until it is ready; SipFrontError (with its log) if it is not."""
        self._stopping = False
        await self._start()

    async def _start(self) -> None:
        self._refuse_if_running()
        await self._spawn()
        try:
            await self._wait_ready()
        except SipFrontError:
            await self._end()
            raise
        if self.on_ready is not None:
            self.on_ready()

    def supervise(self) -> None:
        """Restart Kamailio whenever it exits, until `stop()`."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._keep(), name="kamailio")

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM to the main process (it stops its children), SIGKILL to the group after `grace`."""
        self._stopping = True
        await stop_task(self._watch)
        self._watch = None
        return await self._end(grace)

    # --- internals ---------------------------------------------------------------------------

    def _refuse_if_running(self) -> None:
        """Another Kamailio on the same files would answer our readiness probe: refuse to start.
        A stale control socket (left by a killed Kamailio) is removed."""
        other = _running_pid(self.command.pidfile)
        if other is not None and other != self.pid:
            raise SipFrontError(f"kamailio already runs with {self.command.pidfile} (pid {other}); stop it first")
        with contextlib.suppress(FileNotFoundError):
            self.command.ctl_socket.unlink()

    async def _spawn(self) -> None:
        self.command.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._log_file() as output:
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *self.command.args(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT if output is not None else None,
                    env=self.env,
                    start_new_session=True,
                    # If the gateway dies without stopping it (SIGKILL too), Kamailio's main process
                    # gets SIGTERM: it stops its children, removes its pid file and frees the port.
                    preexec_fn=die_with_parent,
                )
            except FileNotFoundError:
                raise SipFrontError(f"{self.command.binary} not found (Debian package kamailio)") from None
        self.starts += 1
        log.info("kamailio started (pid %d, %s)", self.process.pid, self.command.cfg)

    @contextlib.contextmanager
    def _log_file(self) -> Iterator[IO[bytes] | None]:
        if self.log_path is None:
            yield None
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[bytes] = self.log_path.open("ab")
        try:
            yield handle
        finally:
            handle.close()

    async def _wait_ready(self) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while True:
            if self.process.returncode is not None:
                raise SipFrontError(f"kamailio exited with {self.process.returncode} while starting{self._tail()}")
            if await _answers(self.command):
                return
            if loop.time() >= deadline:
                raise SipFrontError(f"kamailio not ready within {self.ready_timeout} s{self._tail()}")
            await asyncio.sleep(0.05)

    def _tail(self, lines: int = 12) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        wanted = [line for line in text if "ERROR" in line or "CRITICAL" in line] or text
        return ":\n" + "\n".join(wanted[-lines:])

    async def _end(self, grace: float = 5.0) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
        # Whatever Kamailio forked and left behind is in its own group: end it too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                log.error("kamailio (pid %d) did not exit after SIGKILL", process.pid)
        return process.returncode

    async def _keep(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            assert self.process is not None
            started = loop.time()
            code = await self.process.wait()
            if self._stopping:
                return
            if self.on_exit is not None:
                self.on_exit()
            await self._end()
            failures = 0 if loop.time() - started > STABLE_AFTER else failures + 1
            delay = restart_delay(self.restart_delay, failures)
            log.warning("kamailio exited with %s; restarting in %.1f s (agent phones must re-register)", code, delay)
            await asyncio.sleep(delay)
            try:
                await self._start()
            except SipFrontError as exc:
                log.error("kamailio restart failed: %s", exc)


def _running_pid(pidfile: Path) -> int | None:
    """The pid in a Kamailio pid file if that process still runs Kamailio, else None."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"kamailio" in cmdline else None


async def _answers(command: KamailioCommand) -> bool:
    if not command.ctl_socket.exists():
        return False
    try:
        await kamcmd(command.kamcmd, command.ctl_socket, "core.uptime", timeout=1.0)
    except SipFrontError:
        return False
    return True
