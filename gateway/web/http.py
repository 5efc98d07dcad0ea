"""HTTP intake and health endpoints (aiohttp): translate requests into queue calls and back.

Every answer is JSON: errors are `{"error": {"code", "message", "fields"?}}` with the status of
their exception class (gateway/errors.py), aiohttp's own 404/405 and its parser's 400s included;
nothing internal and no request bytes reach the client, and no version banner (`Server` names the
gateway only).

The server in front of the app (`gateway/web/http_server.py`) bounds connections and times, and
answers what aiohttp's parser refuses in the same JSON, without echoing or logging the request's
bytes. See docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from gateway.config import ApiClientConfig, GatewayConfig, LiveConfig, hash_secret
from gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from gateway.intake import parse_intake
from gateway.queue import TicketQueue
from gateway.queue.desk import IntakeDesk, IntakeUnavailable, Source
from gateway.shell.services import Report
from gateway.ticket import utcnow
from gateway.triage.deadlines import clock_states
from gateway.web.console import ConsoleContext, add_console, read_files
from gateway.web.http_server import SERVER_NAME, error_response, internal_error, json_response, serve_guarded
from gateway.web.knowledge_api import add_knowledge
from gateway.web.wallboard import Wallboard, add_wallboard

log = logging.getLogger("gateway.http")


class ConfigView:
    """What the handlers need from the live config, rebuilt when it is swapped (not per request)."""

    def __init__(self, live: LiveConfig) -> None:
        self.live = live
        self._build(live.current)
        live.on_swap(lambda config, _: self._build(config))

    def _build(self, config: GatewayConfig) -> None:
        self.config = config
        self.clients = {client.key_hash: client for client in config.api_clients if client.key_hash}
        self.queue_names = frozenset(queue.name for queue in config.queues)


VIEW = web.AppKey("view", ConfigView)
QUEUE = web.AppKey("queue", TicketQueue)
DESK = web.AppKey("desk", IntakeDesk)
ServicesReport = Callable[[], Report]
SERVICES: web.AppKey[ServicesReport] = web.AppKey("services")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        return internal_error()


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


def authenticate(request: web.Request) -> ApiClientConfig:
    header = request.headers.get("Authorization", "")
    key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.headers.get("X-API-Key")
    client = request.app[VIEW].clients.get(hash_secret(key)) if key else None
    if client is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    return client


async def read_body(request: web.Request, max_bytes: int, timeout: float) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None
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
    view = app[VIEW]
    config = view.config
    body = await read_body(request, config.http.max_body_bytes, config.http.body_timeout)
    idempotency_key = request.headers.get("Idempotency-Key")
    contact = parse_intake(body, view.queue_names, idempotency_key)
    try:
        result = await app[DESK].submit(contact, Source.api_client(client), idempotency_key)
    except IntakeUnavailable as exc:
        # Maybe stored after all (Redis may run it once it answers again): the key, the client's
        # own or the one we made, makes a retry safe (docs/http-api.md).
        return error_response(exc, idempotency_key=exc.message_id)
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
    body = ticket.model_dump(mode="json", exclude_defaults=True)
    if ticket.clocks:  # their colours now (红黄绿): the stored clocks only say when each is due
        yellow = request.app[VIEW].config.deadlines.yellow_share
        body["deadlines"] = [state.as_dict() for state in clock_states(ticket, utcnow(), yellow)]
    return json_response(body)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when Redis answers and every service of the process is up; else 503, saying which is not."""
    body: dict[str, object] = {"config_version": request.app[VIEW].live.version}
    ready = True
    try:
        await request.app[QUEUE].redis.ping()
        body["redis"] = "ok"
    except (RedisError, OSError):
        body["redis"] = "unreachable"
        ready = False
    report = request.app.get(SERVICES)
    if report is not None:
        services = report()
        body["services"] = {name: health.as_dict() for name, health in services.services.items()}
        ready = ready and services.ready
    body["status"] = "ready" if ready else "unavailable"
    return json_response(body, status=200 if ready else 503)


def create_app(
    config: GatewayConfig | LiveConfig,
    queue: TicketQueue,
    services: Callable[[], Report] | None = None,
    wallboard: Wallboard | None = None,
) -> web.Application:
    """`services` reports the process's services for `/readyz` (the gateway's; None: Redis only);
    `wallboard` is the process's shared wallboard (None: no `/console/ws/wallboard`)."""
    live = LiveConfig.of(config)
    # aiohttp's own limit is a backstop above ours (bound at start), so our 413 (with a JSON body) is
    # what clients see.
    app = web.Application(client_max_size=live.current.http.max_body_bytes, middlewares=[errors_middleware])
    app[VIEW] = ConfigView(live)
    app[QUEUE] = queue
    app[DESK] = IntakeDesk(queue, live)
    if services is not None:
        app[SERVICES] = services
    app.on_response_prepare.append(_no_banner)
    app.router.add_post("/api/v1/intake", post_intake)
    app.router.add_get("/api/v1/tickets/{ticket_id}", get_ticket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_console(app, ConsoleContext(lambda: live.current, queue, read_files(), read_body))
    add_knowledge(app, live, authenticate)
    if wallboard is not None:
        add_wallboard(app, wallboard)
    return app


async def start_http(
    config: GatewayConfig | LiveConfig,
    queue: TicketQueue,
    services: Callable[[], Report] | None = None,
    wallboard: Wallboard | None = None,
) -> web.AppRunner:
    """Serve the HTTP API on `http.listen` (its limits bound at start); the runner's cleanup stops it."""
    live = LiveConfig.of(config)
    runner = web.AppRunner(create_app(live, queue, services, wallboard), access_log=None, handle_signals=False)
    await runner.setup()
    await serve_guarded(runner, live.current)
    return runner
