"""Asking a running Kamailio through its control socket (`kamcmd`), and reading the answers.

kamcmd prints nested `{ KEY: value }` blocks and exits 0 even when the RPC failed (it prints
`error: CODE - reason`), so every answer is checked for that line. A numeric argument would be
sent as an integer: string arguments go with kamcmd's `s:` prefix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.sipfront.kamailio import SipFrontError, run_tool

log = logging.getLogger("gateway.sipfront")

_ERROR = re.compile(r"^error:\s*(?P<code>\d+)\s*-\s*(?P<reason>.*)$", re.I | re.M)
_FIELD = re.compile(r"^\s*(?P<key>[A-Za-z-]+):\s*(?P<value>.*?)\s*$")


class FrontNotRunning(SipFrontError):
    """Nothing answers on Kamailio's control socket: the front is not running (or is starting)."""


class RpcError(SipFrontError):
    """Kamailio answered the RPC with an error (`code` is its status, e.g. 500)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def kamcmd(binary: str, ctl_socket: Path, *args: str, timeout: float = 3.0) -> str:
    """Run one RPC; FrontNotRunning when nothing listens on the control socket, RpcError when
    Kamailio says no, SipFrontError otherwise. kamcmd's own words (errno texts) go to the debug log."""
    method = args[0] if args else "rpc"
    late = f"kamcmd {method} got no answer within {timeout} s"
    code, text = await run_tool([binary, "-s", f"unix:{ctl_socket}", *args], timeout, late)
    if "connect_unix_sock" in text:
        log.debug("kamcmd %s: %s", method, text.strip()[:200])
        raise FrontNotRunning(f"the SIP front is not running: nothing answers on {ctl_socket}")
    if code != 0:
        log.debug("kamcmd %s: %s", method, text.strip()[:200])
        raise SipFrontError(f"kamcmd {method} failed (exit status {code})")
    if match := _ERROR.search(text):
        raise RpcError(f"{args[0] if args else 'rpc'}: {match['reason']}", int(match["code"]))
    return text


@dataclass(frozen=True, slots=True)
class Target:
    """One dispatcher destination at run time.

    `flags` is Kamailio's two letters: A(ctive)/I(nactive)/D(isabled)/T(rying), then P(robing)
    or X. `load` is the calls it holds by alg 10's count (DLGLOAD).
    """

    uri: str
    flags: str
    duid: str
    maxload: int
    load: int

    @property
    def active(self) -> bool:
        return self.flags.startswith("A")

    @property
    def address(self) -> str:
        return self.uri.removeprefix("sip:").split(";", 1)[0]


def parse_dispatcher_list(text: str) -> list[Target]:
    """The destinations in `dispatcher.list` output, in order (line-based: one DEST per URI)."""
    targets: list[Target] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        match = _FIELD.match(line)
        if not match:
            continue
        key, value = match["key"].upper(), match["value"]
        if key == "URI":
            if current is not None:
                targets.append(_target(current))
            current = {"URI": value}
        elif current is not None and key in ("FLAGS", "DUID", "MAXLOAD", "DLGLOAD"):
            current[key] = value
    if current is not None:
        targets.append(_target(current))
    return targets


def _target(fields: dict[str, str]) -> Target:
    return Target(
        uri=fields["URI"],
        flags=fields.get("FLAGS", ""),
        duid=fields.get("DUID", ""),
        maxload=_int(fields.get("MAXLOAD")),
        load=_int(fields.get("DLGLOAD")),
    )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def parse_contacts(text: str) -> list[str]:
    """Contact URIs in a `ul.lookup` answer."""
    return [m.group(1) for m in re.finditer(r"^\s*Address:\s*(\S+)\s*$", text, re.M)]


def parse_htable(text: str) -> dict[str, int]:
    """Integer items of an `htable.dump` answer, by name."""
    items = re.findall(r"^\s*name:\s*(\S+)\s*\n\s*value:\s*(-?\d+)\s*$", text, re.M)
    return {name: int(value) for name, value in items}


def parse_dialog_ids(text: str) -> list[tuple[str, str]]:
    """(h_entry, h_id) of each dialog in a `dlg.profile_list` / `dlg.list` answer."""
    entries = re.findall(r"^\s*h_entry:\s*(\d+)\s*$", text, re.M)
    ids = re.findall(r"^\s*h_id:\s*(\d+)\s*$", text, re.M)
    return list(zip(entries, ids, strict=False))


class FrontRpc:
    """The RPCs the gateway uses, against one control socket."""

    def __init__(self, kamcmd_binary: str, ctl_socket: Path, timeout: float = 3.0) -> None:
        self.binary = kamcmd_binary
        self.ctl_socket = ctl_socket
        self.timeout = timeout

    async def call(self, *args: str) -> str:
        return await kamcmd(self.binary, self.ctl_socket, *args, timeout=self.timeout)

    async def dispatcher(self) -> list[Target]:
        try:
            return parse_dispatcher_list(await self.call("dispatcher.list"))
        except RpcError as exc:
            if "no destination sets" in str(exc).lower():  # an empty dispatcher list
                return []
            raise

    async def contacts(self, user: str) -> list[str]:
        """The phone's registered contacts; [] when it has none."""
        try:
            return parse_contacts(await self.call("ul.lookup", "location", f"s:{user}"))
        except RpcError as exc:
            if exc.status == 500 and "not found" in str(exc).lower():
                return []
            raise

    async def request(self, method: str, ruri: str, headers: dict[str, str]) -> None:
        """Kamailio sends `method` to `ruri` itself (tm.t_uac_start: returns once sent, not answered).
        Headers as given; tm adds Via, the From tag and Max-Forwards."""
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        await self.call("tm.t_uac_start", method, ruri, ".", ".", lines + "Content-Type: text/plain\r\n")

    async def htable(self, table: str) -> dict[str, int]:
        """The integer items of one of kamailio.cfg's htables."""
        return parse_htable(await self.call("htable.dump", table))

    async def set_item(self, table: str, key: str, value: int) -> None:
        await self.call("htable.seti", table, f"s:{key}", str(value))

    async def end_dialogs(self, worker_uri: str) -> int:
        """End every call Kamailio tracks for the worker at `worker_uri` (sip:HOST:PORT): Kamailio
        sends BYE to both sides. Returns how many it ended."""
        answer = await self.call("dlg.profile_list", "hg_worker", worker_uri)
        ended = 0
        for h_entry, h_id in parse_dialog_ids(answer):
            try:
                await self.call("dlg.end_dlg", h_entry, h_id)
            except RpcError as exc:
                log.info("dialog %s:%s of %s already gone: %s", h_entry, h_id, worker_uri, exc)
                continue
            ended += 1
        return ended
