"""Real SIP test peers for voice tests: baresip (caller, agent phone) and SIPp (UAC/UAS scenarios).

Everything runs on 127.0.0.1 with ports chosen free at run time, every wait is bounded, and every
process is ended by `close()` (or `async with`). Generated files (configs, dumps, SIPp logs) go under
the work directory the caller passes in, normally pytest's `tmp_path`.

Measured facts this harness relies on (baresip 1.0.0, SIPp 3.6.1, Debian 12):

- baresip's ctrl_tcp speaks netstrings (`LEN:JSON,`) both ways. Commands are
  `{"command": .., "params": .., "token": ..}`; responses `{"response": true, "ok": .., "data": ..,
  "token": ..}`; events `{"event": true, "type": "CALL_ESTABLISHED", "class": "call", "id": ..,
  "param": ..}`.
- `sndcode DIGITS` sends RFC 2833 telephone-events (payload type 101, no SIP INFO), one digit after
  the other about 230 ms apart; a baresip on the other side reports each as a CALL_DTMF_START
  event whose param is the digit, then CALL_DTMF_END. Audio keeps flowing while digits are sent.
  baresip 1.0.0 writes no log line for a received digit: the ctrl_tcp event is the only witness.
- With `audio_source aufile,WAV` baresip hangs up by itself when the WAV ends (CALL_CLOSED with
  param "end of file", after AUDIO_ERROR "0,end of file"): the call lasts as long as the WAV.
- sndfile writes `dump-<YYYY-MM-DD-HH-MM-SS>-enc.wav` (sent) and `-dec.wav` (heard), 8 kHz mono
  16-bit for PCMA; the names have one-second resolution, so two calls that start in the same
  second on one baresip overwrite each other's dumps.
- SIPp's `play_pcap_audio` opens a raw socket: it needs root or CAP_NET_RAW (see `can_play_pcap`).
- SIPp binds a UDP control socket on 0.0.0.0:8888 unless told `-ci/-cp`; we pass both.
- SIPp checks response codes when it loads a scenario, so a status line cannot be a [keyword]:
  variants are rendered from the XML files in `sipp/` instead (`uac_scenario`, `uas_reject_scenario`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import errno
import hashlib
import itertools
import json
import os
import random
import re
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

LOOPBACK = "127.0.0.1"
SIPP_DIR = Path(__file__).parent / "sipp"
PCAP_DIR = Path("/usr/share/sip-tester")
G711A_PCAP = PCAP_DIR / "g711a.pcap"
"""7.05 s of PCMA speech (PT 8, 236 packets) shipped with sip-tester."""
DTMF_PCAP_NAMES = {**{d: d for d in "0123456789"}, "*": "star", "#": "pound"}
DTMF_PCAP_SECONDS = 0.14
"""Each dtmf_2833_*.pcap is 10 packets of PT 101 over 0.14 s."""
BARESIP_MODULE_PATH = Path("/usr/lib/baresip/modules")

_PR_SET_PDEATHSIG = 1


class PeerError(RuntimeError):
    """A test peer failed: it did not start, exited, refused a command or broke its protocol."""


class PeerTimeout(PeerError, TimeoutError):
    """A bounded wait on a test peer ran out."""


# --------------------------------------------------------------------------------------------
# Ports


_handed_out: set[int] = set()


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(*, udp: bool = True, tcp: bool = True, span: int = 1) -> int:
    """A loopback port free right now for the requested transports (kernel-chosen via port 0).

    With `span` > 1, the next span - 1 ports are free too (baresip puts SIP/TLS on its SIP port
    + 1, over TCP). Ports already returned by this module in this process are never returned again.
    """
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        ports = range(port, port + span)
        if any(p in _handed_out for p in ports) or port + span > 65536:
            continue
        if udp and not all(_bindable(p, socket.SOCK_DGRAM) for p in ports[1:]):
            continue
        if tcp and not all(_bindable(p, socket.SOCK_STREAM) for p in ports):
            continue
        _handed_out.update(ports)
        return port
    raise PeerError("no free loopback port found")


def free_port_range(count: int, *, even: bool = True) -> int:
    """Base of `count` consecutive UDP ports free on loopback (even base for RTP/RTCP pairs)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        if even:
            base &= ~1
        ports = range(base, base + count)
        if any(p in _handed_out for p in ports):
            continue
        if all(_bindable(p, socket.SOCK_DGRAM) for p in ports):
            _handed_out.update(ports)
            return base
    raise PeerError(f"no {count} consecutive free UDP ports found")


def udp_bound(port: int, host: str = LOOPBACK) -> bool:
    """Whether some process has a UDP socket bound to host:port (read from /proc, never probes)."""
    wanted = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    anyaddr = f"00000000:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] in (wanted, anyaddr) for line in lines if len(line.split()) > 1)


async def wait_udp_bound(
    port: int, timeout: float, proc: asyncio.subprocess.Process | None = None, host: str = LOOPBACK
) -> None:
    deadline = time.monotonic() + timeout
    while not udp_bound(port, host):
        if proc is not None and proc.returncode is not None:
            raise PeerError(f"process exited with {proc.returncode} before binding UDP {port}")
        if time.monotonic() > deadline:
            raise PeerTimeout(f"nothing bound UDP {host}:{port} within {timeout} s")
        await asyncio.sleep(0.02)


