"""Find the file descriptor of PJSIP's SIP socket, so the asyncio loop can wake when a request arrives.

pjsua2 does not expose its sockets. Linux does: `/proc/self/net/udp{,6}` maps a bound port to a
socket inode, and `/proc/self/fd/*` links name the inode (`socket:[12345]`). Parsing is pure
(`udp_inodes`), the lookup reads /proc. Anywhere else (or if the table cannot be read) the answer
is None and the worker falls back to polling at its busy rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC_NET = (Path("/proc/self/net/udp"), Path("/proc/self/net/udp6"))
FD_DIR = Path("/proc/self/fd")


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


def udp_socket_fd(port: int) -> int | None:
    """This process's UDP socket bound to `port`, or None when it cannot be found."""
    inodes: set[int] = set()
    for table in PROC_NET:
        try:
            inodes |= udp_inodes(table.read_text(encoding="ascii"), port)
        except OSError:
            continue
    if not inodes:
        return None
    try:
        return fd_of_inode(inodes, _links())
    except OSError:
        return None
