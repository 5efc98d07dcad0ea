"""The HTTP server in front of the intake app: connections, timeouts, file descriptors.

Connections are accepted by `_Acceptor`, not asyncio's `create_server`, so their number is bounded
(at `http.max_connections` the next ones wait in the kernel's backlog) and running out of file
descriptors pauses accepting (one log line per interval, not one per attempt). Each connection is a
`_GuardedHandler`: its request head must arrive within `http.header_timeout`, and what aiohttp's
parser refuses is answered in JSON without the offending bytes and logged without them (aiohttp's
own error logging echoes them: keys, phone numbers, ID numbers). The JSON error answers of the whole
HTTP side live here too (`error_response`), so the app and the server give one shape.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import re
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import http_exceptions, web

from gateway.config import GatewayConfig, HttpConfig, split_listen
from gateway.errors import GatewayError, InvalidRequest, Unauthorized

log = logging.getLogger("gateway.http")

# The file descriptors a process needs besides its connections: Redis pool, logs, epoll, the
# listening sockets, the media workers' and Kamailio's pipes.
FD_RESERVE = 128
FD_WANTED = 65536  # the soft limit raised at start, when the hard limit allows

SERVER_NAME = "hotline-gateway"

# Chinese text stays readable in responses (and smaller than \u escapes).
_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def error_response(exc: GatewayError, **extra: str) -> web.Response:
    """The JSON answer for one of our errors; `extra` adds fields to it (the 503's idempotency key)."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.message, **extra}
    if exc.fields:
        body["fields"] = [{"path": f.path, "message": f.message} for f in exc.fields]
    headers = {"WWW-Authenticate": 'Bearer realm="hotline-gateway"'} if isinstance(exc, Unauthorized) else None
    if exc.http_status == 503:
        headers = {"Retry-After": "1"}
    return json_response({"error": body}, status=exc.http_status, headers=headers)


def internal_error() -> web.Response:
    return json_response({"error": {"code": "internal", "message": "internal error"}}, status=500)


class Throttled:
    """A log line for what may happen thousands of times a second (running out of file descriptors,
    a flood of malformed requests): the first at once, then at most one per interval, each counting
    the occurrences since the previous line."""

    def __init__(
        self, message: str, interval: float, level: int = logging.WARNING, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._message = message
        self._interval = interval
        self._level = level
        self._clock = clock
        self._count = 0
        self._last: float | None = None

    def __call__(self, detail: str) -> bool:
        """Count one occurrence; True when this one was logged."""
        self._count += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        log.log(self._level, "%s: %s (%d since the last such line)", self._message, detail, self._count)
        self._last, self._count = now, 0
        return True


@dataclass(frozen=True, slots=True)
class _Reports:
    exhausted: Throttled
    head_timeout: Throttled
    malformed: Throttled
    connection_error: Throttled

    @classmethod
    def every(cls, interval: float) -> _Reports:
        return cls(
            exhausted=Throttled("out of file descriptors, HTTP accepts paused", interval, logging.ERROR),
            head_timeout=Throttled("HTTP connections closed by the header timeout", interval, logging.INFO),
            malformed=Throttled("malformed HTTP requests refused", interval, logging.INFO),
            connection_error=Throttled("HTTP connection errors", interval, logging.WARNING),
        )


# The request's head ends with an empty line (a lone \n is tolerated by parsers, so by us).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_PARSER_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header is too long"),
    (http_exceptions.BadHttpMethod, "not an HTTP request"),
    (http_exceptions.InvalidURLError, "the request target is malformed"),
    (http_exceptions.BadStatusLine, "the request line is malformed"),
    (http_exceptions.PayloadEncodingError, "the body's encoding is malformed"),
)


def _parser_message(exc: BaseException | None) -> str:
    for kind, message in _PARSER_MESSAGES:
        if isinstance(exc, kind):
            return message
    return "malformed HTTP request"


Phase = Literal["head", "rest", "idle"]


class _GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, plus: the header timeout, a slot given back when the
    connection ends, and errors that neither echo nor log the peer's bytes.

    It extends aiohttp's RequestHandler where aiohttp offers no setting: the protocol callbacks,
    and three of its methods (`finish_response`, `handle_error`, `log_exception`). Should a new
    aiohttp change them, tests/web/test_http_limits.py and test_http_leaks.py say so."""

    def __init__(
        self, manager: web.Server, *, release: Callable[[], None], limits: HttpConfig, reports: _Reports, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._release = release
        self._limits = limits
        self._reports = reports
        # "head": the connection opened, or a request's first byte came, and its head has not ended
        # (the header timer runs); "rest": its body and answer; "idle": kept alive, between requests.
        self._phase: Phase = "head"
        self._head_tail = b""
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head()

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle" and data:
            self._start_head()
        if self._phase == "head":
            seen = self._head_tail + data
            if _HEAD_END.search(seen):
                self._leave_head("rest")
            else:
                self._head_tail = seen[-3:]
        super().data_received(data)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._leave_head("idle")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._leave_head("idle")
        self._release()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        self._phase, self._head_tail = "head", b""
        self._head_timer = asyncio.get_running_loop().call_later(self._limits.header_timeout, self._head_overdue)

    def _leave_head(self, phase: Phase) -> None:
        self._phase = phase
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        if self._phase == "head":
            self._reports.head_timeout(f"no complete request head within {self._limits.header_timeout:g} s")
            self.force_close()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's answer to what never reached our app (a request its parser refused, an error
        outside the middleware): JSON, without the offending bytes, and logged without them."""
        if status < 500:
            self._reports.malformed(f"{type(exc).__name__ if exc else status} from {request.remote}")
            response = error_response(InvalidRequest(_parser_message(exc)))
        else:
            self._reports.connection_error(f"{type(exc).__name__ if exc else status} answered {status}")
            response = internal_error()
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; the connection is closed instead")
        response.headers["Server"] = SERVER_NAME
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp's messages are its own, but the exception's text may quote the peer's bytes.
        exc = kwargs.get("exc_info")
        self._reports.connection_error(type(exc).__name__ if isinstance(exc, BaseException) else "error")


_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() failures that concern only the connection being accepted (it reset, say).
_PASSING = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.EHOSTUNREACH})