def can_play_pcap() -> bool:
    """Whether SIPp run by this process may play pcaps (it needs a raw socket: root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Processes


def _die_with_parent() -> None:
    """Runs in the child before exec: the peer gets SIGTERM if pytest dies, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def _spawn(args: Sequence[str], log_path: Path, cwd: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )


async def _stop(proc: asyncio.subprocess.Process | None, grace: float = 2.0, *, wait_first: float = 0.0) -> int | None:
    """End a child: wait `wait_first` s for it to exit by itself, then SIGTERM and wait `grace` s,
    then SIGKILL. Returns its exit code (negative: killed by that signal)."""
    if proc is None:
        return None
    if proc.returncode is None and wait_first > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), wait_first)
    for action, patience in ((proc.terminate, grace), (proc.kill, 5.0)):
        if proc.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            action()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), max(patience, 0.05))
    return proc.returncode


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    # baresip's status line redraws itself with carriage returns: keep the text readable
    text = re.sub(r"\[\d+:\d\d:\d\d\] audio=[^\n]*?\(bit/s\)\s*", "", text)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours
    return text[-chars:]


# --------------------------------------------------------------------------------------------
# baresip


class NetstringDecoder:
    """Incremental netstring (`LEN:PAYLOAD,`) decoder with a size limit."""

    def __init__(self, max_size: int = 1 << 20) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            colon = self._buffer.find(b":")
            if colon < 0:
                if len(self._buffer) > 20:
                    raise PeerError(f"bad netstring header: {bytes(self._buffer[:20])!r}")
                return out
            header = bytes(self._buffer[:colon])
            if not header.isdigit():
                raise PeerError(f"bad netstring length: {header[:20]!r}")
            size = int(header)
            if size > self._max_size:
                raise PeerError(f"netstring of {size} bytes exceeds {self._max_size}")
            end = colon + 1 + size
            if len(self._buffer) < end + 1:
                return out
            if self._buffer[end : end + 1] != b",":
                raise PeerError("netstring not terminated by ','")
            out.append(bytes(self._buffer[colon + 1 : end]))
            del self._buffer[: end + 1]


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


@dataclass(frozen=True)
class BaresipEvent:
    """One ctrl_tcp event, e.g. type="CALL_DTMF_START", param="#"."""

    type: str
    klass: str = ""
    param: str | None = None
    call_id: str | None = None
    peer_uri: str | None = None
    direction: str | None = None
    at: float = 0.0
    """time.monotonic() when the harness read it."""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any], at: float) -> BaresipEvent:
        param = data.get("param")
        return cls(
            type=str(data.get("type", "")),
            klass=str(data.get("class", "")),
            param=None if param is None else str(param),
            call_id=data.get("id"),
            peer_uri=data.get("peeruri"),
            direction=data.get("direction"),
            at=at,
            raw=dict(data),
        )


@dataclass(frozen=True)
class CallDump:
    """What sndfile wrote for one call: `enc` is what this peer sent, `dec` what it heard."""

    enc: Path
    dec: Path


DTMF_DIGITS = frozenset("0123456789*#ABCD")


def baresip_config(
    *,
    sip_port: int,
    ctrl_port: int,
    rtp_base: int,
    rtp_count: int,
    audio_source: Path,
    snd_path: Path,
    host: str = LOOPBACK,
) -> str:
    """The `config` file: loopback only (SIP and RTP on `host`, any 127.x address), no sound card,
    no STUN/TURN/ICE, sndfile dumps."""
    lines = [
        ("poll_method", "epoll"),
        ("sip_listen", f"{host}:{sip_port}"),
        ("net_interface", host),
        ("call_local_timeout", "120"),
        ("call_max_calls", "4"),
        ("audio_player", "aubridge,x"),
        ("audio_alert", "aubridge,x"),
        ("audio_source", f"aufile,{audio_source}"),
        ("audio_level", "no"),
        ("audio_buffer", "20-160"),
        ("rtp_ports", f"{rtp_base}-{rtp_base + rtp_count - 1}"),
        ("rtcp_mux", "no"),
        ("jitter_buffer_delay", "5-10"),
        ("rtp_stats", "no"),
        ("module_path", str(BARESIP_MODULE_PATH)),
        ("module", "g711.so"),
        ("module", "aufile.so"),
        ("module", "aubridge.so"),
        ("module", "sndfile.so"),
        ("module_tmp", "account.so"),
        ("module_app", "menu.so"),
        ("module_app", "ctrl_tcp.so"),
        ("ctrl_tcp_listen", f"{LOOPBACK}:{ctrl_port}"),
        ("snd_path", str(snd_path)),
    ]
    return "".join(f"{key}\t{value}\n" for key, value in lines)


