"""HTTP intake and health endpoints (aiohttp): translate requests into queue calls and back.

Every answer is JSON: errors are `{"error": {"code", "message", "fields"?}}` with the status of
their exception class (gateway/errors.py), aiohttp's own 404/405 and its parser's 400s included;
nothing internal and no request bytes reach the client, and no version banner (`Server` names the
gateway only).

The server in front of the app is ours too (`start_http`): connections are accepted by `_Acceptor`,
not asyncio's `create_server`, so their number is bounded (at the limit the next ones wait in the
kernel's backlog), running out of file descriptors pauses accepting (one log line per interval,
not one per attempt), and each connection is a `_GuardedHandler`: its request head must arrive
within the header timeout, its lines never reach a log (aiohttp's own error logging echoes them:
keys, phone numbers, ID numbers). See `HttpLimits` and docs/http-api.md.
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
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import http_exceptions, web
from redis.exceptions import RedisError

from gateway.config import ApiClientConfig, GatewayConfig, hash_secret, split_listen
from gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
)
from gateway.intake import fingerprint, parse_intake, to_ticket
from gateway.queue import TicketQueue
from gateway.ticket import mask_phone, utcnow

log = logging.getLogger("gateway.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long and how much one HTTP peer may take. Constants until they move to `[http]`."""

    # The first request's head (request line and headers) must be complete this long after the
    # connection opened, a later one's this long after its first byte: a slow-loris is cut here.
    header_timeout: float = 10.0
    # The body must be complete this long after the head (64 KiB at most: a slow link needs < 1 s).
    body_timeout: float = 30.0
    # An idle keep-alive connection closes after this; it also bounds the wait for the next
    # request's first byte. Above the 15 s clients like aiohttp keep theirs, so a client never
    # sends on a connection the server just closed.
    keepalive_timeout: float = 20.0
    # Open HTTP connections at once; more wait in the kernel's backlog until one closes.
    max_connections: int = 1000
    backlog: int = 128
    # aiohttp's limits on a request line, one header, the number of headers (its 400s beyond).
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    # How long an unread body (after an early answer) is read and dropped before the close.
    lingering_time: float = 2.0
    # Out of file descriptors: accepting pauses this long, and says so at most once per interval.
    accept_retry_delay: float = 0.5
    report_interval: float = 60.0


DEFAULT_LIMITS = HttpLimits()
# The file descriptors a process needs besides its connections: Redis pool, logs, epoll, the
# listening sockets, the media workers' and Kamailio's pipes.
FD_RESERVE = 128
FD_WANTED = 65536  # the soft limit raised at start, when the hard limit allows

SERVER_NAME = "hotline-gateway"

CONFIG = web.AppKey("config", GatewayConfig)
QUEUE = web.AppKey("queue", TicketQueue)
CLIENTS = web.AppKey("clients", dict)
QUEUE_NAMES = web.AppKey("queue_names", frozenset)
LIMITS = web.AppKey("limits", HttpLimits)

