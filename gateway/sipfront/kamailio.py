"""kamailio.cfg and the dispatcher list, rendered from the gateway's typed config, then checked.

Rendering is pure (`render_cfg`, `render_dispatcher`): the template `kamailio.cfg.tmpl` has
`{{name}}` placeholders, every one must be filled and every value used, and each value is built
here from validated settings (addresses, networks, user names, variable names): nothing free-form
reaches the file.

Checking needs the real binary: `kamailio -c` parses the file, but run-time fixups (a function
whose module is missing a parameter, a pseudo-variable of an unloaded module) only fail at start,
so `start_check` also starts a copy in the foreground on a free loopback port for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigError, FieldError, GatewayError
from gateway.sipfront.config import KAMAILIO_DEBUG, KamailioConfig, split_host_port
from gateway.sipfront.pool import Destination, boot_enabled, destinations

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# sockaddr_un.sun_path is 108 bytes; leave room for Kamailio's own suffixes.
MAX_SOCKET_PATH = 100


class SipFrontError(GatewayError):
    """Kamailio refused its config, did not start, or is not reachable."""

    code = "sipfront"


@dataclass(frozen=True, slots=True)
class FrontPaths:
    """Where the rendered front lives (all under `[sipfront] dir`, in git-ignored var/)."""

    dir: Path

    @property
    def cfg(self) -> Path:
        return self.dir / "kamailio.cfg"

    @property
    def dispatcher(self) -> Path:
        return self.dir / "dispatcher.list"

    @property
    def pidfile(self) -> Path:
        return self.dir / "kamailio.pid"

    @property
    def ctl_socket(self) -> Path:
        return self.dir / "kamailio_ctl"

    @property
    def log(self) -> Path:
        return self.dir / "kamailio.log"


def front_paths(config: GatewayConfig) -> FrontPaths:
    paths = FrontPaths(config.resolve(config.sipfront.dir))
    if len(str(paths.ctl_socket)) > MAX_SOCKET_PATH:
        problem = FieldError("sipfront.dir", f"too long for a unix control socket: {paths.ctl_socket}")
        raise ConfigError("invalid configuration", (problem,))
    return paths


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every `{{name}}`; a placeholder without a value or a value without a placeholder is
    a bug in this module, not in the user's config."""
    wanted = set(_PLACEHOLDER.findall(template))
    if missing := wanted - values.keys():
        raise KeyError(f"no value for {sorted(missing)}")
    if unused := values.keys() - wanted:
        raise KeyError(f"no placeholder for {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _listen_line(front: KamailioConfig, listen: str) -> str:
    host, port = split_host_port(listen)
    line = f"udp:{_bracket(host)}:{port}"
    if front.advertise:
        ahost, aport = split_host_port(front.advertise)
        line += f" advertise {_bracket(ahost)}:{aport}"
    return line


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def uri_address(listen: str) -> str:
    """HOST:PORT as it goes into a SIP URI (an IPv6 host in brackets)."""
    host, port = split_host_port(listen)
    return f"{_bracket(host)}:{port}"


def _alias_lines(front: KamailioConfig, listen: str) -> str:
    names = [listen, *([front.advertise] if front.advertise else []), *front.aliases]
    unique = list(dict.fromkeys(names))
    return "\n".join(f'alias="{name}"' for name in unique)


def _phone_lines(front: KamailioConfig) -> str:
    lines = []
    for user, env in sorted(front.phones.items()):
        lines += [
            f'    if ($env({env}) != $null && $env({env}) != "") {{',
            f"        $sht(agents=>{user}) = $env({env});",
            "    }",
        ]
    count = len(front.phones)
    lines.append(f'    xlog("L_INFO", "sipfront: {count} agent phone(s), passwords from the environment\\n");')
    return "\n".join(lines)


def render_cfg(config: GatewayConfig, paths: FrontPaths, *, listen: str | None = None, source: str = "") -> str:
    """kamailio.cfg for this config; `listen` overrides the address (the start check's copy)."""
    front = config.sipfront
    listen = listen or front.listen
    advertised = front.advertise or listen
    self_host, self_port = split_host_port(listen)  # requests from here are the gateway's (route[HELD])
    values = {
        "source": source or "the gateway config",
        "log_level": str(KAMAILIO_DEBUG[front.log_level]),
        "children": str(front.children),
        "listen": _listen_line(front, listen),
        "aliases": _alias_lines(front, listen),
        "fr_timer_ms": str(int(front.fr_timer * 1000)),
        "fr_inv_timer_ms": str(int(front.fr_inv_timer * 1000)),
        "ctl_socket": str(paths.ctl_socket),
        "register_min_expires": str(front.register_min_expires),
        "register_default_expires": str(front.register_default_expires),
        "register_max_expires": str(front.register_max_expires),
        "pike_window": str(front.pike_window),
        "pike_requests": str(front.pike_requests),
        "pike_block": str(front.pike_forget),
        "dispatcher_list": str(paths.dispatcher),
        "load_expire": str(front.call_load_expire),
        "dialog_timeout": str(front.call_load_expire),
        "ping_interval": str(front.probe_interval),
        "listen_host": _bracket(split_host_port(advertised)[0]),
        "self_host": self_host,
        "self_port": str(self_port),
        "self_address": uri_address(listen),
        "trunks": ",".join(front.trunks),
        "max_message_bytes": str(front.max_message_bytes),
        "max_tries": str(front.failover_tries),
        "phones": _phone_lines(front),
    }
    return fill(TEMPLATE.read_text(encoding="utf-8"), values)


DISABLED = 4  # dispatcher flag: an admin-disabled destination, neither selected nor probed


def render_dispatcher(entries: list[Destination], enabled: set[str] | None = None) -> str:
    """Set 1, one line per worker: `1 sip:HOST:PORT FLAGS 0 duid=ID;maxload=N`; FLAGS is 0, or 4 for
    a destination not in `enabled` (None: all enabled)."""
    lines = ["# set uri flags priority attrs -- rendered by hotline-gateway"]
    for entry in entries:
        flags = 0 if enabled is None or entry.duid in enabled else DISABLED
        lines.append(f"1 {entry.uri} {flags} 0 duid={entry.duid};maxload={entry.maxload}")
    return "\n".join(lines) + "\n"


def write_dispatcher(paths: FrontPaths, entries: list[Destination], enabled: set[str]) -> None:
    """Rewrite the list with the current switches, so a restarted Kamailio starts from them."""
    _write(paths.dispatcher, render_dispatcher(entries, enabled))


@dataclass(frozen=True, slots=True)
class Rendered:
    paths: FrontPaths
    destinations: list[Destination]


def write_front(config: GatewayConfig, source: str = "") -> Rendered:
    """Write kamailio.cfg and dispatcher.list under `[sipfront] dir` (created, mode 700)."""
    paths = front_paths(config)
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = destinations(config)
    _write(paths.dispatcher, render_dispatcher(entries, boot_enabled(config)))
    _write(paths.cfg, render_cfg(config, paths, source=source))
    return Rendered(paths, entries)


def _write(path: Path, text: str) -> None:
    """Write beside, then rename: a running Kamailio never reads a half-written file."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


async def run_tool(args: list[str], timeout: float, late: str) -> tuple[int, str]:
    """Run one of Kamailio's programs to its end: (exit status, stdout and stderr as text).
    SipFrontError when it is not installed, or with `late` when it runs past `timeout` s."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except FileNotFoundError:
        raise SipFrontError(f"{args[0]} not found (Debian package kamailio)") from None
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):  # it may have ended just as time ran out
            proc.kill()
        await proc.wait()
        raise SipFrontError(late) from None
    return proc.returncode or 0, output.decode(errors="replace")