def baresip_account(
    *,
    user: str,
    sip_port: int,
    answermode: Literal["manual", "auto"],
    codecs: Sequence[str],
    registrar: str | None,
    auth_pass: str | None,
    regint: int,
    host: str = LOOPBACK,
) -> str:
    """The `accounts` line. Without a registrar the AOR is the phone's own contact and regint=0."""
    if registrar is None:
        aor = f"<sip:{user}@{host}:{sip_port}>"
        params = ["regint=0"]
    else:
        aor = f"<sip:{user}@{registrar}>"
        params = [f"regint={regint}"]
        if auth_pass is not None:
            params.insert(0, f"auth_pass={auth_pass}")
    params += [f"answermode={answermode}", f"audio_codecs={','.join(codecs)}"]
    return aor + ";" + ";".join(params) + "\n"


class Baresip:
    """One baresip process driven over ctrl_tcp.

    Use `Baresip.caller(...)` or `Baresip.agent(...)`, then `await start()` (or `async with`).
    Every method has a timeout; `close()` always ends the process.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        audio_source: Path,
        role: Literal["caller", "agent"] = "caller",
        answermode: Literal["manual", "auto"] = "manual",
        registrar: str | None = None,
        auth_pass: str | None = None,
        regint: int = 60,
        codecs: Sequence[str] = ("pcma", "pcmu"),
        rtp_ports: int = 20,
        sip_trace: bool = False,
        binary: str = "baresip",
        host: str = LOOPBACK,
    ) -> None:
        if not Path(audio_source).is_file():
            raise PeerError(f"audio source {audio_source} does not exist")
        self.role = role
        self.user = user
        self.host = host
        self.workdir = Path(workdir)
        self.audio_source = Path(audio_source).resolve()
        self.answermode = answermode
        self.registrar = registrar
        self._auth_pass = auth_pass
        self.regint = regint
        self.codecs = tuple(codecs)
        self.sip_trace = sip_trace
        self.binary = binary
        self.rtp_count = rtp_ports
        self._allocate_ports()
        self.confdir = self.workdir / "conf"
        self.snd_path = self.workdir / "snd"
        self.log_path = self.workdir / "baresip.log"
        self._tokens = itertools.count(1)
        self._reset()

    def _allocate_ports(self) -> None:
        # UDP and TCP on sip_port, and baresip 1.0.0 always adds SIP/TLS on TCP sip_port + 1
        self.sip_port = free_port(udp=True, tcp=True, span=2)
        self.ctrl_port = free_port(udp=False, tcp=True)
        self.rtp_base = free_port_range(self.rtp_count)

    def _reset(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._events: list[BaresipEvent] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._eof: str | None = None

    @classmethod
    def caller(cls, workdir: Path, wav: Path, *, user: str = "caller", **kwargs: Any) -> Baresip:
        """A caller whose microphone is `wav`; it hangs up by itself when the WAV ends."""
        return cls(workdir, user=user, audio_source=wav, role="caller", answermode="manual", **kwargs)

    @classmethod
    def agent(
        cls,
        workdir: Path,
        wav: Path,
        *,
        user: str = "agent",
        registrar: str | None = None,
        auth_pass: str | None = None,
        regint: int = 60,
        **kwargs: Any,
    ) -> Baresip:
        """An auto-answering agent phone playing `wav` (a call it answers ends when the WAV ends).

        With `registrar="127.0.0.1:PORT"` it REGISTERs as sip:USER@127.0.0.1:PORT (digest with
        `auth_pass`, every `regint` s) and `start()` waits until it is registered.
        """
        return cls(
            workdir,
            user=user,
            audio_source=wav,
            role="agent",
            answermode="auto",
            registrar=registrar,
            auth_pass=auth_pass,
            regint=regint,
            **kwargs,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Baresip {self.role} {self.uri} ctrl={self.ctrl_port} {state}>"

    # -- addresses

    @property
    def uri(self) -> str:
        """The phone's direct SIP URI (its contact): sip:USER@127.0.0.1:SIP_PORT."""
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    @property
    def address(self) -> str:
        """host:port of its SIP socket (UDP and TCP), e.g. a SIPp target."""
        return f"{self.host}:{self.sip_port}"

    @property
    def aor(self) -> str:
        """The address of record: at the registrar when there is one, else `uri`."""
        return f"sip:{self.user}@{self.registrar}" if self.registrar else self.uri

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    # -- lifecycle

    async def start(self, timeout: float = 5.0, *, attempts: int = 3) -> Self:
        """Write the config, run baresip, connect to ctrl_tcp, wait for its SIP socket (and, with
        a registrar, for the registration: PeerError if refused). A port taken meanwhile by someone
        else (baresip exits with EADDRINUSE) is retried on fresh ports, `attempts` times in all."""
        if self._proc is not None:
            raise PeerError("already started")
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.snd_path.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self._write_config()
            args = [self.binary, "-f", str(self.confdir)]
            if self.sip_trace:
                args.append("-s")
            self._proc = await _spawn(args, self.log_path, self.workdir)
            try:
                async with asyncio.timeout(timeout):
                    await self._connect()
                    await wait_udp_bound(self.sip_port, timeout, self._proc, self.host)
                    if self.registrar is not None and self.regint > 0:
                        await self._wait_registered()
                return self
            except TimeoutError:
                await self.close()
                raise PeerTimeout(f"{self!r} not ready within {timeout} s; log:\n{self.log_tail()}") from None
            except PeerError:
                code = await self.close()
                if code != errno.EADDRINUSE or attempt == attempts:
                    raise
                self._reset()
                self._allocate_ports()
            except BaseException:
                await self.close()
                raise
        raise AssertionError("unreachable")

    def _write_config(self) -> None:
        (self.confdir / "config").write_text(
            baresip_config(
                sip_port=self.sip_port,
                ctrl_port=self.ctrl_port,
                rtp_base=self.rtp_base,
                rtp_count=self.rtp_count,
                audio_source=self.audio_source,
                snd_path=self.snd_path,
                host=self.host,
            )
        )
        (self.confdir / "accounts").write_text(
            baresip_account(
                user=self.user,
                sip_port=self.sip_port,
                answermode=self.answermode,
                codecs=self.codecs,
                registrar=self.registrar,
                auth_pass=self._auth_pass,
                regint=self.regint,
                host=self.host,
            )
        )

    async def _connect(self) -> None:
        assert self._proc is not None
        while True:
            if self._proc.returncode is not None:
                raise PeerError(f"baresip exited with {self._proc.returncode}; log:\n{self.log_tail()}")
            try:
                self._reader, self._writer = await asyncio.open_connection(LOOPBACK, self.ctrl_port)
                break
            except OSError:
                await asyncio.sleep(0.03)
        self._read_task = asyncio.create_task(self._read_loop(), name=f"baresip-{self.user}-ctrl")

    async def _wait_registered(self) -> None:
        # REGISTER_OK usually fires before ctrl_tcp is connected (and events are not replayed), so
        # ask: `reginfo` shows OK or ERR after the registrar's final answer.
        while True:
            state = await self.registration_state()
            if state == "OK":
                return
            if state == "ERR":
                raise PeerError(f"{self.aor} failed to register; log:\n{self.log_tail(800)}")
            await asyncio.sleep(0.05)

    async def registration_state(self, timeout: float = 3.0) -> str | None:
        """ "OK" (registered), "ERR" (the registrar refused or did not answer) or None (no answer
        yet, or no registration configured), from the `reginfo` command."""
        info = re.sub(r"\x1b\[[0-9;]*m", "", await self.command("reginfo", timeout=timeout))
        match = re.search(r"^>?\s*\S+\s+(OK|ERR)\b", info, re.M)
        return match.group(1) if match else None

    async def wait_registered(self, timeout: float = 5.0) -> None:
        """Wait until `reginfo` says OK; PeerError if it says ERR, PeerTimeout after `timeout`."""
        try:
            await asyncio.wait_for(self._wait_registered(), timeout)
        except TimeoutError:
            raise PeerTimeout(f"{self.aor} not registered within {timeout} s") from None

    async def close(self, timeout: float = 3.0) -> int | None:
        """Quit baresip (waiting `timeout` s: a registered phone un-REGISTERs first), then SIGTERM,
        then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is not None and proc.returncode is None and self._writer is not None and self._eof is None:
            with contextlib.suppress(PeerError, OSError):
                await self.command("quit", timeout=min(2.0, timeout))
        code = await _stop(proc, grace=1.0, wait_first=timeout)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self._writer = None
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
            self._read_task = None
        return code

    async def __aenter__(self) -> Self:
        if self._proc is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- ctrl_tcp

    async def _read_loop(self) -> None:
        assert self._reader is not None
        decoder = NetstringDecoder()
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    self._eof = "ctrl_tcp connection closed"
                    break
                for payload in decoder.feed(data):
                    self._dispatch(json.loads(payload))
        except (OSError, PeerError, ValueError) as error:
            self._eof = f"ctrl_tcp failed: {error}"
        finally:
            if self._eof is None:
                self._eof = "ctrl_tcp reader stopped"
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(PeerError(f"{self.user}: {self._eof}"))
            self._changed.set()

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        if message.get("event"):
            self._events.append(BaresipEvent.parse(message, time.monotonic()))
            self._changed.set()
        elif message.get("response"):
            future = self._pending.pop(str(message.get("token")), None)
            if future is not None and not future.done():
                if message.get("ok", False):
                    future.set_result(str(message.get("data") or ""))
                else:
                    future.set_exception(PeerError(f"command failed: {message.get('data')!r}"))

    async def command(self, command: str, params: str | None = None, timeout: float = 3.0) -> str:
        """Run a baresip command (what the menu module offers: dial, hangup, sndcode, quit...)."""
        if self._writer is None or self._eof is not None:
            raise PeerError(f"{self.user}: not connected ({self._eof or 'not started'})")
        token = f"t{next(self._tokens)}"
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        body: dict[str, Any] = {"command": command, "token": token}
        if params is not None:
            body["params"] = params
        try:
            self._writer.write(netstring(json.dumps(body).encode()))
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise PeerTimeout(f"{self.user}: no answer to {command!r} within {timeout} s") from None
        finally:
            self._pending.pop(token, None)

    async def dial(self, uri: str, timeout: float = 3.0) -> None:
        """Start a call; follow with `wait_event("CALL_ESTABLISHED")`."""
        await self.command("dial", uri, timeout)

    async def send_dtmf(self, digits: str, timeout: float = 3.0) -> None:
        """Send RFC 2833 digits on the current call (`sndcode`); they go out ~230 ms apart."""
        bad = set(digits) - DTMF_DIGITS
        if not digits or bad:
            raise ValueError(f"invalid DTMF digits {digits!r}")
        await self.command("sndcode", digits, timeout)

    async def hangup(self, timeout: float = 3.0) -> None:
        await self.command("hangup", timeout=timeout)

    async def quit(self, timeout: float = 3.0) -> int | None:
        """Ask baresip to quit and wait for the process to exit (forcing it if needed)."""
        return await self.close(timeout)

    # -- events

    @property
    def events(self) -> tuple[BaresipEvent, ...]:
        """Every event received so far, in order (including those already waited for)."""
        return tuple(self._events)

    def _take(self, types: set[str], param: str | None) -> BaresipEvent | None:
        for index, event in enumerate(self._events):
            if index not in self._taken and event.type in types and (param is None or event.param == param):
                self._taken.add(index)
                return event
        return None

    async def _next_event(self, types: set[str], param: str | None) -> BaresipEvent:
        while True:
            self._changed.clear()
            event = self._take(types, param)
            if event is not None:
                return event
            if self._eof is not None:
                raise PeerError(f"{self.user}: {self._eof} while waiting for {sorted(types)}")
            await self._changed.wait()

    async def wait_event(self, name: str, timeout: float = 5.0, *, param: str | None = None) -> BaresipEvent:
        """The oldest event of type `name` (and `param`, if given) not returned by an earlier wait.

        Events that arrived before the call are found too, so there is no race with the action
        that causes them. Raises PeerTimeout (listing what did arrive) or PeerError on exit.
        """
        try:
            return await asyncio.wait_for(self._next_event({name}, param), timeout)
        except TimeoutError:
            seen = ", ".join(f"{e.type}({e.param})" if e.param else e.type for e in self._events[-15:])
            raise PeerTimeout(f"{self.user}: no {name} within {timeout} s; last events: {seen}") from None

    # -- results

    def dumps(self) -> list[CallDump]:
        """(enc, dec) WAV pairs written by sndfile, oldest first. Read them after the call closed
        (best after `close()`): the WAV header gets its final size when the call's audio stops."""
        pairs: list[CallDump] = []
        for enc in sorted(self.snd_path.glob("dump-*-enc.wav")):
            dec = enc.with_name(enc.name.removesuffix("-enc.wav") + "-dec.wav")
            if dec.exists():
                pairs.append(CallDump(enc=enc, dec=dec))
        return pairs

    def log_tail(self, chars: int = 2000) -> str:
        return _tail(self.log_path, chars)


