"""The intake queue on Redis Streams: the only place tickets live.

One stream per (queue, priority) with one consumer group, `seats`. Offering a ticket to an agent
delivers its stream entry to that agent's consumer, so Redis itself guarantees that no two agents
(in any number of gateway processes) hold the same offer. A declined or expired offer, or the claim
of an agent who never came back, is handed to the `_pool` consumer and offered again before newer
entries, so it keeps its place. Every transition is one Lua script (`queue_scripts.py`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from gateway.config import GatewayConfig, LiveConfig
from gateway.errors import Conflict, NotFound, QueueFull, ServiceUnavailable
from gateway.keys import Keys as Keys  # re-exported: gateway.queue exports it
from gateway.keys import reply_text
from gateway.messages import Escalated
from gateway.queue import scripts as queue_scripts
from gateway.queue.batching import ScriptBatcher, again_on_stale
from gateway.ticket import (
    MAX_PRIORITY,
    Citizen,
    ConversationMessage,
    Status,
    Ticket,
    conversation_identity,
    history_entry,
    identities,
    is_ticket_id,
    utcnow,
)

GROUP = "seats"
STATS_TTL = 35 * 86400  # a day's queue counters are kept this long (a month of history for reports)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    ticket_id: str
    created: bool


@dataclass(frozen=True, slots=True)
class SentReply:
    """What became of a reply at the peer: its parts' ids, or `reason` when refused for good."""

    channel: str
    reply_id: str
    ticket_id: str
    peer_ids: tuple[str, ...] = ()
    reason: str | None = None
    page: bool = False  # a supervisor paged (gateway/triage/paging.py): `page_sent` in the history


@dataclass(frozen=True, slots=True)
class Recorded:
    """A delivery state recorded (`ok`: `message` is the reply now, `agent` holds its ticket) or
    not (`recorded` before, `partial`, `settled`, `unknown`: nothing changed)."""

    outcome: str
    ticket_id: str = ""
    message: ConversationMessage | None = None
    agent: str = ""


def _reason_suffix(reason: str | None) -> str:
    """The JSON a failed reply's message gains: its reason."""
    return "" if reason is None else ',"reason":' + json.dumps(reason[:256], ensure_ascii=False)


def _recorded(result: Sequence[Any], ticket_id: str = "") -> Recorded:
    outcome, *rest = (reply_text(item) for item in result)
    if outcome != "ok":
        return Recorded(outcome, ticket_id)
    message = ConversationMessage.model_validate_json(rest[0]) if rest[0] else None
    return Recorded("ok", ticket_id, message, rest[1])


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What the MERGE script does with a triaged ticket: link it under `parent` (with its
    `similarity`), else put it in `bucket` ('' = none) as `signature`."""

    parent: str
    similarity: float
    bucket: str
    signature: str
    received_at: datetime
    window: float
    max_children: int
    max_bucket: int


@dataclass(frozen=True, slots=True)
class FollowupPlan:
    """What a submit does for the 回访: send `text` to `identity` on `channel`'s outbox and wait for
    their rating until `timeout`; or (`channel` None) record that nothing was sent, and why."""

    channel: str | None
    identity: str = ""
    citizen: Citizen | None = None  # the citizen as the outbox entry names them (`Reply.citizen`)
    text: str = ""
    reason: str = ""
    timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class FollowupRecord:
    """A 回访's outcome for `record_followup`: the ticket after (`after`), what its history says,
    and, when the citizen answered 不满意, the reopen's history entry; `remembered`: the answer's
    idempotency ids (none for no answer)."""

    after: Ticket
    entry: str
    identity_key: str = ""
    reopen_entry: str = ""
    remembered: tuple[str, ...] = ()
    channel: str = ""
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """What became of a citizen's follow-up (`JOIN`): `joined` their open ticket (held by `agent`
    when it is offered or claimed), a `duplicate` of a message taken before, the answer to the
    `followup` question of `ticket_id` (not taken yet: `record_followup` does), or `none` (no open
    conversation: it needs a ticket of its own)."""

    outcome: Literal["joined", "duplicate", "followup", "none"]
    ticket_id: str = ""
    status: str = ""
    agent: str = ""


def history_json(actor: str, action: str, now: datetime | None = None, **detail: str) -> str:
    return history_entry(actor, action, now or utcnow(), **detail).model_dump_json(exclude_defaults=True)


# Kept beside the document: status and agent as hash fields, history and conversation as lists,
# the merge links (主单 + 子单) as hash fields (`parent`, `confirmed`, `children`: ids separated by
# spaces), written by their own scripts only (MERGE, CONFIRM_MERGE, SPLIT).
_BESIDE = frozenset(
    {"status", "agent", "history", "messages", "messages_dropped", "parent", "merge_confirmed", "children"}
)


_LINKS = ("parent", "confirmed", "children")  # the hash fields of a ticket's merge links


def _doc_json(ticket: Ticket) -> str:
    """The stored part of a ticket: everything but what is kept beside it."""
    return ticket.model_dump_json(exclude=set(_BESIDE), exclude_defaults=True)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _score(moment: datetime) -> str:
    """A ticket's place in its citizen's index: when it was received, in ms, its microseconds the
    fraction (exact in a double), so a citizen's SMS and call within one millisecond keep their
    order, and a reader that speaks ms (the merge window) needs no other unit."""
    micros = (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return f"{micros // 1000}.{micros % 1000:03d}"


def _with_beside(
    doc: str | bytes,
    history: Iterable[str | bytes],
    messages: Iterable[str | bytes],
    dropped: Any,
    links: Sequence[Any] = (),
) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(doc)
    data["history"] = [json.loads(item) for item in history]
    said = [json.loads(item) for item in messages]
    if said:
        data["messages"] = said
    if dropped and int(dropped):
        data["messages_dropped"] = int(dropped)
    parent, confirmed, children = (reply_text(item) if item else "" for item in (*links, None, None, None)[:3])
    if parent:
        data["parent"] = parent
    if confirmed == "1":
        data["merge_confirmed"] = True
    if children:
        data["children"] = children.split()
    return data


def _assemble(
    doc: str | bytes,
    status: str,
    agent: str,
    history: Iterable[str | bytes],
    messages: Iterable[str | bytes],
    dropped: Any,
    links: Sequence[Any] = (),
) -> Ticket:
    data = _with_beside(doc, history, messages, dropped, links)
    data["status"] = status
    data["agent"] = agent or None
    return Ticket.model_validate(data)


@dataclass(frozen=True, slots=True)
class RawTicket:
    """A ticket as stored (validated when it was written), for the hot path: sent to a seat as is,
    without building and validating a `Ticket` again."""

    id: str
    data: dict[str, Any]

    @property
    def is_voice(self) -> bool:
        return "voice" in self.data

    def ticket(self) -> Ticket:
        return Ticket.model_validate(self.data)


def _raw(payload: Sequence[Any]) -> RawTicket:
    """A ticket from the scripts' `ticket_payload`: doc, status, agent, history, messages, dropped,
    then its merge links."""
    doc, status, agent, history, messages, dropped, *links = payload
    data = _with_beside(doc, history, messages, dropped, links)
    data["status"] = reply_text(status)
    if agent:
        data["agent"] = reply_text(agent)
    return RawTicket(id=data["id"], data=data)


def _today() -> str:
    """The day the counters go to: the gateway host's local date (a hotline's day is local)."""
    return datetime.now().astimezone().strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue's figures for a day, as a supervisor reads them."""

    answered: int = 0
    in_service_level: int = 0
    wait_ms: int = 0
    over_max_wait: int = 0  # answered only after the queue's `max_wait`
    submitted: int = 0
    abandoned: int = 0

    @property
    def service_level(self) -> float | None:
        """Share of answered tickets taken within the queue's `service_level` (None: none answered)."""
        return self.in_service_level / self.answered if self.answered else None

    @property
    def average_wait_s(self) -> float | None:
        """Average speed of answer, in seconds."""
        return self.wait_ms / self.answered / 1000 if self.answered else None