# Chinese text stays readable in responses (and smaller than \u escapes).
_dumps = functools.partial(json.dumps, ensure_ascii=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def _internal_error() -> web.Response:
    return json_response({"error": {"code": "internal", "message": "internal error"}}, status=500)


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx (no route, wrong method, ...) as JSON, without its text."""
    if isinstance(exc, web.HTTPNotFound):
        return error_response(NotFound("no such endpoint"))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(PayloadTooLarge("the body is larger than this endpoint accepts"))
    code = "method_not_allowed" if isinstance(exc, web.HTTPMethodNotAllowed) else f"http_{exc.status}"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_response({"error": {"code": code, "message": exc.reason}}, status=exc.status, headers=headers)


def _route(request: web.Request) -> str:
    """The route's pattern (`/api/v1/tickets/{ticket_id}`), never the path the peer sent."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "-"


def _log_failure(what: str, exc: BaseException) -> None:
    # The frames say where it failed; the exception's message (which may quote peer input) is left
    # out, as are local values.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s: %s\n%s", what, type(exc).__name__, frames.rstrip())


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except Exception as exc:
        _log_failure(f"request {request.method} {_route(request)} failed", exc)
        return _internal_error()


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


def authenticate(request: web.Request) -> ApiClientConfig:
    header = request.headers.get("Authorization", "")
    key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.headers.get("X-API-Key")
    client = request.app[CLIENTS].get(hash_secret(key)) if key else None
    if client is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    return client  # type: ignore[no-any-return]


async def read_body(request: web.Request, max_bytes: int, timeout: float) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise InvalidRequest(f"the body did not arrive within {timeout:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes") from None
    except web.RequestPayloadError:
        raise InvalidRequest("the body could not be read (chunked encoding or compression)") from None
    except ConnectionError:
        # The client went away mid-body: nobody is left to answer, and nothing to log.
        raise InvalidRequest("the connection closed before the body was complete") from None


async def post_intake(request: web.Request) -> web.Response:
    client = authenticate(request)
    if client.read_only:
        raise Forbidden("this client may read tickets, not submit them")
    app = request.app
    config = app[CONFIG]
    body = await read_body(request, config.http.max_body_bytes, app[LIMITS].body_timeout)
    idempotency_key = request.headers.get("Idempotency-Key")
    intake = parse_intake(body, app[QUEUE_NAMES], idempotency_key)
    ticket = to_ticket(intake, config, utcnow(), idempotency_key, client.channels)
    try:
        result = await app[QUEUE].intake(ticket, f"client:{client.id}", client.id, fingerprint(intake))
    except ServiceUnavailable as exc:
        # Maybe stored after all (Redis may run it once it answers again): the key, the client's
        # own or the one we made, makes a retry safe (docs/http-api.md).
        return error_response(exc, idempotency_key=ticket.message_id)
    log.info(
        "intake %s from %s (%s, %s) -> %s%s",
        result.ticket_id,
        client.id,
        ticket.channel,
        mask_phone(ticket.citizen.phone),
        ticket.queue,
        " (duplicate)" if not result.created else "",
    )
    return json_response(
        {"ticket_id": result.ticket_id, "status": "queued", "duplicate": not result.created}, status=202
    )


async def get_ticket(request: web.Request) -> web.Response:
    client = authenticate(request)
    # One answer for a malformed id, an unknown one and another channel's ticket: the API tells
    # no client whether a ticket it may not read exists.
    try:
        ticket = await request.app[QUEUE].get(request.match_info["ticket_id"])
    except NotFound:
        raise NotFound("no such ticket") from None
    if ticket.channel not in client.channels:
        raise NotFound("no such ticket")
    return json_response(ticket.model_dump(mode="json", exclude_defaults=True))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[QUEUE].redis.ping()
    except (RedisError, OSError):
        return json_response({"status": "unavailable", "redis": "unreachable"}, status=503)
    return json_response({"status": "ready", "redis": "ok"})


def create_app(config: GatewayConfig, queue: TicketQueue, limits: HttpLimits = DEFAULT_LIMITS) -> web.Application:
    # aiohttp's own limit is a backstop above ours, so our 413 (with a JSON body) is what clients see.
    app = web.Application(client_max_size=config.http.max_body_bytes, middlewares=[errors_middleware])
    app[CONFIG] = config
    app[QUEUE] = queue
    app[LIMITS] = limits
    app[CLIENTS] = {client.key_hash: client for client in config.api_clients if client.key_hash}
    app[QUEUE_NAMES] = frozenset(queue.name for queue in config.queues)
    app.on_response_prepare.append(_no_banner)
    app.router.add_post("/api/v1/intake", post_intake)
    app.router.add_get("/api/v1/tickets/{ticket_id}", get_ticket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


# ---- the server: connections, timeouts, file descriptors ------------------------------------------


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
        self, manager: web.Server, *, release: Callable[[], None], limits: HttpLimits, reports: _Reports, **kwargs: Any
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
            response = _internal_error()
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
        limits: HttpLimits,
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

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: HttpLimits) -> None:
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


def fd_budget(config: GatewayConfig, limits: HttpLimits) -> int:
    """File descriptors the process may hold at its limits: HTTP and seat connections, the Redis
    pool, and a reserve for the rest."""
    return limits.max_connections + config.seats.max_connections + config.redis.max_connections + FD_RESERVE


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


async def start_http(config: GatewayConfig, queue: TicketQueue, limits: HttpLimits = DEFAULT_LIMITS) -> web.AppRunner:
    """Serve the HTTP API on `http.listen`; the runner's cleanup stops it."""
    ensure_fd_limit(fd_budget(config, limits))
    runner = web.AppRunner(create_app(config, queue, limits), access_log=None, handle_signals=False)
    await runner.setup()
    host, port = split_listen(config.http.listen)
    await GuardedSite(runner, host, port, limits).start()
    return runner
