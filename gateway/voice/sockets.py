"""UDP sockets by port, from /proc: PJSIP's own SIP socket, and whoever holds a port the worker wanted.

pjsua2 does not expose its sockets. Linux does: `/proc/self/net/udp{,6}` maps a bound port to a
socket inode, and `/proc/<pid>/fd/*` links name the inode (`socket:[12345]`). Parsing is pure
(`udp_inodes`, `fd_of_inode`), the lookups read /proc. `udp_socket_fd` finds PJSIP's SIP socket so
the asyncio loop can wake when a request arrives (None anywhere else: the worker then polls at its
busy rate); `udp_holders` names the processes bound to a port the worker could not bind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC_NET = (Path("/proc/self/net/udp"), Path("/proc/self/net/udp6"))
FD_DIR = Path("/proc/self/fd")
PROC = Path("/proc")


def udp_inodes(table: str, port: int) -> set[int]:
    """Inodes of the sockets bound to `port` in a /proc/net/udp(6) table (the first line is a header)."""
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1]:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port:
            inodes.add(int(fields[9]))
    return inodes


def fd_of_inode(inodes: set[int], fds: Iterable[tuple[int, str]]) -> int | None:
    """The first fd whose link target is one of the sockets (`socket:[INODE]`)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd, target in fds:
        if target in wanted:
            return fd
    return None


def _links() -> Iterable[tuple[int, str]]:
    for name in os.listdir(FD_DIR):
        try:
            yield int(name), os.readlink(FD_DIR / name)
        except (OSError, ValueError):
            continue  # closed between listdir and readlink, or not a number


def _port_inodes(port: int) -> set[int]:
    inodes: set[int] = set()
    for table in PROC_NET:
        try:
            inodes |= udp_inodes(table.read_text(encoding="ascii"), port)
        except OSError:
            continue
    return inodes


def udp_socket_fd(port: int) -> int | None:
    """This process's UDP socket bound to `port`, or None when it cannot be found."""
    inodes = _port_inodes(port)
    if not inodes:
        return None
    try:
        return fd_of_inode(inodes, _links())
    except OSError:
        return None


def udp_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command name) of every other process with a UDP socket bound to `port`, as far as /proc
    lets this one see (another user's processes are hidden unless it runs as root). The name is
    `/proc/<pid>/comm`, not the command line, which may carry secrets."""
    inodes = _port_inodes(port)
    found: list[tuple[int, str]] = []
    if not inodes:
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [(int(fd), os.readlink(entry / "fd" / fd)) for fd in os.listdir(entry / "fd")]
            if fd_of_inode(inodes, links) is not None:
                found.append((int(entry.name), (entry / "comm").read_text(encoding="utf-8", errors="replace").strip()))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to look at
    return found