class _Acceptor(asyncio.AbstractServer):
    """Accepts connections on listening sockets while fewer than `max_connections` are open."""

    def __init__(
        self,
        sockets: list[socket.socket],
        make_handler: Callable[[Callable[[], None]], asyncio.Protocol],
        limits: HttpConfig,
        reports: _Reports,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        self._make_handler = make_handler
        self._limits = limits
        self._reports = reports
        self._open = 0
        self._accepting = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._starting: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else tuple(self._sockets)

    @property
    def open_connections(self) -> int:
        return self._open

    def _resume(self) -> None:
        if self._accepting or self._closed or self._retry is not None or self._open >= self._limits.max_connections:
            return
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)
        self._accepting = True

    def _pause(self) -> None:
        if self._accepting:
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
            self._accepting = False

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._limits.backlog):
            if self._open >= self._limits.max_connections:
                self._pause()  # the next ones wait in the backlog until a connection closes
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _PASSING:
                    continue
                self._stalled(exc)
                return
            self._open += 1
            task = self._loop.create_task(self._serve(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def _stalled(self, exc: OSError) -> None:
        """accept() failed for want of resources: wait a little, the slow clients may leave."""
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if exc.errno in _OUT_OF_RESOURCES:
            self._reports.exhausted(f"{name}, {self._open} connections open")
        else:
            self._reports.connection_error(f"accept: {name}")
        self._pause()
        self._retry = self._loop.call_later(self._limits.accept_retry_delay, self._retry_accepting)

    def _retry_accepting(self) -> None:
        self._retry = None
        self._resume()

    async def _serve(self, conn: socket.socket) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open -= 1
                self._resume()

        try:
            conn.setblocking(False)
            await self._loop.connect_accepted_socket(lambda: self._make_handler(release), conn)
        except OSError as exc:
            conn.close()
            release()
            self._reports.connection_error(f"{type(exc).__name__} setting up a connection")
        except BaseException:  # cancelled by close(): the socket is ours to close
            conn.close()
            release()
            raise

    def start(self) -> None:
        self._resume()

    def close(self) -> None:
        self._closed = True
        self._pause()
        if self._retry is not None:
            self._retry.cancel()
        for sock in self._sockets:
            sock.close()
        for task in self._starting:
            task.cancel()

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return not self._closed

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def start_serving(self) -> None:
        self._resume()

    async def serve_forever(self) -> None:
        raise NotImplementedError("the runner owns this server's life")


def _listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """One listening socket per address `host` resolves to, as asyncio's create_server binds them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GuardedSite(web.BaseSite):
    """A TCP site whose connections `_Acceptor` bounds and `_GuardedHandler` serves."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: HttpConfig) -> None:
        super().__init__(runner, backlog=limits.backlog)
        self._host, self._port, self._limits = host, port, limits
        self._reports = _Reports.every(limits.report_interval)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def acceptor(self) -> _Acceptor | None:
        return self._server if isinstance(self._server, _Acceptor) else None

    async def start(self) -> None:
        await super().start()
        manager = self._runner.server
        assert manager is not None
        limits, loop = self._limits, asyncio.get_running_loop()
        options: dict[str, Any] = {
            "loop": loop,
            "keepalive_timeout": limits.keepalive_timeout,
            "access_log": None,
            "max_line_size": limits.max_line_size,
            "max_field_size": limits.max_field_size,
            "max_headers": limits.max_headers,
            "lingering_time": limits.lingering_time,
        }

        def make_handler(release: Callable[[], None]) -> asyncio.Protocol:
            return _GuardedHandler(manager, release=release, limits=limits, reports=self._reports, **options)

        sockets = _listening_sockets(self._host, self._port, limits.backlog)
        acceptor = _Acceptor(sockets, make_handler, limits, self._reports)
        self._server = acceptor
        acceptor.start()


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, interval: float) -> None:
    """asyncio's own servers (the seats' websockets) report running out of file descriptors through
    the loop's exception handler, with a traceback, once a second per listening socket: one line
    per interval instead, counting; anything else goes to the handler that was there."""
    report = Throttled("out of file descriptors, seat accepts paused", interval, logging.ERROR)
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            exc = context.get("exception")
            report(errno.errorcode.get(getattr(exc, "errno", 0) or 0, "?"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


def fd_budget(config: GatewayConfig) -> int:
    """File descriptors the process may hold at its limits: HTTP and seat connections (logged in or
    waiting for their hello), the Redis pool, and a reserve for the rest."""
    seats = config.seats.max_connections + config.seats.max_pending_logins
    return config.http.max_connections + seats + config.redis.max_connections + FD_RESERVE


def ensure_fd_limit(needed: int, wanted: int = FD_WANTED) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` where the hard limit allows (systemd's soft
    default is 1,024), and warn when it stays below `needed`. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the file-descriptor limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the file-descriptor limit is %d (hard %d), below the %d this process may use at its connection limits; "
            "raise it (systemd LimitNOFILE=, ulimit -n)",
            soft,
            hard,
            needed,
        )
    return soft


async def serve_guarded(runner: web.AppRunner, config: GatewayConfig) -> GuardedSite:
    """Serve a set-up runner's app on `http.listen` (the runner's cleanup stops it)."""
    ensure_fd_limit(fd_budget(config))
    host, port = split_listen(config.http.listen)
    site = GuardedSite(runner, host, port, config.http)
    await site.start()
    return site
