"""HTTP intake and health endpoints (aiohttp): translate requests into queue calls and back.

Every error becomes a JSON body `{"error": {"code", "message", "fields"?}}` with the status of its
exception class (gateway/errors.py); nothing internal reaches the client.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.config import ApiClientConfig, GatewayConfig, hash_secret
from gateway.errors import GatewayError, PayloadTooLarge, Unauthorized
from gateway.intake import parse_intake, to_ticket
from gateway.queue import TicketQueue
from gateway.ticket import mask_phone, utcnow

log = logging.getLogger("gateway.http")

CONFIG = web.AppKey("config", GatewayConfig)
QUEUE = web.AppKey("queue", TicketQueue)
CLIENTS = web.AppKey("clients", dict)
CLIENT = "api_client"

# Chinese text stays readable in responses (and smaller than \u escapes).
_dumps = functools.partial(json.dumps, ensure_ascii=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def error_response(exc: GatewayError) -> web.Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.fields:
        body["fields"] = [{"path": f.path, "message": f.message} for f in exc.fields]
    headers = {"WWW-Authenticate": 'Bearer realm="hotline-gateway"'} if isinstance(exc, Unauthorized) else None
    if exc.http_status == 503:
        headers = {"Retry-After": "1"}
    return json_response({"error": body}, status=exc.http_status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge("the body is larger than this endpoint accepts"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        return json_response({"error": {"code": "internal", "message": "internal error"}}, status=500)


def authenticate(request: web.Request) -> ApiClientConfig:
    header = request.headers.get("Authorization", "")
    key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.headers.get("X-API-Key")
    client = request.app[CLIENTS].get(hash_secret(key)) if key else None
    if client is None:
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    return client  # type: ignore[no-any-return]


async def post_intake(request: web.Request) -> web.Response:
    client = authenticate(request)
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > config.http.max_body_bytes:
        raise PayloadTooLarge(f"the body may be at most {config.http.max_body_bytes} bytes")
    body = await request.read()
    intake = parse_intake(body)
    idempotency_key = request.headers.get("Idempotency-Key")
    ticket = to_ticket(intake, config, utcnow(), idempotency_key, client.channels)
    result = await request.app[QUEUE].intake(ticket, f"client:{client.id}")
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
    ticket = await request.app[QUEUE].get(request.match_info["ticket_id"])
    if ticket.channel not in client.channels:
        raise Unauthorized("this client may not read that ticket")
    return json_response(ticket.model_dump(mode="json", exclude_defaults=True))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[QUEUE].redis.ping()
    except (RedisError, OSError):
        return json_response({"status": "unavailable", "redis": "unreachable"}, status=503)
    return json_response({"status": "ready", "redis": "ok"})


def create_app(config: GatewayConfig, queue: TicketQueue) -> web.Application:
    # aiohttp's own limit is a backstop above ours, so our 413 (with a JSON body) is what clients see.
    app = web.Application(client_max_size=config.http.max_body_bytes, middlewares=[errors_middleware])
    app[CONFIG] = config
    app[QUEUE] = queue
    app[CLIENTS] = {client.key_hash: client for client in config.api_clients if client.key_hash}
    app.router.add_post("/api/v1/intake", post_intake)
    app.router.add_get("/api/v1/tickets/{ticket_id}", get_ticket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
