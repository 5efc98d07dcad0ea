"""Before `hotline-gateway run` starts anything: one run per data directory, every address it will
bind free, and, when one is not, which process holds it.

A second `make run` beside a running one used to reach the first one's Redis and die on a
traceback, and a media worker whose SIP port an orphan held crash-looped on a bare pjsua2 error.
`run` now refuses at once, with one line per problem:

- the run lock: an exclusive `flock` on `<embedded redis dir>/run.lock`, held for the run's life
  and released by the kernel however the run ends (SIGKILL included), so it never goes stale;
- the addresses: HTTP and seats (TCP), the embedded Redis (TCP), the SIP front and every media
  worker slot (UDP), each tried with a bind of our own, as the servers will bind them.

Finding the holder of a port reads /proc (Linux): the socket's inode in /proc/net/{tcp,udp}{,6},
then the process with a descriptor on that inode. Elsewhere, or for another user's process, the
message names the address only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from gateway.config import GatewayConfig, split_listen
from gateway.errors import ConfigError, FieldError

Protocol = Literal["tcp", "udp"]
_TCP_LISTEN = "0A"  # the state column of a listening socket in /proc/net/tcp


@dataclass(frozen=True, slots=True)
class Address:
    protocol: Protocol
    host: str
    port: int
    what: str  # e.g. "HTTP intake (http.listen)"
    setting: str  # the config field to change

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol.upper()} {host}:{self.port}"


def planned_addresses(config: GatewayConfig, embedded_redis: bool) -> list[Address]:
    """Every address `run` binds itself or through its children (port 0 means any: not checked)."""
    found = [
        Address("tcp", *split_listen(config.http.listen), "HTTP intake", "http.listen"),
        Address("tcp", *split_listen(config.seats.listen), "agent seats", "seats.listen"),
    ]
    if embedded_redis:
        found.append(Address("tcp", "127.0.0.1", config.redis.embedded.port, "embedded Redis", "redis.embedded.port"))
    if config.sipfront.enabled:
        found.append(Address("udp", *split_listen(config.sipfront.listen), "SIP front (Kamailio)", "sipfront.listen"))
    voice = config.voice
    if voice.enabled:
        host, first = split_listen(voice.listen)
        slots = voice.pool_bounds()[1]
        found += [
            Address("udp", host, first + n, f"media worker {voice.worker_id_prefix}w{n + 1}", "voice.listen")
            for n in range(slots)
        ]
    return [address for address in found if address.port]


def in_use(address: Address) -> bool:
    """Whether binding `address` as its server will fails because something else holds it."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    kind = socket.SOCK_STREAM if address.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as probe:
        if address.protocol == "tcp":
            # As aiohttp and websockets bind: a port left in TIME_WAIT by a previous run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def socket_inodes(table: str, port: int, listening_only: bool) -> set[int]:
    """Inodes of the sockets on local `port` in a /proc/net/{tcp,udp}{,6} table (header first)."""
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1]:
            continue
        if int(fields[1].rsplit(":", 1)[1], 16) != port:
            continue
        if listening_only and fields[3] != _TCP_LISTEN:
            continue
        inodes.add(int(fields[9]))
    return inodes


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def holder_of(address: Address, proc: Path = Path("/proc")) -> Holder | None:
    """The process holding `address`, when /proc tells (our own user's processes only)."""
    inodes: set[int] = set()
    for suffix in ("", "6"):
        try:
            table = (proc / "net" / f"{address.protocol}{suffix}").read_text(encoding="ascii")
        except OSError:
            continue
        inodes |= socket_inodes(table, address.port, listening_only=address.protocol == "tcp")
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid, links in _descriptors(proc):
        if wanted & links:
            return Holder(pid, _command(proc, pid))
    return None


def _descriptors(proc: Path) -> Iterator[tuple[int, set[str]]]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # gone meanwhile, or another user's
            continue
        yield int(entry.name), set(_links(descriptors))


def _links(descriptors: Iterable[Path]) -> Iterator[str]:
    for descriptor in descriptors:
        try:
            yield os.readlink(descriptor)
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue


def _command(proc: Path, pid: int) -> str:
    try:
        words = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(word.decode(errors="replace") for word in words if word)
    return text[:120] or "?"


def address_problems(addresses: Iterable[Address]) -> list[FieldError]:
    problems = []
    for address in addresses:
        if not in_use(address):
            continue
        holder = holder_of(address)
        held = f"held by {holder}" if holder else "held by another process (not found in /proc)"
        problems.append(FieldError(address.setting, f"{address} for the {address.what} is in use: {held}"))
    return problems


class RunLock:
    """An exclusive lock on a run's data directory, for the run's whole life."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "run.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                "another `hotline-gateway run` is using this data directory",
                (FieldError("redis.embedded.dir", f"{self.path.parent} is locked by {owner}; stop it first (Ctrl-C)"),),
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None


def check_addresses(config: GatewayConfig, embedded_redis: bool) -> None:
    """Raise `ConfigError` listing every address `run` needs that something else holds."""
    problems = address_problems(planned_addresses(config, embedded_redis))
    if problems:
        raise ConfigError("cannot start: addresses in use (is another gateway running?)", tuple(problems))