def _known_shape(ticket_id: str) -> None:
    """Refuse an id no ticket can have before it becomes part of a Redis key (`{id}:h` would name a
    ticket's history, read as a hash: an error, not an answer); the answer is the unknown id's."""
    if not is_ticket_id(ticket_id):
        raise NotFound("no such ticket")


class TicketQueue:
    """The queue operations; every one is a single atomic script call."""

    def __init__(self, client: aioredis.Redis, config: GatewayConfig | LiveConfig) -> None:
        self._redis = client
        self._live = LiveConfig.of(config)
        self.keys = Keys(self._live.current.redis.key_prefix)  # bound at start (docs/design.md)
        self._scripts = {
            name: client.register_script(getattr(queue_scripts, name))
            for name in (
                "INTAKE",
                "JOIN",
                "REPLY",
                "SENT",
                "RECEIPT",
                "OFFER",
                "ACCEPT",
                "RELEASE",
                "UPDATE",
                "SETTLE",
                "FOLLOWUP",
                "TAKE_EXPIRED_LEASE",
                "CONFIRM_MERGE",
                "SPLIT",
                "MERGE_LOOKUP",
                "SURGE",
                "ESCALATE",
            )
        }
        self._batcher = ScriptBatcher(client)

    @property
    def _config(self) -> GatewayConfig:
        return self._live.current

    @property
    def live(self) -> LiveConfig:
        return self._live

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._batcher.call(
                self._scripts[script], keys, args, repeatable=script in queue_scripts.REPEATABLE
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc

    async def ensure_groups(self) -> None:
        """Load the scripts and create every queue's streams and consumer group (idempotent)."""
        for script in self._scripts.values():
            await self._redis.script_load(script.script)
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in self._config.queues:
                for priority in range(MAX_PRIORITY + 1):
                    await self._ensure_group(pipe, self.keys.stream(queue.name, priority))
            await pipe.execute(raise_on_error=False)

    async def _ensure_group(self, pipe: Any, stream: str) -> None:
        pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)

    async def intake(
        self, ticket: Ticket, actor: str, client: str | None = None, fingerprint: str = ""
    ) -> IntakeResult:
        """Store a new ticket and queue it, unless its channel message id was seen before.

        `client` scopes the message id to an API client (None: the gateway's own tickets);
        `fingerprint` (`intake.fingerprint`) tells a retry from another request that reuses its
        id: the latter is a `Conflict`.
        """
        keys = self.keys
        identity = conversation_identity(ticket)
        first = ConversationMessage(direction="in", id=ticket.message_id, at=ticket.received_at, text=ticket.text)
        history = self._config.history
        result = await self._run(
            "INTAKE",
            [
                keys.idempotency(ticket.channel, ticket.message_id, client),
                keys.ticket(ticket.id),
                keys.history(ticket.id),
                keys.stream(ticket.queue, ticket.priority),
                keys.created,
                keys.messages(ticket.id),
                *(keys.citizen_tickets(citizen) for citizen in identities(ticket)),
            ],
            [
                ticket.id,
                _doc_json(ticket),
                history_json(actor, "queued", queue=ticket.queue),
                self._config.redis.idempotency_ttl,
                self._config.redis.max_queue_length,
                keys.wake,
                ticket.queue,
                GROUP,
                fingerprint,
                self._config.redis.created_maxlen,
                ticket.channel,
                keys.conversation(ticket.channel, identity) if identity else "",
                _ms(ticket.received_at),
                int(self._config.conversations.window * 1000),
                first.model_dump_json(exclude_defaults=True) if identity else "",
                _score(ticket.received_at),
                int(history.window * 1000),
                history.max_tickets,
            ],
        )
        code, ticket_id = int(result[0]), reply_text(result[1])
        if code < 0:
            raise QueueFull(f"queue {ticket.queue} is full; try again later")
        if code == 2:
            raise Conflict("this idempotency key was already used for a different request")
        # A repeat of this very call (after a connection error) finds the ticket it created.
        return IntakeResult(ticket_id=ticket_id, created=code == 1 or ticket_id == ticket.id)

    async def join(
        self,
        channel: str,
        identity: str,
        message: ConversationMessage,
        remembered: Sequence[str],
        actor: str,
        followup: bool = True,
    ) -> Joined:
        """Append a citizen's follow-up to their open ticket on this channel, once (`JOIN`);
        `remembered`: the idempotency ids it is kept under (the first) or may have been (the rest).
        With `followup`, the answer to a waiting 回访 question is found first (and left to
        `record_followup`)."""
        keys = self.keys
        conversations = self._config.conversations
        asking = self._config.followup
        result = await self._run(
            "JOIN",
            [keys.conversation(channel, identity), *(keys.idempotency(channel, id_) for id_ in remembered)],
            [
                keys.prefix,
                message.model_dump_json(exclude_defaults=True),
                _ms(message.at),
                int(conversations.window * 1000),
                conversations.max_messages,
                history_json(actor, "message", message.at, message=message.id),
                self._config.redis.idempotency_ttl,
                keys.followup(channel, identity) if followup and asking.enabled else "",
                int(asking.timeout * 1000),
                keys.said if self._config.triage.enabled else "",
                self._config.triage.said_maxlen,
            ],
        )
        outcome, *rest = (reply_text(item) for item in result)
        if outcome == "joined":
            return Joined("joined", *rest)
        if outcome in ("duplicate", "followup"):
            return Joined(outcome, rest[0])  # type: ignore[arg-type]  # one of the two
        return Joined("none")

    async def offer(self, agent: str, queues: Sequence[str]) -> RawTicket | None:
        """Reserve the best waiting ticket of these queues for this agent; None when they are empty."""
        result = await self._run(
            "OFFER",
            [self.keys.offers, self.keys.agent_tickets(agent)],
            [
                agent,
                GROUP,
                int(self._config.seats.offer_timeout * 1000),
                history_json("system", "offered", agent=agent),
                self.keys.prefix,
                MAX_PRIORITY,
                *queues,
            ],
        )
        if not result:
            return None
        return _raw(result[1:])

    async def accept(self, ticket_id: str, agent: str) -> RawTicket:
        _known_shape(ticket_id)
        keys = self.keys
        result = await self._run(
            "ACCEPT",
            [keys.ticket(ticket_id), keys.history(ticket_id), keys.offers, keys.stats(_today())],
            [
                agent,
                history_json(f"agent:{agent}", "claimed"),
                STATS_TTL,
                *(f"{q.name}={int(q.service_level * 1000)},{int(q.max_wait * 1000)}" for q in self._config.queues),
            ],
        )
        code = reply_text(result[0])
        if code != "ok":
            self._raise_for(code, ticket_id, reply_text(result[1]))
        return _raw(result[1:])

    async def release(self, ticket_id: str, agent: str, reason: str, statuses: str = "offered") -> bool:
        """Put an offered (or claimed) ticket back in its queue at its old place."""
        if not is_ticket_id(ticket_id):
            return False  # no such ticket, as for an unknown one
        keys = self.keys
        code = await self._run(
            "RELEASE",
            [keys.ticket(ticket_id), keys.history(ticket_id), keys.offers],
            [
                agent,
                statuses,
                GROUP,
                history_json("system", "requeued", reason=reason, agent=agent),
                keys.wake,
                keys.prefix,
            ],
        )
        return reply_text(code) == "ok"

    async def get(self, ticket_id: str) -> Ticket:
        return (await self.get_stored(ticket_id))[0]

    async def get_stored(self, ticket_id: str) -> tuple[Ticket, str]:
        """The ticket and its document as stored (what a change guarded by it compares)."""
        _known_shape(ticket_id)
        try:
            (doc, status, agent, dropped, *links), history, messages = await again_on_stale(
                self._redis, lambda: self._read(ticket_id)
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        if doc is None:
            raise NotFound(f"no ticket {ticket_id}")
        ticket = _assemble(doc, reply_text(status), reply_text(agent or ""), history, messages, dropped, links)
        return ticket, reply_text(doc)

    async def documents(self, ticket_ids: Sequence[str]) -> list[Ticket | None]:
        """Several tickets in one round trip, as `get_document` reads one (status, agent and merge
        links with the document; no history or conversation); None for an id no ticket has (any more)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ticket_id in ticket_ids:
                    # An id of another shape is never made into a key (`_known_shape`): an empty answer.
                    key = self.keys.ticket(ticket_id) if is_ticket_id(ticket_id) else self.keys.ticket("-")
                    pipe.hmget(key, "doc", "status", "agent", *_LINKS)
                found = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        return [
            _assemble(doc, reply_text(status), reply_text(agent or ""), (), (), 0, links) if doc else None
            for doc, status, agent, *links in found
        ]

    async def citizen_history(self, ticket: Ticket) -> list[Ticket]:
        """The tickets of `ticket`'s citizen (under any of its identities) received up to it, within
        `[history] window` before it, newest first, each once, at most `max_tickets`; `ticket` itself
        among them when it is indexed. A ticket that expired is left out. Two round trips: the
        citizen's indexes (`hg:citizen:{identity}`), then the documents (`documents`)."""
        history = self._config.history
        keys = [self.keys.citizen_tickets(citizen) for citizen in identities(ticket)]
        if not keys:
            return []
        since = _score(ticket.received_at - timedelta(seconds=history.window))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrevrangebyscore(
                        key, _score(ticket.received_at), since, start=0, num=history.max_tickets, withscores=True
                    )
                found = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        scores: dict[str, float] = {}
        for member, score in (pair for pairs in found for pair in pairs):
            scores[reply_text(member)] = float(score)
        newest = sorted(scores, key=lambda ticket_id: (scores[ticket_id], ticket_id), reverse=True)
        return [one for one in await self.documents(newest[: history.max_tickets]) if one is not None]

    async def tickets(self, ticket_ids: Sequence[str]) -> list[Ticket | None]:
        """Several tickets with their history (not their conversation) in one round trip; None for
        an id no ticket has (any more)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ticket_id in ticket_ids:
                    known = ticket_id if is_ticket_id(ticket_id) else "-"  # never a key of another shape
                    pipe.hmget(self.keys.ticket(known), "doc", "status", "agent", "dropped", *_LINKS)
                    pipe.lrange(self.keys.history(known), 0, -1)
                found = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        tickets: list[Ticket | None] = []
        for (doc, status, agent, dropped, *links), history in zip(found[::2], found[1::2], strict=True):
            if doc is None:
                tickets.append(None)
                continue
            tickets.append(_assemble(doc, reply_text(status), reply_text(agent or ""), history, (), dropped, links))
        return tickets

    async def get_document(self, ticket_id: str) -> Ticket:
        """The ticket without what is kept beside its document (history, conversation): one HMGET,
        for the hot paths that change only the document (a submit's last edits and its 回访)."""
        _known_shape(ticket_id)
        try:
            doc, status, agent, *links = await again_on_stale(
                self._redis,
                lambda: self._redis.hmget(self.keys.ticket(ticket_id), "doc", "status", "agent", *_LINKS),
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        if doc is None:
            raise NotFound(f"no ticket {ticket_id}")
        return _assemble(doc, reply_text(status), reply_text(agent or ""), (), (), 0, links)

    async def _read(self, ticket_id: str) -> tuple[list[Any], Any, Any]:
        """The ticket's fields (doc, status, agent, dropped, then its merge links), history, conversation."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.keys.ticket(ticket_id), "doc", "status", "agent", "dropped", *_LINKS)
            pipe.lrange(self.keys.history(ticket_id), 0, -1)
            pipe.lrange(self.keys.messages(ticket_id), 0, -1)
            fields, history, messages = await pipe.execute()
        return fields, history, messages

    async def update(self, ticket: Ticket, agent: str, changed: Iterable[str]) -> None:
        keys = self.keys
        code = await self._run(
            "UPDATE",
            [keys.ticket(ticket.id), keys.history(ticket.id)],
            [
                agent,
                _doc_json(ticket),
                history_json(f"agent:{agent}", "updated", fields=",".join(sorted(changed))),
            ],
        )
        if reply_text(code) != "ok":
            self._raise_for(reply_text(code), ticket.id, "")

    async def submit(
        self,
        ticket_id: str,
        agent: str,
        edited: Ticket | None = None,
        followup: FollowupPlan | None = None,
        now: datetime | None = None,
    ) -> None:
        """Close a claimed ticket (with the agent's last edits) and hand it, whole, to `submitted`;
        with a `followup`, its answer goes out with the 回访 question in the same step (refused
        with 503 while that channel's outbox is full: the ticket stays claimed)."""
        now = now or utcnow()
        entry = history_json(f"agent:{agent}", "submitted", now)
        extra = self._followup_args(ticket_id, agent, followup, now) if followup else []
        await self._settle(ticket_id, agent, "claimed", "submitted", entry, edited, publish=True, followup=extra)

    async def submit_unless_answered(self, ticket_id: str, agent: str, now: datetime | None = None) -> bool:
        """`submit` as stored, in one step, unless the ticket names an answer for its citizen: then
        nothing changes and False says its 回访 must be planned first (most submits have none, and
        skip reading the ticket)."""
        now = now or utcnow()
        entry = history_json(f"agent:{agent}", "submitted", now)
        return await self._settle(
            ticket_id, agent, "claimed", "submitted", entry, None, publish=True, followup=["check"]
        )

    async def answer_child(
        self, child: Ticket, parent: Ticket, followup: FollowupPlan | None, now: datetime | None = None
    ) -> bool:
        """Submit a 子单 with its 主单's answer, by the system (history `system`, `answered_by_parent`),
        its citizen sent the answer with the 回访 question on their own channel as an agent's
        submit sends it (`followup`, planned for `child` as `FollowupDesk.plan` plans a seat's).
        One SETTLE: False, nothing written, when it is no longer that 主单's open 子单 (answered,
        submitted, abandoned or split before: a repeat after a crash answers nobody twice)."""
        now = now or utcnow()
        entry = history_json("system", "answered_by_parent", now, parent=parent.id)
        extra = self._followup_args(child.id, "system", followup, now, actor="system") if followup else []
        try:
            await self._settle(
                child.id, f"parent:{parent.id}", "queued,offered,claimed", "submitted", entry, child, True, extra
            )
        except Conflict:
            return False
        return True

    def _followup_args(
        self, ticket_id: str, agent: str, plan: FollowupPlan, now: datetime, actor: str = ""
    ) -> list[Any]:
        """SETTLE's follow-up arguments (see the script); `actor`: who asks ('': the agent)."""
        if plan.channel is None:
            return ["none", history_json("system", "followup_not_sent", now, reason=plan.reason)]
        keys = self.keys
        citizen = plan.citizen or Citizen()
        fields = {
            "ticket": ticket_id,
            "channel": plan.channel,
            "citizen": citizen.model_dump_json(exclude_none=True),
            "text": plan.text,
            "agent": agent,
        }
        said = ConversationMessage(direction="out", id="0-0", at=now, text=plan.text, status="queued")
        return [
            "send",
            history_json(actor or f"agent:{agent}", "followup_asked", now, channel=plan.channel),
            keys.outbox(plan.channel),
            self._config.redis.outbox_maxlen,
            said.model_dump_json(exclude_defaults=True),
            self._config.conversations.max_messages,
            keys.followup(plan.channel, plan.identity),
            keys.followups,
            _ms(now),
            int(plan.timeout * 1000),
            *(item for pair in fields.items() for item in pair),
        ]

    async def record_followup(self, ticket_id: str, read_doc: str, record: FollowupRecord) -> str:
        """A 回访's outcome on a submitted ticket, once (`FOLLOWUP`): 'ok', 'duplicate', 'closed',
        'changed' (read the ticket again and decide again) or 'not_found'."""
        keys = self.keys
        after = record.after
        at = record.at or utcnow()
        result = await self._run(
            "FOLLOWUP",
            [
                keys.ticket(ticket_id),
                keys.history(ticket_id),
                keys.followups,
                *(keys.idempotency(record.channel, id_) for id_ in record.remembered),
            ],
            [
                ticket_id,
                read_doc,
                _doc_json(after),
                record.entry,
                record.identity_key,
                "1" if record.reopen_entry else "",
                record.reopen_entry,
                keys.stream(after.queue, after.priority),
                GROUP,
                keys.wake,
                self._config.redis.idempotency_ttl,
                int(self._config.conversations.window * 1000),
                _ms(at),
            ],
        )
        return reply_text(result)

    async def asked_before(self, moment: datetime, batch: int = 200) -> list[str]:
        """Tickets whose 回访 question was asked before `moment` and is still waiting."""
        try:
            found = await self._redis.zrangebyscore(self.keys.followups, "-inf", _ms(moment), start=0, num=batch)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        return [reply_text(ticket_id) for ticket_id in found]

    async def forget_followup(self, ticket_id: str) -> None:
        """A waiting 回访 whose ticket is gone (expired): nothing left to record it on."""
        await self._redis.zrem(self.keys.followups, ticket_id)

    async def abandon(self, ticket_id: str, reason: str) -> None:
        """The citizen went away (hung up while queued, say): settle the ticket as abandoned."""
        entry = history_json("system", "abandoned", reason=reason)
        await self._settle(ticket_id, "", "queued,offered,claimed", "abandoned", entry, None, publish=False)

    async def _settle(
        self,
        ticket_id: str,
        agent: str,
        allowed: str,
        final_status: Status,
        entry: str,
        final: Ticket | None,
        publish: bool,
        followup: Sequence[Any] = (),
    ) -> bool:
        """True once settled; False only in the 'check' follow-up mode, when a 回访 must be planned."""
        _known_shape(ticket_id)
        keys = self.keys
        code = await self._run(
            "SETTLE",
            [
                keys.ticket(ticket_id),
                keys.history(ticket_id),
                keys.submitted,
                keys.offers,
                keys.stats(_today()),
                keys.messages(ticket_id),
            ],
            [
                agent,
                allowed,
                final_status,
                _doc_json(final) if final else "",
                entry,
                "1" if publish else "",
                GROUP,
                self._config.redis.submitted_maxlen,
                self._config.redis.ticket_ttl,
                keys.prefix,
                STATS_TTL,
                *(followup or [""]),
            ],
        )
        if reply_text(code) == "plan_followup":
            return False
        if reply_text(code) == "outbox_full":
            limit = self._config.redis.outbox_maxlen
            raise ServiceUnavailable(
                f"the outbox for the 回访 is full ({limit} replies wait); the ticket stays yours, submit it again later"
            )
        if reply_text(code) != "ok":
            self._raise_for(reply_text(code), ticket_id, "")
        return True

    async def amend(
        self,
        ticket_id: str,
        change: Callable[[Ticket], Ticket],
        actor: str,
        action: str,
        also: Callable[[Any, Ticket], None] | None = None,
        prepare: Callable[[Ticket], Awaitable[None]] | None = None,
    ) -> Ticket:
        """A system actor (a media worker, triage) changes a ticket's document, whoever holds it.
        `also` adds its own commands (what the change announces) to the same transaction;
        `prepare` reads what the change needs (triage: its merge candidates) once the ticket is
        read, under the same WATCH, so a ticket is read once per attempt.

        Optimistic: WATCH the ticket, change it, write it back in MULTI; retry if anyone else
        wrote in between. Status and owner are left alone. A queued ticket whose priority the
        change raised, or whose queue it changed, moves to that queue's stream of that priority
        (REQUEUE: its old place goes), the dispatchers woken.
        """
        key = self.keys.ticket(ticket_id)
        for _ in range(20):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    ticket = await self.get(ticket_id)
                    if prepare is not None:
                        await prepare(ticket)
                    changed = change(ticket)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, "doc", _doc_json(changed))
                    pipe.rpush(self.keys.history(ticket_id), history_json(actor, action))
                    moved = changed.priority > ticket.priority or changed.queue != ticket.queue
                    if ticket.status == "queued" and moved:
                        self._requeue(pipe, changed)
                    if also is not None:
                        also(pipe, changed)
                    await pipe.execute()
                    return changed
                except WatchError:
                    continue
                except (RedisError, OSError) as exc:
                    raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        raise Conflict(f"ticket {ticket_id} kept changing; amend gave up")

    async def count_surge(
        self, category: str, place: str, ticket_id: str, at: datetime, window: float, baseline: float
    ) -> tuple[int, int]:
        """The ticket counted into its category x place; (in the window, in the baseline before it)."""
        reply = await self._run(
            "SURGE",
            [self.keys.surge(category, place)],
            [ticket_id, _ms(at), int(window * 1000), int(baseline * 1000)],
        )
        return int(reply[0]), int(reply[1])

    async def warn_surge(self, category: str, place: str, window: float, warning: dict[str, str], maxlen: int) -> bool:
        """Tell the supervisors of a surge once per window and place (False: told already)."""
        try:
            if not await self._redis.set(self.keys.surge_warned(category, place), "1", nx=True, px=int(window * 1000)):
                return False
            await self._redis.xadd(self.keys.surges, warning, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        return True

    async def merge_lookup(
        self,
        buckets: Sequence[str],
        citizens: Sequence[str],
        since: datetime,
        limit: int,
        received: datetime,
        citizen_limit: int,
    ) -> tuple[list[list[tuple[str, str, datetime, str, str]]], list[tuple[str, str]]]:
        """Each bucket's possible 主单 received since `since`, newest first, at most `limit` a
        bucket, with their status and parent as they are now; and the tickets of the citizen's
        identities from `since` up to `received` (the ticket's own time: those before it), the
        newest `citizen_limit` of each, with their status (`(id, status)`, newest first). A bucket's
        member: (id, signature, received, status, parent). One script, read only (MERGE_LOOKUP)."""
        reply = await self._run(
            "MERGE_LOOKUP",
            [*buckets, *citizens],
            [len(buckets), _ms(since), limit, self.keys.prefix, _score(received), citizen_limit],
        )
        found: list[list[tuple[str, str, datetime, str, str]]] = []
        for members in reply[: len(buckets)]:
            texts = [reply_text(item) for item in members]
            bucket: list[tuple[str, str, datetime, str, str]] = []
            for at in range(0, len(texts), 4):
                member, score, status, parent = texts[at : at + 4]
                ticket_id, _, signature = member.partition(" ")
                received = datetime.fromtimestamp(float(score) / 1000, UTC)
                bucket.append((ticket_id, signature, received, status, parent))
            found.append(bucket)
        theirs = [reply_text(item) for item in reply[len(buckets)]]
        return found, list(dict.fromkeys(zip(theirs[::2], theirs[1::2], strict=True)))

    def merge(self, pipe: Any, ticket_id: str, plan: MergePlan) -> None:
        """Inside the triage amend's MULTI: link the ticket to its 主单, or put it in its bucket (MERGE)."""
        keys = self.keys
        now = utcnow()
        mine = history_json("triage", "merged", now, parent=plan.parent, similarity=f"{plan.similarity:.2f}")
        theirs = history_json("triage", "child_linked", now, child=ticket_id, similarity=f"{plan.similarity:.2f}")
        pipe.eval(
            queue_scripts.MERGE,
            2,
            keys.ticket(ticket_id),
            keys.history(ticket_id),
            ticket_id,
            plan.parent,
            keys.ticket(plan.parent) if plan.parent else "",
            mine,
            theirs,
            plan.max_children,
            plan.bucket,
            f"{ticket_id} {plan.signature}",
            _ms(plan.received_at),
            int(plan.window * 1000),
            plan.max_bucket,
        )

    async def escalations_due(self, now: datetime, limit: int) -> list[str]:
        """Tickets whose next 督办 event falls due by `now`, the longest due first, at most `limit`."""
        try:
            found = await self._redis.zrangebyscore(self.keys.escalate, "-inf", _ms(now), start=0, num=limit)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc
        return [reply_text(ticket_id) for ticket_id in found]

    async def escalate(
        self, ticket_id: str, events: Sequence[Escalated], next_at: datetime | None, now: datetime, maxlen: int
    ) -> list[str]:
        """Send a ticket's 督办 events it was not sent before, each once (a history line `triage`,
        `escalated` with `clock` and `kind`, an entry on the escalations stream, `maxlen` ~), then
        schedule it again at `next_at` or unschedule it (None), in one step (ESCALATE); the keys of
        the events written now. A closed or gone ticket is sent nothing and leaves the schedule."""
        keys = self.keys
        if not is_ticket_id(ticket_id):  # no ticket has it (`_known_shape`): off the schedule, never made a key
            await self._redis.zrem(keys.escalate, ticket_id)
            return []
        args: list[Any] = [ticket_id, _ms(next_at) if next_at is not None else "", maxlen]
        for event in events:
            entry = history_json("triage", "escalated", now, clock=event.clock, kind=event.kind)
            args += [f"{event.clock}:{event.kind}", entry, event.serialize()]
        reply = await self._run(
            "ESCALATE", [keys.ticket(ticket_id), keys.history(ticket_id), keys.escalations, keys.escalate], args
        )
        outcome, *written = (reply_text(item) for item in reply)
        return written if outcome == "ok" else []

    async def confirm_merge(self, child_id: str, agent: str) -> None:
        """An agent confirms that a 子单 belongs under its 主单 (a history line on each; a repeat
        writes nothing); `Conflict` when it is no 子单, `NotFound` when it is gone."""
        _known_shape(child_id)
        keys = self.keys
        now = utcnow()
        code = reply_text(
            await self._run(
                "CONFIRM_MERGE",
                [keys.ticket(child_id), keys.history(child_id)],
                [
                    history_json(f"agent:{agent}", "merge_confirmed", now),
                    history_json(f"agent:{agent}", "merge_confirmed", now, child=child_id),
                    keys.prefix,
                ],
            )
        )
        if code == "not_found":
            raise NotFound(f"no ticket {child_id}")
        if code != "ok":
            raise Conflict(f"ticket {child_id} is not a 子单 of another ticket")

    async def split(self, child_id: str, agent: str) -> str:
        """An agent splits a 子单 from its 主单: both tickets changed in one step, a history line on
        each; the former 主单's id. `Conflict` when it is no 子单 or no longer open."""
        _known_shape(child_id)
        keys = self.keys
        now = utcnow()
        result = await self._run(
            "SPLIT",
            [keys.ticket(child_id), keys.history(child_id)],
            [
                child_id,
                history_json(f"agent:{agent}", "split", now),
                history_json(f"agent:{agent}", "child_split", now, child=child_id),
                keys.prefix,
            ],
        )
        code, *rest = (reply_text(item) for item in result)
        if code == "not_found":
            raise NotFound(f"no ticket {child_id}")
        if code == "not_merged":
            raise Conflict(f"ticket {child_id} is not a 子单 of another ticket")
        if code != "ok":
            raise Conflict(f"ticket {child_id} is closed; it cannot be split any more")
        return rest[0]

    def tell_said(self, pipe: Any, ticket: Ticket, source: str = "transcript") -> None:
        """Inside a change's MULTI: the citizen said more on `ticket`, for triage (when it is on)
        to scan again (`hg:said`; the JOIN script does the same for a follow-up message)."""
        triage = self._config.triage
        if triage.enabled:
            pipe.xadd(self.keys.said, {"t": ticket.id, "s": source}, maxlen=triage.said_maxlen, approximate=True)

    def _requeue(self, pipe: Any, ticket: Ticket) -> None:
        """Queue `ticket` again at its priority, inside the caller's MULTI (its group exists: every
        configured queue's streams get theirs at start, `ensure_groups`)."""
        stream = self.keys.stream(ticket.queue, ticket.priority)
        pipe.eval(queue_scripts.REQUEUE, 1, self.keys.ticket(ticket.id), stream, ticket.id, self.keys.wake, GROUP)

    async def note(self, ticket_id: str, actor: str, action: str, **detail: str) -> None:
        """Append a line to a ticket's history (what a worker did with the call)."""
        try:
            entry = history_json(actor, action, None, **detail)
            await self._redis.rpush(self.keys.history(ticket_id), entry)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the ticket store is unavailable; try again shortly") from exc

    async def position(self, ticket_id: str, queue: str) -> int:
        """How many waiting tickets of `queue` are offered before this one (priority, then age)."""
        fields = await self._redis.hmget(self.keys.ticket(ticket_id), "stream", "entry", "status")
        stream, entry, status = (reply_text(f) if f is not None else "" for f in fields)
        if status != "queued" or not stream:
            return 0
        mine = int(stream.rsplit(":", 1)[1])
        ahead = 0
        for priority in range(MAX_PRIORITY, mine, -1):
            ahead += await self._redis.xlen(self.keys.stream(queue, priority))
        before = await self._redis.xrange(stream, "-", f"({entry}", count=1000)
        return ahead + len(before or [])

    async def reply(self, ticket: Ticket, agent: str, text: str, now: datetime | None = None) -> str:
        """Queue an agent's reply for the channel the ticket came from; returns its id (the outbox
        entry's). Refused (503) while the outbox holds `redis.outbox_maxlen` replies not yet sent:
        an undelivered reply is never trimmed away."""
        fields = {
            "ticket": ticket.id,
            "channel": ticket.channel,
            "citizen": ticket.citizen.model_dump_json(exclude_none=True),
            "text": text,
            "agent": agent,
        }
        said = ConversationMessage(direction="out", id="0-0", at=now or utcnow(), text=text, status="queued")
        limit = self._config.redis.outbox_maxlen
        entry_id = await self._run(
            "REPLY",
            [self.keys.outbox(ticket.channel), self.keys.ticket(ticket.id), self.keys.history(ticket.id)],
            [
                limit,
                history_json(f"agent:{agent}", "replied", now, text=text),
                self._config.conversations.max_messages,
                said.model_dump_json(exclude_defaults=True),
                *(item for pair in fields.items() for item in pair),
            ],
        )
        if entry_id is None:
            raise ServiceUnavailable(f"the {ticket.channel} outbox is full ({limit} replies wait); try again later")
        return reply_text(entry_id)

    async def record_sent(self, sent: SentReply, group: str, ttl: int) -> Recorded:
        """A reply the peer took (`peer_ids`, one per part) or refused for good (`reason`):
        recorded once, its outbox entry acknowledged and deleted (`SENT`)."""
        keys = self.keys
        state = "failed" if sent.reason is not None else "sent"
        detail = (
            {"reply": sent.reply_id, "reason": sent.reason} if sent.reason is not None else {"reply": sent.reply_id}
        )
        result = await self._run(
            "SENT",
            [
                keys.reply(sent.channel, sent.reply_id),
                keys.ticket(sent.ticket_id),
                keys.history(sent.ticket_id),
                keys.outbox(sent.channel),
                *(keys.receipt(sent.channel, peer_id) for peer_id in sent.peer_ids),
            ],
            [
                group,
                sent.reply_id,
                sent.ticket_id,
                len(sent.peer_ids),
                ttl,
                history_json(f"channel:{sent.channel}", f"page_{state}" if sent.page else state, None, **detail),
                state,
                _reason_suffix(sent.reason),
            ],
        )
        return _recorded(result, sent.ticket_id)

    async def record_receipt(self, channel: str, peer_id: str, delivered: bool, reason: str) -> Recorded:
        """The peer's receipt on one part of a reply (`RECEIPT`); `unknown` when no reply has it."""
        keys = self.keys
        reply_id = await self._redis.get(keys.receipt(channel, peer_id))
        ticket_id = await self._redis.hget(keys.reply(channel, reply_text(reply_id)), "ticket") if reply_id else None
        if reply_id is None or ticket_id is None:
            return Recorded("unknown")
        reply_id, ticket_id = reply_text(reply_id), reply_text(ticket_id)
        outcome = "delivered" if delivered else "failed"
        detail = {"reply": reply_id} if delivered else {"reply": reply_id, "reason": reason}
        result = await self._run(
            "RECEIPT",
            [keys.reply(channel, reply_id), keys.ticket(ticket_id), keys.history(ticket_id)],
            [
                reply_id,
                outcome,
                "" if delivered else _reason_suffix(reason),
                history_json(f"channel:{channel}", outcome, None, **detail),
            ],
        )
        return _recorded(result, ticket_id)

    async def announce_login(self, agent: str, session_id: str) -> None:
        """Tell every gateway process that this login is the agent's newest (older ones close)."""
        await self._redis.publish(self.keys.control, f"login {agent} {session_id}")

    async def tickets_of(self, agent: str) -> list[Ticket]:
        """What an agent holds (offered or claimed), e.g. to resume a seat after a reconnect."""
        ids = sorted(reply_text(item) for item in await self._redis.smembers(self.keys.agent_tickets(agent)))
        tickets = []
        for ticket_id in ids:
            try:
                ticket = await self.get(ticket_id)
            except NotFound:
                continue
            if ticket.agent == agent and ticket.status in ("offered", "claimed"):
                tickets.append(ticket)
        return tickets

    async def hold_lease(self, agents: Iterable[str], seconds: float) -> None:
        """Agents connected here keep their claims for `seconds` more (refreshed periodically)."""
        agents = list(agents)
        if not agents:
            return
        now_ms = await self._now_ms()
        await self._redis.zadd(self.keys.leases, {agent: now_ms + int(seconds * 1000) for agent in agents})

    async def now(self) -> datetime:
        """Redis's clock (`TIME`): the time every process on every host agrees on."""
        return datetime.fromtimestamp(await self._now_ms() / 1000, UTC)

    async def _now_ms(self) -> int:
        seconds, micros = await self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def reap(self, offer_grace: float = 2.0, batch: int = 200) -> int:
        """Return lapsed offers and the claims of agents whose lease ran out; safe to run anywhere."""
        now_ms = await self._now_ms()
        returned = 0
        cutoff = now_ms - int(offer_grace * 1000)
        expired = await self._redis.zrangebyscore(self.keys.offers, "-inf", cutoff, start=0, num=batch)
        for ticket_id in expired:
            if await self.release(reply_text(ticket_id), "", "offer_timeout"):
                returned += 1
            else:
                await self._redis.zrem(self.keys.offers, reply_text(ticket_id))
        lapsed = await self._redis.zrangebyscore(self.keys.leases, "-inf", now_ms, start=0, num=batch)
        for raw_agent in lapsed:
            agent = reply_text(raw_agent)
            if not await self.take_expired(self.keys.leases, agent):
                continue
            for ticket_id in await self._redis.smembers(self.keys.agent_tickets(agent)):
                if await self.release(reply_text(ticket_id), agent, "agent_gone", "offered,claimed"):
                    returned += 1
        return returned

    async def take_expired(self, zset: str, member: str) -> bool:
        """Remove `member` if its expiry score has passed; True for exactly one of racing callers."""
        return bool(int(await self._run("TAKE_EXPIRED_LEASE", [zset], [member])))

    async def stats(self, day: str | None = None) -> dict[str, QueueStats]:
        """Every queue's counters for `day` (YYYYMMDD; today by default)."""
        raw = await self._redis.hgetall(self.keys.stats(day or _today()))
        counters: dict[str, dict[str, int]] = {q.name: {} for q in self._config.queues}
        for field, value in raw.items():
            queue, _, counter = reply_text(field).rpartition(":")
            counters.setdefault(queue, {})[counter] = int(value)
        names = set(QueueStats.__dataclass_fields__)
        return {queue: QueueStats(**{k: v for k, v in got.items() if k in names}) for queue, got in counters.items()}

    async def waiting(self, queue: str) -> int:
        """Tickets in a queue not yet submitted or abandoned (offered and claimed included)."""
        total = 0
        for priority in range(MAX_PRIORITY + 1):
            total += await self._redis.xlen(self.keys.stream(queue, priority))
        return total

    @staticmethod
    def _raise_for(code: str, ticket_id: str, status: str) -> None:
        if code == "not_found":
            raise NotFound(f"no ticket {ticket_id}")
        detail = f" (it is {status})" if status else ""
        raise Conflict(f"ticket {ticket_id} is not yours to change in this state{detail}")
