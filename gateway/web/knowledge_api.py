"""`GET /api/v1/knowledge/search?q=...`: the mini program's self-service search of the knowledge
base (gateway/knowledge/), for API clients with a key like every `/api/v1` endpoint.

The knowledge base is opened when the app starts (a cleanup context: jieba's dictionary and the
SQLite file, in a thread) and imports `[knowledge] entries` if the database has no version yet; it
stays bound until the process stops. Disabled: the endpoint answers 503 `unavailable`.
See docs/http-api.md, "Knowledge search".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import date

from aiohttp import web

from gateway.config import ApiClientConfig, GatewayConfig, LiveConfig
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.knowledge.base import KnowledgeBase
from gateway.knowledge.service import open_knowledge
from gateway.web.http_server import json_response

log = logging.getLogger("gateway.knowledge")

Authenticate = Callable[[web.Request], ApiClientConfig]
Today = Callable[[], date]


class KnowledgeContext:
    """What the handler needs: the live config (limits read per request), the base once open."""

    def __init__(self, live: LiveConfig, authenticate: Authenticate, today: Today) -> None:
        self.live = live
        self.authenticate = authenticate
        self.today = today
        self.base: KnowledgeBase | None = None


KNOWLEDGE = web.AppKey("knowledge", KnowledgeContext)


def search_text(query: Mapping[str, str], config: GatewayConfig) -> str:
    """The `q` parameter, stripped; 400 when missing, empty or longer than `max_query_chars`."""
    text = query.get("q", "").strip()
    limit = config.knowledge.max_query_chars
    if not text:
        raise InvalidRequest("q: required (the citizen's question)")
    if len(text) > limit:
        raise InvalidRequest(f"q: at most {limit} characters")
    return text


async def get_search(request: web.Request) -> web.Response:
    context = request.app[KNOWLEDGE]
    context.authenticate(request)
    config = context.live.current
    base = context.base
    if base is None:
        raise ServiceUnavailable("the knowledge base is not enabled on this gateway")
    text = search_text(request.query, config)
    hits = await asyncio.to_thread(base.search, text, context.today(), config.knowledge.limit)
    version = base.current()
    results = [
        {"id": hit.id, "question": hit.question, "answer": hit.answer, "category": hit.category, "score": hit.score}
        for hit in hits
    ]
    return json_response({"results": results, "version": version.number if version else 0})


def _open(config: GatewayConfig) -> KnowledgeBase:
    base, imported = open_knowledge(config)
    if imported is not None:
        log.info("knowledge base: imported %d entries as version %d", imported.version.entries, imported.version.number)
    return base


def add_knowledge(
    app: web.Application, live: LiveConfig, authenticate: Authenticate, today: Today = date.today
) -> None:
    """The search route; with `[knowledge] enabled`, the base opened at start and closed at cleanup."""
    context = KnowledgeContext(live, authenticate, today)
    app[KNOWLEDGE] = context
    app.router.add_get("/api/v1/knowledge/search", get_search)

    async def knowledge_base(app: web.Application) -> AsyncIterator[None]:
        if live.current.knowledge.enabled:
            context.base = await asyncio.to_thread(_open, live.current)
        yield
        if context.base is not None:
            context.base.close()
            context.base = None

    app.cleanup_ctx.append(knowledge_base)
