"""The web console (issue #14): its static pages under `/console/`, agents' logins as server-side
sessions, and the one-time tickets its seat page opens a seat with.

An agent logs in with its id and token (checked as the seats check them: `token_valid`) and gets a
session kept in Redis (`Keys.console_session`), named to the browser only by an `HttpOnly`,
`SameSite=Strict` cookie. The login's answer carries a CSRF token the page keeps in memory; every
request that changes something must send it (`X-CSRF-Token`) from an allowed `Origin`. The token
itself never travels again: the page asks for a seat ticket (random, `console.ticket_ttl`, used
once: GETDEL) and sends it as its `hello` token; the seats redeem it (`seat_login_valid`).

Pages are plain files (no build step, no CDN) served with a strict Content-Security-Policy: scripts,
styles and images from the gateway only, connections to it and to the seats' websocket only.
The pure parts (`allowed_origins`, `seats_url`, `content_security_policy`, `knowledge_query`,
`earlier_tickets`) read settings or tickets only.

The seat page also reads, with the agent's session (GETs: nothing changes): the dispatch catalogue
(`/console/api/catalogue`, read once per config: `CatalogueCache`, which the seats' submit check
shares), knowledge-base suggestions for a ticket the agent holds (`/console/api/knowledge`, from
the base the HTTP app opened: gateway/web/knowledge_api.py), and that ticket's citizen's earlier
tickets across channels with the repeat-contact mark (历史工单, 重复来电: `/console/api/earlier`,
from the citizen's index the intake writes; a supervisor may read it too, as a recording).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, NotRequired, TypedDict, TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from redis.exceptions import RedisError

from gateway import jsonwire
from gateway.config import AgentConfig, GatewayConfig, SupervisorConfig, hash_secret, split_listen, verify_secret
from gateway.errors import FieldError, Forbidden, InvalidRequest, NotFound, ServiceUnavailable, Unauthorized
from gateway.keys import Keys
from gateway.knowledge.base import KnowledgeBase
from gateway.queue import TicketQueue
from gateway.ticket import Ticket
from gateway.triage.assess import said, ticket_text
from gateway.triage.catalogue import Category, load_catalogue
from gateway.web.http_server import json_response
from gateway.web.knowledge_api import KNOWLEDGE

log = logging.getLogger("gateway.console")

COOKIE = "hg_console"
CSRF_HEADER = "X-CSRF-Token"
STATIC_DIR = Path(__file__).with_name("console")
# The console's files, each with its type: nothing else under /console/ is served.
STATIC_FILES = {
    "index.html": "text/html",
    "seat.js": "text/javascript",
    "seat_core.js": "text/javascript",
    "seat.css": "text/css",
    "page.js": "text/javascript",
    "wallboard.html": "text/html",
    "wallboard.js": "text/javascript",
    "wallboard_core.js": "text/javascript",
    "wallboard.css": "text/css",
}
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK_NAMES = {"127.0.0.1": ("127.0.0.1", "localhost"), "localhost": ("127.0.0.1", "localhost")}

# An unknown agent costs the same hash as a known one with a wrong token.
_UNKNOWN_AGENT_HASH = hash_secret(secrets.token_hex(16))


class SessionExpired(Unauthorized):
    """The browser sent a session cookie that no longer names a session (expired, logged out)."""

    code = "session_expired"


# --- pure: what the settings say --------------------------------------------------------------


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def allowed_origins(config: GatewayConfig) -> frozenset[str]:
    """The origins whose pages may use the console and open a seat: `console.allowed_origins`, else
    the one `http.listen` serves (both loopback names for a loopback address); none for a wildcard
    address, which cannot tell (fail closed: list them)."""
    if config.console.allowed_origins:
        return frozenset(origin.rstrip("/") for origin in config.console.allowed_origins)
    host, port = split_listen(config.http.listen)
    if host in _WILDCARD_HOSTS:
        return frozenset()
    return frozenset(_origin("http", name, port) for name in _LOOPBACK_NAMES.get(host, (host,)))


def seats_url(config: GatewayConfig, page_host: str, secure: bool) -> str:
    """The seats' websocket as the page reaches it: `seats.listen`, or on a wildcard address the
    host the page itself came from (`page_host`: the request's host name, without its port)."""
    host, port = split_listen(config.seats.listen)
    if host in _WILDCARD_HOSTS:
        host = page_host.strip("[]")
    return _origin("wss" if secure else "ws", host, port)


def content_security_policy(seats: str) -> str:
    """Everything from the gateway itself; connections to it and to the seats' websocket only; no
    inline script or style, no plugins, no framing."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
        f"connect-src 'self' {seats}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def digest(secret: str) -> str:
    """What Redis keys a cookie or ticket by: a dump of Redis gives nothing to log in with."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_valid(agent: AgentConfig | SupervisorConfig | None, token: str) -> bool:
    """The agent's (or supervisor's) token, compared in constant time; an unknown one costs the
    same hash, so timing does not tell which part was wrong."""
    valid = verify_secret(token, agent.token_hash if agent else _UNKNOWN_AGENT_HASH)
    return valid and agent is not None


KNOWLEDGE_QUERY_CHARS = 600  # what a ticket's knowledge suggestions are searched with, at most


def knowledge_query(ticket: Ticket, limit: int = KNOWLEDGE_QUERY_CHARS) -> str:
    """What to search the knowledge base with for `ticket`: its text, then what the citizen said
    since, newest first (final speech of the caller, their later messages), at most `limit`
    characters (the newest words are the ones the agent is hearing about now)."""
    since = [text for source, text in said(ticket) if source != "text" and text != ticket.text]
    parts = [ticket.text, *reversed(since)]
    return "\n".join(part.strip() for part in parts if part.strip())[:limit]


EARLIER_SHOWN = 10  # earlier tickets a ticket's 历史工单 lists (the newest)
EARLIER_CHARS = 80  # of each one's text and answer: enough to recognise it


class EarlierTicket(TypedDict):
    """One earlier ticket as `/console/api/earlier` lists it (`answer`: once submitted with one)."""

    id: str
    channel: str
    received_at: str
    status: str
    category: str
    text: str
    answer: NotRequired[str]


class Earlier(TypedDict):
    """`/console/api/earlier`'s answer."""

    ticket: str
    repeat: bool
    repeat_count: int
    earlier: list[EarlierTicket]


def earlier_tickets(
    ticket: Ticket, found: Iterable[Ticket], repeat_window: float, limit: int = EARLIER_SHOWN
) -> Earlier:
    """`ticket`'s 历史工单: of `found` (its citizen's tickets, any order, repeats allowed), those
    received before it (itself and later ones left out), newest first, each once, at most `limit`;
    `repeat` (重复来电 / 重复诉求) when any came within `repeat_window` seconds before it, and
    `repeat_count` how many did."""
    before = {other.id: other for other in found if other.id != ticket.id and other.received_at <= ticket.received_at}
    newest = sorted(before.values(), key=lambda other: (other.received_at, other.id), reverse=True)
    since = ticket.received_at - timedelta(seconds=repeat_window)
    repeats = sum(1 for other in newest if other.received_at >= since)
    shown = [_earlier(other) for other in newest[:limit]]
    return {"ticket": ticket.id, "repeat": repeats > 0, "repeat_count": repeats, "earlier": shown}


def _earlier(ticket: Ticket) -> EarlierTicket:
    """One earlier ticket as the seat page lists it: what it was about and, when it was answered,
    the start of the answer (so the agent need not ask the citizen again)."""
    listed: EarlierTicket = {
        "id": ticket.id,
        "channel": ticket.channel,
        "received_at": ticket.received_at.isoformat(),
        "status": ticket.status,
        "category": ticket.category,
        "text": ticket_text(ticket)[:EARLIER_CHARS],
    }
    if ticket.status == "submitted" and ticket.answer:
        listed["answer"] = ticket.answer[:EARLIER_CHARS]
    return listed


class CatalogueCache:
    """The dispatch catalogue `[triage]` names, read once per config (a swapped config, a new object,
    reads it again): none while triage is off."""

    def __init__(self) -> None:
        self._config: GatewayConfig | None = None
        self._categories: tuple[Category, ...] = ()
        self._ids: frozenset[str] = frozenset()

    def _load(self, config: GatewayConfig) -> None:
        if self._config is config:
            return
        triage = config.triage
        categories = load_catalogue(config.resolve(triage.catalogue)) if triage.enabled and triage.catalogue else ()
        self._config, self._categories = config, categories
        self._ids = frozenset(category.id for category in categories)

    def categories(self, config: GatewayConfig) -> tuple[Category, ...]:
        self._load(config)
        return self._categories

    def ids(self, config: GatewayConfig) -> frozenset[str]:
        """The category ids a submit must choose from; empty: no catalogue, any category goes."""
        self._load(config)
        return self._ids


class KnowledgeSources:
    """Each entry's source (出处) by id, read once per knowledge-base version (a search hit carries
    none)."""

    def __init__(self) -> None:
        self._version = -1
        self._sources: dict[str, str] = {}

    async def of(self, base: KnowledgeBase) -> dict[str, str]:
        current = base.current()
        number = current.number if current else 0
        if number != self._version:
            entries = await asyncio.to_thread(base.entries, number)
            self._sources, self._version = {entry.id: entry.source for entry in entries}, number
        return self._sources


# --- seat tickets (the seats' side) -----------------------------------------------------------


async def redeem_seat_ticket(client: aioredis.Redis, keys: Keys, agent_id: str, ticket: str) -> bool:
    """True when `ticket` is a live seat ticket issued to `agent_id`; it is spent either way (GETDEL).
    Redis out of reach: False, said in one line (the page asks for a new ticket and hears why)."""
    try:
        owner = await client.getdel(keys.console_ticket(digest(ticket)))
    except (RedisError, OSError):
        log.warning("console seat ticket not checked: redis unavailable")
        return False
    return owner is not None and hmac.compare_digest(_text(owner).encode(), agent_id.encode())


async def seat_login_valid(
    client: aioredis.Redis, keys: Keys, agent: AgentConfig | None, agent_id: str, token: str
) -> bool:
    """A seat's `hello`: the agent's token, else a console seat ticket issued to it. The ticket is
    looked up whenever the token fails, known agent or not, so timing tells nothing more."""
    if token_valid(agent, token):
        return True
    redeemed = await redeem_seat_ticket(client, keys, agent_id, token)
    return redeemed and agent is not None


def origin_refused(config: GatewayConfig, origin: str | None) -> bool:
    """A browser's websocket (it always sends `Origin`) from a page the console does not serve.
    Other clients (the terminal seat) send none."""
    return origin is not None and origin not in allowed_origins(config)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- HTTP: the console's routes -----------------------------------------------------------------


class LoginRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    agent: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SupervisorLoginRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    supervisor: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    key: str
    agent: AgentConfig
    csrf: str


@dataclass(frozen=True, slots=True)
class SupervisorSession:
    """A supervisor's login: the wallboard only (an agent's session is never one)."""

    key: str
    supervisor: SupervisorConfig
    csrf: str


_Login = TypeVar("_Login", LoginRequest, SupervisorLoginRequest)
BodyReader = Callable[[web.Request, int, float], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class ConsoleContext:
    """What the console's handlers need; the config is read live, the files once at start."""

    config: Callable[[], GatewayConfig]
    queue: TicketQueue
    files: dict[str, bytes]
    read_body: BodyReader  # the HTTP app's own (its limits and errors)
    catalogue: CatalogueCache = field(default_factory=CatalogueCache)
    sources: KnowledgeSources = field(default_factory=KnowledgeSources)

    @property
    def redis(self) -> aioredis.Redis:
        return self.queue.redis

    @property
    def keys(self) -> Keys:
        return self.queue.keys

    def agent(self, agent_id: str) -> AgentConfig | None:
        return next((agent for agent in self.config().agents if agent.id == agent_id), None)

    def supervisor(self, supervisor_id: str) -> SupervisorConfig | None:
        return next((one for one in self.config().supervisors if one.id == supervisor_id), None)


CONSOLE = web.AppKey("console", ConsoleContext)


def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    config = request.app[CONSOLE].config()
    response.headers["Content-Security-Policy"] = content_security_policy(
        seats_url(config, request.url.host or "", request.secure)
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info.get("name") or "index.html"
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    response = web.Response(body=request.app[CONSOLE].files[name], content_type=STATIC_FILES[name], charset="utf-8")
    _security_headers(request, response)
    return response


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


def _check_origin(request: web.Request) -> None:
    """A state change comes from one of the console's own pages (browsers send `Origin` on every
    POST), never from another site's form or script."""
    if request.headers.get("Origin") not in allowed_origins(request.app[CONSOLE].config()):
        raise Forbidden("this request must come from the console's own page")


async def _session_fields(request: web.Request) -> tuple[str, dict[str, str]]:
    """The session the cookie names: its key and fields (none: it expired or was logged out)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise Unauthorized("log in first")
    context = request.app[CONSOLE]
    key = context.keys.console_session(digest(cookie))
    try:
        stored = await context.redis.hgetall(key)
    except (RedisError, OSError):
        raise ServiceUnavailable("the session store is unreachable; retry") from None
    return key, {_text(name): _text(value) for name, value in stored.items()}


async def supervisor_session(request: web.Request) -> SupervisorSession:
    """A supervisor's live session (the wallboard's pages and socket); an agent's is refused."""
    key, fields = await _session_fields(request)
    if "agent" in fields:
        raise Forbidden("the wallboard is for supervisors; log in with a supervisor's credentials")
    supervisor = request.app[CONSOLE].supervisor(fields.get("supervisor", ""))
    if supervisor is None or "csrf" not in fields:
        raise SessionExpired("the session expired; log in again")
    return SupervisorSession(key, supervisor, fields["csrf"])


async def _changing(request: web.Request) -> ConsoleSession:
    """The session of a state-changing request: allowed origin, live session, its CSRF token."""
    _check_origin(request)
    session = await _agent_session(request)
    _check_csrf(request, session.csrf)
    return session


def _check_csrf(request: web.Request, csrf: str) -> None:
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
        raise Forbidden(f"the {CSRF_HEADER} header is missing or wrong")


def _described(request: web.Request, session: ConsoleSession) -> dict[str, object]:
    config = request.app[CONSOLE].config()
    return {
        "agent": session.agent.id,
        "name": session.agent.name,
        "csrf": session.csrf,
        "seats_url": seats_url(config, request.url.host or "", request.secure),
    }


def _json(body: object, status: int = 200) -> web.Response:
    response = json_response(body, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _login_request(request: web.Request) -> LoginRequest:
    return await _login_body(request, LoginRequest, "agent")


async def _login_body(request: web.Request, model: type[_Login], who: str) -> _Login:
    context = request.app[CONSOLE]
    http = context.config().http
    body = await context.read_body(request, http.max_body_bytes, http.body_timeout)
    try:
        return model.model_validate(jsonwire.loads(body))
    except (ValueError, ValidationError):
        raise InvalidRequest(
            f"the body must be JSON: {{{who}, token}}", (FieldError("", f"{who} and token are required"),)
        ) from None


async def _open_session(request: web.Request, role: str, who: str) -> tuple[str, str, str]:
    """A new session of `who` as `role` (agent, supervisor): (its cookie, its key, its CSRF token)."""
    context = request.app[CONSOLE]
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    key = context.keys.console_session(digest(cookie))
    try:
        async with context.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={role: who, "csrf": csrf})
            pipe.expire(key, int(context.config().console.session_ttl))
            await pipe.execute()
    except (RedisError, OSError):
        raise ServiceUnavailable("the session store is unreachable; retry") from None
    return cookie, key, csrf


def _set_cookie(request: web.Request, response: web.Response, cookie: str) -> None:
    ttl = int(request.app[CONSOLE].config().console.session_ttl)
    response.set_cookie(
        COOKIE, cookie, max_age=ttl, path="/console", httponly=True, samesite="Strict", secure=request.secure
    )


async def login(request: web.Request) -> web.Response:
    _check_origin(request)
    asked = await _login_request(request)
    context = request.app[CONSOLE]
    agent = context.agent(asked.agent)
    if not token_valid(agent, asked.token) or agent is None:
        log.info("console login failed")
        raise Unauthorized("wrong agent id or token")
    cookie, key, csrf = await _open_session(request, "agent", agent.id)
    log.info("console login of agent %s", agent.id)
    response = _json(_described(request, ConsoleSession(key, agent, csrf)))
    _set_cookie(request, response, cookie)
    return response


async def whoami(request: web.Request) -> web.Response:
    """The page, once loaded again, learns who is logged in and its CSRF token (readable by the
    console's own pages only: no CORS)."""
    return _json(_described(request, await _agent_session(request)))


async def logout(request: web.Request) -> web.Response:
    session = await _changing(request)
    log.info("console logout of agent %s", session.agent.id)
    return await _end_session(request, session.key)


async def _end_session(request: web.Request, key: str) -> web.Response:
    try:
        await request.app[CONSOLE].redis.delete(key)
    except (RedisError, OSError):
        raise ServiceUnavailable("the session store is unreachable; retry") from None
    response = _json({"status": "logged_out"})
    response.del_cookie(COOKIE, path="/console")
    return response


async def seat_ticket(request: web.Request) -> web.Response:
    """A one-time ticket the page sends as its `hello` token (the agent's token never reaches it)."""
    session = await _changing(request)
    context = request.app[CONSOLE]
    ticket = secrets.token_urlsafe(32)
    ttl = context.config().console.ticket_ttl
    try:
        await context.redis.set(context.keys.console_ticket(digest(ticket)), session.agent.id, px=int(ttl * 1000))
    except (RedisError, OSError):
        raise ServiceUnavailable("the session store is unreachable; retry") from None
    return _json({"ticket": ticket, "agent": session.agent.id, "expires_in": ttl})


# --- the seat page's reference data -----------------------------------------------------------


async def _agent_session(request: web.Request) -> ConsoleSession:
    """An agent's live session (the seat page, its reads and changes); a supervisor's is refused."""
    key, fields = await _session_fields(request)
    if "supervisor" in fields:
        raise Forbidden("the seat page is for agents; log in with an agent's credentials")
    agent = request.app[CONSOLE].agent(fields.get("agent", ""))
    if agent is None or "csrf" not in fields:
        raise SessionExpired("the session expired; log in again")
    return ConsoleSession(key, agent, fields["csrf"])


async def catalogue(request: web.Request) -> web.Response:
    """The dispatch catalogue's categories for the seat page's category choice (none: triage off)."""
    await _agent_session(request)
    context = request.app[CONSOLE]
    categories = context.catalogue.categories(context.config())
    listed = [{"id": one.id, "name": one.name, "department": one.department} for one in categories]
    return _json({"categories": listed})


async def _held_ticket(request: web.Request, session: ConsoleSession) -> Ticket:
    """The ticket `?ticket=` names, when the session's agent holds it (offered or claimed); any
    other (unknown, someone else's, closed) is the same 404."""
    ticket_id = request.query.get("ticket", "")
    try:
        ticket = await request.app[CONSOLE].queue.get(ticket_id) if 0 < len(ticket_id) <= 64 else None
    except NotFound:
        ticket = None
    if ticket is None or ticket.status not in ("offered", "claimed") or ticket.agent != session.agent.id:
        raise NotFound("no such ticket among yours")
    return ticket


async def knowledge(request: web.Request) -> web.Response:
    """Knowledge-base suggestions for a ticket the agent holds: its text and what the citizen said
    since (`knowledge_query`), the base's best `[knowledge] limit` entries valid today."""
    session = await _agent_session(request)
    base = request.app[KNOWLEDGE].base
    if base is None:
        return _json({"enabled": False, "results": []})
    ticket = await _held_ticket(request, session)
    config = request.app[CONSOLE].config()
    today = request.app[KNOWLEDGE].today()
    hits = await asyncio.to_thread(base.search, knowledge_query(ticket), today, config.knowledge.limit)
    sources = await request.app[CONSOLE].sources.of(base)
    results = [
        {
            "id": hit.id,
            "question": hit.question,
            "answer": hit.answer,
            "category": hit.category,
            "source": sources.get(hit.id, ""),
            "score": hit.score,
        }
        for hit in hits
    ]
    return _json({"enabled": True, "results": results})


async def earlier(request: web.Request) -> web.Response:
    """历史工单 for `?ticket=`: its citizen's earlier tickets across channels (`earlier_tickets`),
    for the agent holding it (offered or claimed: the offer shows the repeat mark before the
    accept) or a supervisor, as a recording is. Nothing is logged: the citizen is named by their number."""
    ticket = await _listenable_ticket(request)
    context = request.app[CONSOLE]
    found = await context.queue.citizen_history(ticket)
    return _json(earlier_tickets(ticket, found, context.config().history.repeat_window))


# --- supervisors (the wallboard) ------------------------------------------------------------------


async def recording(request: web.Request) -> web.FileResponse:
    """`?ticket=&n=`: the ticket's n-th recording (0 the first), for the agent holding the ticket
    (offered or claimed) or a supervisor. Seekable: aiohttp answers `Range` with 206 and the bytes
    asked (the browser's audio element seeks that way). Only a file inside `voice.recordings_dir`
    is served: a path that leads elsewhere is the same 404 as no recording."""
    ticket = await _listenable_ticket(request)
    recordings = [a for a in ticket.attachments if a.kind == "recording" and a.path]
    index = request.query.get("n", "0")
    if not index.isdigit() or int(index) >= len(recordings):
        raise NotFound("no such recording")
    path = recording_path(request.app[CONSOLE].config(), recordings[int(index)].path or "")
    if path is None:
        log.warning("ticket %s names a recording outside the recordings directory; not served", ticket.id)
        raise NotFound("no such recording")
    headers = {"Content-Type": "audio/wav", "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    return web.FileResponse(path, headers=headers)


def recording_path(config: GatewayConfig, stored: str) -> Path | None:
    """The file a recording attachment names, when it is a file inside `voice.recordings_dir`."""
    root = config.resolve(config.voice.recordings_dir).resolve()
    path = (root / stored).resolve()  # an absolute `stored` stays itself
    return path if path.is_relative_to(root) and path.is_file() else None


async def _listenable_ticket(request: web.Request) -> Ticket:
    """The ticket `?ticket=` names: for a supervisor, any; for an agent, one they hold."""
    try:
        await supervisor_session(request)
    except Forbidden:  # an agent's session
        return await _held_ticket(request, await _agent_session(request))
    ticket_id = request.query.get("ticket", "")
    if not 0 < len(ticket_id) <= 64:
        raise NotFound("no such ticket")
    return await request.app[CONSOLE].queue.get(ticket_id)  # NotFound names only the id asked


async def supervisor_login(request: web.Request) -> web.Response:
    """A supervisor's own id and token (an agent's token logs no supervisor in)."""
    _check_origin(request)
    asked = await _login_body(request, SupervisorLoginRequest, "supervisor")
    supervisor = request.app[CONSOLE].supervisor(asked.supervisor)
    if not token_valid(supervisor, asked.token) or supervisor is None:
        log.info("console supervisor login failed")
        raise Unauthorized("wrong supervisor id or token")
    cookie, key, csrf = await _open_session(request, "supervisor", supervisor.id)
    log.info("console login of supervisor %s", supervisor.id)
    response = _json(_supervisor_described(SupervisorSession(key, supervisor, csrf)))
    _set_cookie(request, response, cookie)
    return response


def _supervisor_described(session: SupervisorSession) -> dict[str, object]:
    return {"supervisor": session.supervisor.id, "name": session.supervisor.name, "csrf": session.csrf}


async def supervisor_whoami(request: web.Request) -> web.Response:
    return _json(_supervisor_described(await supervisor_session(request)))


async def supervisor_logout(request: web.Request) -> web.Response:
    _check_origin(request)
    session = await supervisor_session(request)
    _check_csrf(request, session.csrf)
    log.info("console logout of supervisor %s", session.supervisor.id)
    return await _end_session(request, session.key)


def add_console(app: web.Application, context: ConsoleContext) -> None:
    """The console's routes on the gateway's HTTP app."""
    app[CONSOLE] = context
    app.router.add_get("/console", to_index)
    app.router.add_get("/console/", static_file)
    app.router.add_get("/console/{name}", static_file)
    app.router.add_post("/console/api/login", login)
    app.router.add_get("/console/api/session", whoami)
    app.router.add_post("/console/api/logout", logout)
    app.router.add_post("/console/api/seat-ticket", seat_ticket)
    app.router.add_get("/console/api/catalogue", catalogue)
    app.router.add_get("/console/api/knowledge", knowledge)
    app.router.add_get("/console/api/earlier", earlier)
    app.router.add_get("/console/api/recording", recording)
    app.router.add_post("/console/api/supervisor/login", supervisor_login)
    app.router.add_get("/console/api/supervisor/session", supervisor_whoami)
    app.router.add_post("/console/api/supervisor/logout", supervisor_logout)


def read_files(directory: Path = STATIC_DIR) -> dict[str, bytes]:
    """The console's files, read once (a missing one stops the start, not a page)."""
    return {name: (directory / name).read_bytes() for name in STATIC_FILES}