async def syntax_check(binary: str, cfg: Path, timeout: float = 20.0) -> str:
    """`kamailio -c -f cfg`: the parser's verdict. Raises SipFrontError with its output."""
    code, text = await run_tool(
        [binary, "-c", "-f", str(cfg)], timeout, f"{binary} -c did not finish within {timeout} s"
    )
    if code != 0:
        raise SipFrontError(f"{binary} -c -f {cfg} failed:\n{_errors_only(text)}")
    return text


def _errors_only(text: str) -> str:
    lines = [line for line in text.splitlines() if re.search(r"ERROR|CRITICAL|error", line)]
    return "\n".join(lines[-15:]) or text[-1500:]


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def start_check(config: GatewayConfig, rendered: Rendered, timeout: float = 10.0) -> None:
    """Start a copy of the rendered front for a moment, on a free loopback port with its own
    control socket, so a run-time fixup error shows now rather than when `run` starts it."""
    from gateway.sipfront.process import KamailioCommand, KamailioProcess

    front = config.sipfront
    with tempfile.TemporaryDirectory(prefix="hg-sipfront-") as scratch:
        paths = FrontPaths(Path(scratch))
        # The copy probes the same workers (one OPTIONS each, harmless) from its own files.
        shutil.copyfile(rendered.paths.dispatcher, paths.dispatcher)
        cfg = render_cfg(config, paths, listen=f"127.0.0.1:{free_udp_port()}", source="start check")
        paths.cfg.write_text(cfg, encoding="utf-8")
        command = KamailioCommand.for_paths(front, paths)
        process = KamailioProcess(command, log_path=paths.log, ready_timeout=timeout)
        try:
            await process.start()
        finally:
            await process.stop()
