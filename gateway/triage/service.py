"""The triage consumer (issue #15, item 1): suggests each new ticket's categories beside intake.

Intake appends every new ticket to `hg:created` in the script that stores it and waits for
nothing more. This service reads that stream with the consumer group `triage`: each gateway
process with `[triage] enabled` is one consumer, and Redis gives each entry to one of them. For
each ticket it suggests the dispatch categories from its text (and transcript, when there is one)
and amends the ticket once: `suggestions` and a history line (`triage`, `triaged`) in one write;
then it acknowledges the entries it handled.

Exactly once in effect: a consumer that stops between the amend and the acknowledgement leaves the
entry pending, and another consumer (or itself) takes it over once it has been idle `claim_idle`
seconds. The amend is guarded: a ticket whose history already says it was triaged is not written
again (the check and the write are one optimistic transaction), so a repeat is acknowledged and
nothing is duplicated.

主单 + 子单 (item 5, `gateway/triage/merge.py`): before the amend, the ticket's bucket (its category
at its street) and its citizen's tickets are read; the amend's transaction then links it under
the most similar open 主单 (MERGE: both tickets' links and history lines), or puts it in its
bucket, and records its citizen's other open tickets as `related`. The `triaged` guard covers the
link: a repeat writes nothing. On `hg:submitted` (the group `triage-labels`), a 主单 submitted with
an answer has each open 子单 submitted with that answer by the system, each citizen sent it on
their own channel as an agent's submit would (`FollowupDesk.plan`, SETTLE); a 子单 answered before
is not answered again, so a consumer that stops half way leaves the rest to the one that takes
the entry over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from gateway.channels.followup_desk import FollowupDesk
from gateway.config import GatewayConfig, LiveConfig
from gateway.errors import Conflict, NotFound, ServiceUnavailable
from gateway.keys import process_id, reply_text
from gateway.messages import Alerted, SurgeWarning, TriageNews
from gateway.queue import TicketQueue
from gateway.queue.store import MergePlan
from gateway.shell.tasks import stop_if_cancelled
from gateway.ticket import SensitiveAlert, Ticket, identities, utcnow
from gateway.triage.assess import (
    ACTION,
    ACTOR,
    REASSESSED,
    AlreadyTriaged,
    Triager,
    assess,
    reassess,
    ticket_text,
    was_triaged,
)
from gateway.triage.catalogue import LABELLED, load_catalogue, load_examples
from gateway.triage.deadlines import clocks_of, next_escalation, resolve_clock
from gateway.triage.dispatch import train
from gateway.triage.escalate import Escalator
from gateway.triage.merge import (
    OPEN,
    Candidate,
    Gazetteer,
    categories_of,
    category_of,
    category_weights,
    is_street,
    lane_keys,
    lanes,
    merge_target,
    related,
    signature,
)
from gateway.triage.paging import pages
from gateway.triage.sensitive import SensitiveMatcher
from gateway.triage.surge import is_surge, usual

log = logging.getLogger("gateway.triage")

GROUP = "triage"
LABELS_GROUP = "triage-labels"  # on hg:submitted
SAID_GROUP = "triage-said"  # on hg:said
RETRY_AFTER = 1.0  # s: a read or write that found Redis away is tried again after this
# Tickets one consumer triages at once (their round trips to Redis overlap; more raise throughput
# a little and each ticket's latency a lot: 16 gave 443/s at p99 53 ms, 4 gives 377/s at 14 ms); tickets that could
# merge with each other or share a citizen wait for one another (`merge.lanes`).
PARALLEL = 4
ALERTS_MAXLEN = 10_000  # `hg:alerts`: the supervisors' recent alerts (MAXLEN ~)
SURGES_MAXLEN = 1_000  # `hg:surges`: the supervisors' recent surge warnings (MAXLEN ~)


def build_triager(config: GatewayConfig) -> Triager:
    """What triage decides with: the dispatch model trained from the configured catalogue and
    labelled contacts (`ConfigError` naming the file when one cannot be read), the sensitive
    words, the deadline calendar and the flags' priorities."""
    settings = config.triage
    categories = load_catalogue(config.resolve(settings.catalogue))
    examples = load_examples(config.resolve(settings.examples) if settings.examples else LABELLED, categories)
    sensitive = config.sensitive
    return Triager(
        model=train(categories, examples),
        matcher=SensitiveMatcher(
            sensitive.words, context_chars=sensitive.context_chars, max_matches=sensitive.max_matches
        ),
        categories={category.id: category for category in categories},
        calendar=config.deadlines.calendar,
        flag_priority=dict(config.routing.flag_priority),
        flag_queue=dict(config.routing.flag_queue),
        merge=settings.merge,
        gazetteer=Gazetteer(settings.merge.districts),
    )