# --------------------------------------------------------------------------------------------
# SIPp scenarios


def _replace_block(xml: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(.*?)(\s*<!-- END {name} -->)", re.S)
    if not pattern.search(xml):
        raise PeerError(f"scenario template lacks the {name!r} block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + m.group(3), xml, count=1)


def _write_rendered(out_dir: Path, stem: str, xml: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(xml.encode()).hexdigest()[:10]
    path = out_dir / f"{stem}-{digest}.xml"
    if not path.exists():
        path.write_text(xml, encoding="iso-8859-1")
    return path


def dtmf_pcap(digit: str) -> Path:
    try:
        return PCAP_DIR / f"dtmf_2833_{DTMF_PCAP_NAMES[digit]}.pcap"
    except KeyError:
        raise ValueError(f"no RFC 2833 pcap for digit {digit!r} (have 0-9, *, #)") from None


def uac_scenario(
    out_dir: Path,
    *,
    digits: str = "",
    audio_pcap: Path | None = G711A_PCAP,
    pause_ms_before: int = 7300,
    digit_gap_ms: int = 400,
    hold_ms_after: int = 1000,
    hangs_up_itself: bool = True,
) -> Path:
    """Render `sipp/uac_dtmf.xml`: INVITE (PCMA + telephone-event), ACK, then

    1. start `audio_pcap` (None: no audio) and pause `pause_ms_before` ms (play_pcap_audio does not
       block; g711a.pcap needs 7300 ms to finish before digits, or they overlap the speech);
    2. each digit: play its RFC 2833 pcap (0.14 s) and pause `digit_gap_ms` ms;
    3. `hangs_up_itself`: pause `hold_ms_after` ms, send BYE, expect 200;
       otherwise wait at most `hold_ms_after` ms for the far end's BYE and answer 200
       (no BYE in time: the call fails with FailedTimeoutOnRecv).

    A BYE from the far end that arrives during a pause is an unexpected message (SIPp aborts the
    call), so size the pauses to fit the flow under test. Returns the path of the rendered file
    (named after a hash of its content, so identical requests share a file).
    """
    if digit_gap_ms < DTMF_PCAP_SECONDS * 1000 and digits:
        raise ValueError(f"digit_gap_ms must be at least {DTMF_PCAP_SECONDS * 1000:.0f} (a digit's length)")
    media: list[str] = []
    if audio_pcap is not None:
        media.append(f'  <nop><action><exec play_pcap_audio="{audio_pcap}"/></action></nop>')
    if pause_ms_before > 0:
        media.append(f'  <pause milliseconds="{pause_ms_before}"/>')
    for digit in digits:
        media.append(f'  <nop><action><exec play_pcap_audio="{dtmf_pcap(digit)}"/></action></nop>')
        media.append(f'  <pause milliseconds="{digit_gap_ms}"/>')
    if not media:
        media.append("  <!-- no media -->")
    xml = (SIPP_DIR / "uac_dtmf.xml").read_text(encoding="iso-8859-1")
    xml = _replace_block(xml, "media", "\n".join(media))
    if hangs_up_itself:
        xml = re.sub(
            r'(<!-- BEGIN ending -->\n\s*<pause milliseconds=")\d+(")',
            lambda m: f"{m.group(1)}{max(0, hold_ms_after)}{m.group(2)}",
            xml,
            count=1,
        )
    else:
        xml = _replace_block(xml, "ending", _FAR_END_BYE.format(timeout=max(1, hold_ms_after)))
    return _write_rendered(out_dir, "uac_dtmf", xml)


_FAR_END_BYE = """\
  <recv request="BYE" timeout="{timeout}"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="300"/>
"""


def dtmf_scenario(
    digits: str,
    pause_ms_before: int,
    hold_ms_after: int,
    *,
    hangs_up_itself: bool = True,
    out_dir: Path | None = None,
    audio_pcap: Path | None = G711A_PCAP,
    digit_gap_ms: int = 400,
) -> Path:
    """`uac_scenario` with the digits first: speech pcap, pause, digits, then hang up / wait BYE.

    `out_dir` defaults to a per-user directory under the system temp dir (content-addressed, so
    reuse is safe); tests should pass their tmp_path.
    """
    if out_dir is None:
        out_dir = Path(tempfile.gettempdir()) / f"hotline-sipp-{os.getuid()}"
    return uac_scenario(
        out_dir,
        digits=digits,
        audio_pcap=audio_pcap,
        pause_ms_before=pause_ms_before,
        digit_gap_ms=digit_gap_ms,
        hold_ms_after=hold_ms_after,
        hangs_up_itself=hangs_up_itself,
    )


def uas_reject_scenario(out_dir: Path, status: int = 486, reason: str = "Busy Here") -> Path:
    """Render `sipp/uas_reject.xml` answering every INVITE with `status reason` (300-699)."""
    if not 300 <= status <= 699 or not re.fullmatch(r"[A-Za-z0-9 '\-]+", reason):
        raise ValueError(f"bad rejection {status} {reason!r}")
    xml = (SIPP_DIR / "uas_reject.xml").read_text(encoding="iso-8859-1")
    xml, count = re.subn(r"SIP/2\.0 486 Busy Here", f"SIP/2.0 {status} {reason}", xml)
    if count != 1:
        raise PeerError("uas_reject.xml lacks its status line")
    return _write_rendered(out_dir, "uas_reject", xml)


UAS_TRIVIAL = SIPP_DIR / "uas_trivial.xml"
UAC_DTMF = SIPP_DIR / "uac_dtmf.xml"
UAS_REJECT = SIPP_DIR / "uas_reject.xml"
UAS_REGISTER = SIPP_DIR / "uas_register.xml"


# --------------------------------------------------------------------------------------------
# SIPp runs

SIPP_EXIT_CODES = {
    0: "all calls successful",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run did, from its exit code, -trace_stat, -trace_counts, -trace_error_codes.

    `statuses` counts final responses seen by a UAC: the INVITE 200s of the scenario (its first
    `200` recv step) plus the code of every unexpected response, which for our UAC scenarios means
    INVITE rejections (486, 503...). A UAS run has no statuses.
    """

    returncode: int | None
    timed_out: bool
    """wait() ran out of time and killed SIPp."""
    stopped: bool
    """close() ended SIPp before it finished its calls (normal for a UAS serving an open number)."""
    created: int
    successful: int
    failed: int
    failure_reasons: Mapping[str, int]
    statuses: Mapping[int, int]
    retransmissions: int
    elapsed_s: float
    errors: str = field(default="", repr=False)
    stats: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    counts: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.stopped and self.failed == 0

    @property
    def exit_meaning(self) -> str:
        if self.timed_out:
            return "killed by the harness after its timeout"
        if self.stopped:
            return "stopped by the harness before it finished"
        if self.returncode is None:
            return "not run"
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return SIPP_EXIT_CODES.get(self.returncode % 256, f"exit code {self.returncode}")

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in self.failure_reasons.items()) or "-"
        statuses = ", ".join(f"{k}x{v}" for k, v in sorted(self.statuses.items())) or "-"
        return (
            f"SIPp rc={self.returncode} ({self.exit_meaning}) in {self.elapsed_s:.1f} s: "
            f"{self.successful} ok / {self.failed} failed of {self.created}; "
            f"failures: {reasons}; statuses: {statuses}; retrans: {self.retransmissions}"
            + (f"\n{self.errors[-1500:]}" if self.errors and not self.ok else "")
        )


def _last_csv_row(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="", errors="replace") as handle:
            rows = [row for row in csv.reader(handle, delimiter=";") if row]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def parse_stats(stats: Mapping[str, str]) -> tuple[int, int, int, dict[str, int], int]:
    """(created, successful, failed, nonzero Failed* reasons, retransmissions) from -trace_stat."""
    created = _int(stats.get("OutgoingCall(C)")) + _int(stats.get("IncomingCall(C)"))
    reasons = {
        key.removesuffix("(C)"): _int(value)
        for key, value in stats.items()
        if key.startswith("Failed") and key != "FailedCall(C)" and key.endswith("(C)") and _int(value)
    }
    return (
        created,
        _int(stats.get("SuccessfulCall(C)")),
        _int(stats.get("FailedCall(C)")),
        reasons,
        _int(stats.get("Retransmissions(C)")),
    )


def parse_counts(row: Mapping[str, str]) -> dict[str, int]:
    """-trace_counts' last row: `{"14_200_Recv": 3, ...}` (cumulative per scenario step)."""
    return {key: _int(value) for key, value in row.items() if re.fullmatch(r"\d+_\w+_\w+", key)}


def invite_answers(counts: Mapping[str, int]) -> int:
    """How many 200s the first `200` recv step got (the INVITE's, in our UAC scenarios)."""
    steps = sorted(
        (int(m.group(1)), value) for key, value in counts.items() if (m := re.fullmatch(r"(\d+)_200_Recv", key))
    )
    return steps[0][1] if steps else 0


def parse_error_codes(path: Path) -> Counter[int]:
    """-trace_error_codes: each periodic line lists the codes of unexpected messages since the
    previous line, comma separated, after the two timestamp fields."""
    codes: Counter[int] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return codes
    for line in lines:
        fields = line.split(";")
        for item in fields[2].split(",") if len(fields) > 2 else ():
            if item.strip().isdigit() and int(item) >= 100:
                codes[int(item)] += 1
    return codes


class Sipp:
    """One SIPp process running a scenario from `sipp/` (or a rendered one) on loopback.

    `target=None` makes a UAS (it listens on `port`); otherwise a UAC calling `target` ("host:port").
    `await start()` returns once a UAS is bound; `await wait(timeout)` returns a SippResult and kills
    SIPp if it outlives the timeout. `close()` always ends the process.
    """

    def __init__(
        self,
        scenario: Path,
        workdir: Path,
        *,
        target: str | None = None,
        calls: int = 1,
        concurrency: int | None = None,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        service: str = "service",
        recv_timeout_ms: int | None = None,
        max_invite_retrans: int | None = None,
        keys: Mapping[str, str] | None = None,
        trace_messages: bool = False,
        extra_args: Iterable[str] = (),
        binary: str = "sipp",
    ) -> None:
        self.scenario = Path(scenario).resolve()
        if not self.scenario.is_file():
            raise PeerError(f"no scenario {self.scenario}")
        self.workdir = Path(workdir)
        self.target = target
        self.calls = calls
        self.stat_path = self.workdir / f"{self.scenario.stem}_stat.csv"
        self.error_path = self.workdir / f"{self.scenario.stem}_errors.log"
        self.log_path = self.workdir / f"{self.scenario.stem}_screen.log"
        options = ["-sf", str(self.scenario), "-s", service, "-m", str(calls)]
        options += ["-nostdin", "-trace_stat", "-stf", str(self.stat_path), "-fd", "1"]
        options += ["-trace_counts", "-trace_err", "-error_file", str(self.error_path), "-trace_error_codes"]
        if concurrency is not None:
            options += ["-l", str(concurrency)]
        if rate is not None:
            options += ["-r", f"{rate:g}"]
        if rate_period_ms is not None:
            options += ["-rp", str(rate_period_ms)]
        if recv_timeout_ms is not None:
            options += ["-recv_timeout", str(recv_timeout_ms)]
        if max_invite_retrans is not None:
            options += ["-max_invite_retrans", str(max_invite_retrans)]
        for key, value in (keys or {}).items():
            options += ["-key", key, value]
        if trace_messages:
            options += [
                "-trace_msg",
                "-message_file",
                str(self.workdir / f"{self.scenario.stem}_messages.log"),
            ]
        options += list(extra_args)
        self._binary = binary
        self._options = options
        self._allocate_ports()
        self._proc: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._result: SippResult | None = None

    def _allocate_ports(self) -> None:
        self.port = free_port(udp=True, tcp=False)
        self.media_port = free_port_range(4)  # SIPp binds media_port (audio) and media_port + 2 (video)
        self.control_port = free_port(udp=True, tcp=False)

    @property
    def args(self) -> list[str]:
        """The SIPp command line."""
        target = [] if self.target is None else [self.target]
        ports = ["-i", LOOPBACK, "-p", str(self.port), "-mi", LOOPBACK, "-mp", str(self.media_port)]
        return [self._binary, *target, *self._options, *ports, "-ci", LOOPBACK, "-cp", str(self.control_port)]

    def __repr__(self) -> str:
        role = f"UAC->{self.target}" if self.target else "UAS"
        return f"<Sipp {self.scenario.name} {role} on {self.address}>"

    @property
    def address(self) -> str:
        """Where a UAS listens (what a UAC or the gateway should call): 127.0.0.1:PORT."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout: float = 5.0, *, attempts: int = 3) -> Self:
        """Run SIPp and wait until its SIP socket is bound (ports taken meanwhile by someone else:
        SIPp exits with 254 and is retried on fresh ports, `attempts` times in all)."""
        if self._proc is not None:
            raise PeerError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self._started_at = time.monotonic()
            self._proc = await _spawn(self.args, self.log_path, self.workdir)
            try:
                await wait_udp_bound(self.port, timeout, self._proc)
                return self
            except PeerError as error:
                if self.target is not None and self._proc.returncode in (0, 1, 97, 99):
                    return self  # a UAC may be done before we look: wait() reports what it did
                code = await _stop(self._proc, grace=1.0)
                if code == 254 and attempt < attempts:
                    self._allocate_ports()
                    continue
                raise PeerError(f"{self!r} did not start: {error}; screen:\n{_tail(self.log_path)}") from None
        raise AssertionError("unreachable")

    async def wait(self, timeout: float = 30.0) -> SippResult:
        """Wait for SIPp to finish its calls (at most `timeout` s, then kill it) and parse results."""
        if self._proc is None:
            raise PeerError("not started")
        timed_out = False
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            await _stop(self._proc, grace=1.0)
        self._result = self._collect(timed_out=timed_out)
        return self._result

    async def run(self, timeout: float = 30.0) -> SippResult:
        """start() then wait(timeout)."""
        if self._proc is None:
            await self.start(timeout=min(timeout, 5.0))
        return await self.wait(timeout)

    async def close(self, grace: float = 1.0) -> SippResult:
        """Stop SIPp if it still runs (SIGTERM, then SIGKILL after `grace` s); return what it did."""
        if self._proc is not None and self._proc.returncode is None:
            await _stop(self._proc, grace=grace)
            self._result = self._collect(stopped=True)
        return self._result or self._collect()

    async def __aenter__(self) -> Self:
        if self._proc is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _collect(self, *, timed_out: bool = False, stopped: bool = False) -> SippResult:
        pid = None if self._proc is None else self._proc.pid
        stats = _last_csv_row(self.stat_path)
        created, successful, failed, reasons, retrans = parse_stats(stats)
        counts: dict[str, int] = {}
        statuses: Counter[int] = Counter()
        if pid is not None:
            counts = parse_counts(_last_csv_row(self.workdir / f"{self.scenario.stem}_{pid}_counts.csv"))
            statuses = parse_error_codes(self.workdir / f"{self.scenario.stem}_{pid}_error_codes.csv")
        if self.target is not None and (answered := invite_answers(counts)):
            statuses[200] += answered
        errors = _tail(self.error_path, 4000)
        if self._proc is not None and self._proc.returncode not in (0, 1) and not stats:
            errors = (errors + "\n" + _tail(self.log_path, 1500)).strip()
        return SippResult(
            returncode=None if self._proc is None else self._proc.returncode,
            timed_out=timed_out,
            stopped=stopped,
            created=created,
            successful=successful,
            failed=failed,
            failure_reasons=reasons,
            statuses=dict(statuses),
            retransmissions=retrans,
            elapsed_s=time.monotonic() - self._started_at if self._started_at else 0.0,
            errors=errors,
            stats=stats,
            counts=counts,
        )


# --------------------------------------------------------------------------------------------
# A set of peers


class Peers:
    """Starts peers, each in its own subdirectory of `workdir`, and closes them all on exit.

    ```
    async with Peers(tmp_path) as peers:
        agent = await peers.agent(tone_wav)
        caller = await peers.caller(speech_wav)
    ```
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.scenario_dir = self.workdir / "scenarios"
        self._baresips: list[Baresip] = []
        self._sipps: list[Sipp] = []
        self._numbers = itertools.count(1)

    def _subdir(self, name: str) -> Path:
        path = self.workdir / f"{name}-{next(self._numbers)}"
        path.mkdir(parents=True, exist_ok=False)
        return path

    async def caller(self, wav: Path, *, timeout: float = 5.0, **kwargs: Any) -> Baresip:
        """A started baresip caller (see `Baresip.caller`)."""
        peer = Baresip.caller(self._subdir("caller"), wav, **kwargs)
        self._baresips.append(peer)
        return await peer.start(timeout)

    async def agent(self, wav: Path, *, timeout: float = 5.0, **kwargs: Any) -> Baresip:
        """A started auto-answering baresip agent phone (see `Baresip.agent`)."""
        peer = Baresip.agent(self._subdir("agent"), wav, **kwargs)
        self._baresips.append(peer)
        return await peer.start(timeout)

    async def sipp(self, scenario: Path, *, start: bool = True, **kwargs: Any) -> Sipp:
        """A SIPp run (started unless `start=False`; a UAS is listening when this returns)."""
        peer = Sipp(scenario, self._subdir(scenario.stem), **kwargs)
        self._sipps.append(peer)
        return await peer.start() if start else peer

    async def close(self) -> None:
        """Close the phones first (they hang up and un-REGISTER while SIPp servers still run),
        then SIPp."""
        phones = await asyncio.gather(*(peer.close() for peer in self._baresips), return_exceptions=True)
        servers = await asyncio.gather(*(peer.close() for peer in self._sipps), return_exceptions=True)
        errors = [r for r in [*phones, *servers] if isinstance(r, BaseException)]
        if errors:
            raise PeerError(f"{len(errors)} peer(s) failed to close: {errors[0]!r}") from errors[0]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