Entries = list[tuple[str, dict[str, str]]]  # (entry id, fields) of a stream's entries
Handler = Callable[[Entries], Awaitable[None]]


class Triage:
    """One consumer of the group `triage` on `hg:created` (`run`: its supervised loop) and of the
    group `triage-labels` on `hg:submitted` (`learn`: the agents' final categories recorded as
    labelled contacts, item 3 of the issue); and the 督办 loop (`escalate`: gateway/triage/escalate.py)."""

    def __init__(self, live: LiveConfig, queue: TicketQueue, triager: Triager, name: str | None = None) -> None:
        self._live = live
        self._queue = queue
        self._redis = queue.redis
        self._keys = queue.keys
        self._triager = triager
        self._known = frozenset(triager.categories)
        self.name = name or process_id()
        self.handled = 0  # entries acknowledged: triaged, found triaged before, or with nothing to do
        self.triaged = 0
        self.repeats = 0
        self.labelled = 0  # submitted tickets recorded as labelled contacts
        self.answered = 0  # 子单 answered with their 主单
        self._followups = FollowupDesk(queue)
        # 2-grams weigh by how particular they are to one category; one never seen weighs most.
        self._measure = category_weights(triager.model)
        self._progress = asyncio.Condition()
        self.escalator = Escalator(live, queue)

    @property
    def config(self) -> GatewayConfig:
        return self._live.current

    async def run(self) -> None:
        await self._consume(self._keys.created, GROUP, self.handle)

    async def learn(self) -> None:
        await self._consume(self._keys.submitted, LABELS_GROUP, self.on_submitted)

    async def listen(self) -> None:
        """What citizens say after triage (`hg:said`): scanned again for sensitive words."""
        await self._consume(self._keys.said, SAID_GROUP, self.on_said)

    async def escalate(self) -> None:
        await self.escalator.run()

    async def _consume(self, stream: str, group: str, handle: Handler) -> None:
        await self.ensure_group(stream, group)
        swept = float("-inf")
        while True:
            try:
                if time.monotonic() - swept >= self.config.triage.claim_every:
                    await self.claim_orphans(stream, group, handle)
                    swept = time.monotonic()
                entries = await self.read_new(stream, group)
                stop_if_cancelled()  # redis-py may swallow a cancellation that lands in the blocking read
                await handle(entries)
            except (ServiceUnavailable, RedisError, OSError):
                stop_if_cancelled()  # or turn it into a connection error
                log.warning("triage: redis unavailable; what was read stays pending and is read again")
                await asyncio.sleep(RETRY_AFTER)

    async def ensure_group(self, stream: str | None = None, group: str = GROUP) -> None:
        """The group, from the stream's start: a first triage reads what the stream kept (bounded
        by its MAXLEN), so nothing written before the group existed is missed."""
        try:
            await self._redis.xgroup_create(stream or self._keys.created, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, stream: str | None = None, group: str = GROUP) -> Entries:
        """Entries never delivered to the group, blocking for at most half of the command timeout
        (a longer block would end as a failed command)."""
        block = int(min(1.0, self.config.redis.command_timeout / 2) * 1000)
        reply: Any = await self._redis.xreadgroup(
            group, self.name, {stream or self._keys.created: ">"}, count=self.config.triage.batch, block=max(block, 1)
        )
        return [_entry(entry_id, fields) for _, found in reply or [] for entry_id, fields in found]

    async def claim_orphans(self, stream: str | None = None, group: str = GROUP, handle: Handler | None = None) -> int:
        """Take over and handle the entries other consumers left pending `claim_idle` seconds."""
        settings = self.config.triage
        start, claimed = "0-0", 0
        while True:
            reply: Any = await self._redis.xautoclaim(
                stream or self._keys.created,
                group,
                self.name,
                int(settings.claim_idle * 1000),
                start_id=start,
                count=settings.batch,
            )
            # An entry trimmed from the stream since is claimed without fields: nothing to do.
            entries = [_entry(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
            await (handle or self.handle)(entries)
            claimed += len(entries)
            start = reply_text(reply[0])
            if start == "0-0":
                return claimed

    async def handle(self, entries: Entries) -> None:
        """Triage each entry's ticket, then acknowledge them all (a ticket the store could not
        reach raises before the acknowledgement: every entry of the batch is read again)."""
        if not entries:
            return
        gate = asyncio.Semaphore(PARALLEL)

        async def run(lane: list[str]) -> None:
            async with gate:
                for ticket_id in lane:
                    await self.triage(ticket_id)

        ids = [fields.get("t", "") for _, fields in entries]
        failed = [
            outcome
            for outcome in await asyncio.gather(*(run(lane) for lane in await self._lanes(ids)), return_exceptions=True)
            if isinstance(outcome, BaseException)
        ]
        if failed:  # every lane ran to its end or its failure; the batch is read again
            raise failed[0]
        await self.acknowledge([entry_id for entry_id, _ in entries])

    async def _lanes(self, ids: list[str]) -> list[list[str]]:
        """The batch in lanes to run at the same time (`merge.lanes`): one ticket each when merging
        is off; else tickets of one citizen or one street in one lane, read for that in one round."""
        if not self._triager.merge.enabled:
            return [[ticket_id] for ticket_id in ids]
        documents = await self._queue.documents(ids)
        gazetteer = self._triager.gazetteer
        return lanes(
            [
                (ticket_id, lane_keys(ticket, ticket_text(ticket), gazetteer) if ticket else ())
                for ticket_id, ticket in zip(ids, documents, strict=True)
            ]
        )

    async def triage(self, ticket_id: str) -> None:
        try:
            now = utcnow()
            decided = _Decided()

            async def prepare(ticket: Ticket) -> None:  # the ticket as read under the amend's WATCH
                assessed = assess(ticket, self._triager, now)
                decided.plan, linked = await self._merge_plan(assessed)
                decided.ticket = assessed.model_copy(update={"related": linked}) if linked else assessed

            def change(_: Ticket) -> Ticket:
                assert decided.ticket is not None  # prepare ran first
                return decided.ticket

            def also(pipe: Any, changed: Ticket) -> None:
                self._announce(pipe, changed)
                if decided.plan is not None:
                    self._queue.merge(pipe, ticket_id, decided.plan)

            triaged = await self._queue.amend(ticket_id, change, ACTOR, ACTION, also, prepare)
            self.triaged += 1
            await self._tell_seat(triaged, decided.plan.parent if decided.plan else "")
            await self._count_surge(triaged)
            if triaged.alerts:  # categories and severity only: the words quote the citizen
                worst = max(alert.severity for alert in triaged.alerts)
                found = ",".join(sorted({alert.category for alert in triaged.alerts}))
                log.warning("triage: ticket %s has sensitive words (%s, severity %d)", ticket_id, found, worst)
        except AlreadyTriaged:
            self.repeats += 1
        except NotFound:
            log.info("triage: ticket %s is gone; skipped", ticket_id)
        except Conflict as exc:  # it kept changing under twenty tries: an agent's edits come first
            log.warning("triage: %s; left without suggestions", exc.message)

    async def on_said(self, entries: Entries) -> None:
        """Each ticket the citizen said more on, scanned again (once a batch however many
        segments came), then the entries acknowledged."""
        if not entries:
            return
        for ticket_id in dict.fromkeys(fields.get("t", "") for _, fields in entries):
            await self.reassess(ticket_id)
        await self._redis.xack(self._keys.said, SAID_GROUP, *[entry_id for entry_id, _ in entries])
        await self._progressed(len(entries))

    async def reassess(self, ticket_id: str) -> bool:
        """The sensitive words in what the citizen said since the ticket was triaged (a threat
        spoken while the call is up): new alerts amended in, with their flags and priority, the
        seat and the supervisors told, the supervisors paged at the top severity. False when there
        was nothing new (nothing written), or the ticket is not triaged yet (its triage reads it
        all) or gone. Amended under WATCH: two consumers never add the same alert twice."""
        now = utcnow()
        found = _Reassessed()

        async def prepare(ticket: Ticket) -> None:
            if not was_triaged(ticket):
                raise _NothingNew
            outcome = reassess(ticket, self._triager, now)
            if outcome is None:
                raise _NothingNew
            found.ticket, found.alerts = outcome

        def change(_: Ticket) -> Ticket:
            assert found.ticket is not None  # prepare ran first
            return found.ticket

        try:
            amended = await self._queue.amend(
                ticket_id, change, ACTOR, REASSESSED, lambda pipe, t: self._announce(pipe, t, found.alerts), prepare
            )
        except (_NothingNew, NotFound):
            return False
        except Conflict as exc:
            log.warning("triage: %s; new alerts not recorded", exc.message)
            return False
        await self._tell_seat(amended, "")
        worst = max(alert.severity for alert in found.alerts)
        log.warning("triage: ticket %s: sensitive words in what was said since (severity %d)", ticket_id, worst)
        return True

    async def _merge_plan(self, ticket: Ticket) -> tuple[MergePlan | None, tuple[str, ...]]:
        """What the amend's MERGE does with `ticket` (None: merging is off) and its citizen's other
        open tickets (一人多诉), from its bucket and its citizen's tickets as they are now."""
        settings = self._triager.merge
        if not settings.enabled:
            return None, ()
        street = is_street(ticket.place)
        own = signature(ticket_text(ticket), self._triager.gazetteer)
        looked = categories_of(ticket) if street and own else ()
        filed = category_of(ticket)
        bucket = self._keys.merge_bucket(filed, ticket.place) if street and filed else ""
        citizens = tuple(self._keys.citizen_tickets(identity) for identity in identities(ticket))
        since = ticket.received_at - timedelta(seconds=settings.window)
        buckets = [self._keys.merge_bucket(category, ticket.place) for category in looked]
        found, theirs = await self._queue.merge_lookup(
            buckets, citizens, since, settings.max_bucket, ticket.received_at, settings.max_citizen
        )
        measure = self._measure
        candidates = [
            Candidate(ticket_id, category, ticket.place, sig, at, status, parent)
            for category, members in zip(looked, found, strict=True)
            for ticket_id, sig, at, status, parent in members
        ]
        target = merge_target(ticket, own, candidates, settings, measure)
        plan = MergePlan(
            parent=target[0] if target else "",
            similarity=target[1] if target else 0.0,
            bucket=bucket,
            signature=own,
            received_at=ticket.received_at,
            window=settings.window,
            max_children=settings.max_children,
            max_bucket=settings.max_bucket,
        )
        linked = related(ticket.id, theirs, settings.max_related)
        return plan, linked

    async def on_submitted(self, entries: Entries) -> None:
        """Each submitted 主单 with an answer has its open 子单 answered (`answer_children`); then
        the agents' final categories are recorded (`record_labels`, which acknowledges)."""
        for _, fields in entries:
            try:
                ticket = Ticket.from_json(fields.get("ticket", ""))
            except ValidationError:
                continue  # `record_labels` logs it
            if ticket.children and ticket.answer and ticket.status == "submitted":
                await self.answer_children(ticket)
        await self.record_labels(entries)

    async def answer_children(self, parent: Ticket) -> int:
        """Submit each open 子单 of `parent` with its answer, each citizen sent it on their own
        channel (see the module); how many were answered now."""
        answered = 0
        for child_id in parent.children:
            try:
                child = await self._queue.get_document(child_id)
            except NotFound:
                continue
            if child.parent != parent.id or child.status not in OPEN:
                continue
            final = child.model_copy(update={"answer": parent.answer, "category": child.category or parent.category})
            if await self._queue.answer_child(final, parent, self._followups.plan(final)):
                answered += 1
                await self._redis.publish(
                    self._keys.triage_news, TriageNews(child_id, "answered_by_parent").serialize()
                )
        if answered:
            log.info("triage: ticket %s answered %d of its 子单", parent.id, answered)
        self.answered += answered
        return answered

    async def _count_surge(self, ticket: Ticket) -> None:
        """Count the ticket into its category x place; warn the supervisors once per window when
        that is a surge (集中爆发). Counted after the amend: a crash in between misses one count of a
        statistic, never a ticket (a repeat counts nothing twice)."""
        settings = self.config.triage.surge
        category = category_of(ticket)
        if not (settings.enabled and category and ticket.place):
            return
        recent, before = await self._queue.count_surge(
            category, ticket.place, ticket.id, ticket.received_at, settings.window, settings.baseline
        )
        if not is_surge(recent, before, settings):
            return
        warning = SurgeWarning(
            category, ticket.place, recent, round(usual(before, settings), 2), ticket.received_at.isoformat()
        )
        if await self._queue.warn_surge(
            category, ticket.place, settings.window, {"m": warning.serialize().decode()}, SURGES_MAXLEN
        ):
            log.warning(
                "triage: surge of %s at %s: %d in the window (usually %.1f)",
                category,
                ticket.place,
                recent,
                warning.usual,
            )

    async def _tell_seat(self, ticket: Ticket, proposed: str) -> None:
        """What triage decided, for the seat that may hold the ticket by now (Pub/Sub: a seat that
        misses it reads the same on the ticket); its 主单 as the MERGE script left it."""
        parent = reply_text(await self._redis.hget(self._keys.ticket(ticket.id), "parent") or "") if proposed else ""
        await self._redis.publish(self._keys.triage_news, TriageNews.of(ticket, parent).serialize())

    def _announce(self, pipe: Any, ticket: Ticket, new: tuple[SensitiveAlert, ...] | None = None) -> None:
        """In the amend's transaction: an open ticket's clocks watched (`_watch`; a reassessment,
        `new` its alerts, leaves them as the triage set them), the alerts found, for the
        supervisors (a stream, kept), and the pages they owe (`paging`)."""
        alerts = ticket.alerts if new is None else new
        if new is None and ticket.status in OPEN:
            self._watch(pipe, ticket)
        if not alerts:
            return
        news = Alerted(ticket.id, ticket.queue, ticket.priority, alerts).serialize()
        pipe.xadd(self._keys.alerts, {"m": news}, maxlen=ALERTS_MAXLEN, approximate=True)
        # At the top severity, the supervisors' phones at once. Not refused at the outbox's bound
        # as a reply is: a page is rare, and the one thing that must not wait.
        for page in pages(ticket, self.config.triage.paging, alerts):
            pipe.xadd(self._keys.outbox(page.channel), page.serialize())

    def _watch(self, pipe: Any, ticket: Ticket) -> None:
        """The ticket on the red/yellow list by when its resolve clock turns yellow (the wallboard
        lists those past it), and scheduled for the 督办 loop by when its first escalation could
        fall due (gateway/triage/escalate.py); closing the ticket takes it off both (SETTLE)."""
        resolve = resolve_clock(ticket)
        if resolve is not None:
            share = self.config.deadlines.yellow_share
            yellow_at = ticket.received_at + (resolve.due - ticket.received_at) * share
            pipe.zadd(self._keys.clocks, {ticket.id: int(yellow_at.timestamp() * 1000)})
        first = next_escalation(clocks_of(ticket), self.config.deadlines.calendar)
        if first is not None:
            pipe.zadd(self._keys.escalate, {ticket.id: int(first.timestamp() * 1000)})

    async def acknowledge(self, entry_ids: list[str]) -> None:
        await self._redis.xack(self._keys.created, GROUP, *entry_ids)
        await self._progressed(len(entry_ids))

    async def _progressed(self, count: int) -> None:
        async with self._progress:
            self.handled += count
            self._progress.notify_all()

    async def handled_at_least(self, count: int) -> None:
        """Wait until this consumer has acknowledged `count` entries (of either stream)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.handled >= count)

    async def record_labels(self, entries: Entries) -> None:
        """Each submitted ticket the agent filed under a catalogue category becomes a labelled
        contact on `triage_labels` (bounded); the appends and the acknowledgement are one
        transaction, so a ticket is recorded once however often its entry is read."""
        if not entries:
            return
        labels = [label for _, fields in entries if (label := self._label(fields.get("ticket", ""))) is not None]
        async with self._redis.pipeline(transaction=True) as pipe:
            for label in labels:
                pipe.xadd(self._keys.triage_labels, label, maxlen=self.config.triage.labels_maxlen, approximate=True)
            pipe.xack(self._keys.submitted, LABELS_GROUP, *[entry_id for entry_id, _ in entries])
            await pipe.execute()
        self.labelled += len(labels)
        await self._progressed(len(entries))

    def _label(self, document: str) -> dict[Any, Any] | None:
        """The labelled contact of a submitted ticket: id, the agent's category, the text and what
        triage had suggested first; None when the category is not the catalogue's or nothing was said."""
        try:
            ticket = Ticket.from_json(document)
        except ValidationError:
            log.warning("triage: a submitted entry is not a ticket; not recorded")
            return None
        text = ticket_text(ticket)
        if ticket.category not in self._known or not text:
            return None
        suggested = ticket.suggestions[0].category if ticket.suggestions else ""
        return {"t": ticket.id, "category": ticket.category, "text": text, "suggested": suggested}


class _NothingNew(Exception):
    """A reassessment found nothing to write (raised under the amend's WATCH, before its MULTI)."""


@dataclass
class _Reassessed:
    """What one reassessment found under the amend's WATCH: the ticket after, the new alerts."""

    ticket: Ticket | None = None
    alerts: tuple[SensitiveAlert, ...] = ()


@dataclass
class _Decided:
    """What one triage attempt decided under the amend's WATCH: the ticket after, its merge."""

    ticket: Ticket | None = None
    plan: MergePlan | None = None


def _entry(entry_id: Any, fields: Any) -> tuple[str, dict[str, str]]:
    """(entry id, fields as text) of a stream entry."""
    found = fields if isinstance(fields, dict) else {}
    return reply_text(entry_id), {reply_text(name): reply_text(value) for name, value in found.items()}
