"""Agent seats over websockets: authentication, the per-seat session, and the dispatcher.

The websocket layer only translates: frames in -> queue operations; queue results -> frames out.
Each seat has a bounded send queue drained by its own writer task, so a slow seat fills its own
queue and is disconnected (close 4009); it never stalls the dispatcher or other seats. A seat's
own requests never fill it: its next frame is read only once the writer has caught up, so a seat
that sends faster than it reads is slowed by TCP, not closed.

Connections that have not logged in yet wait in a bounded room of their own (in all and per source
address), apart from the seats counted against `max_connections`; see `displaced_by_newcomer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway import messages
from gateway.channels.followup_desk import FollowupDesk
from gateway.config import AgentConfig, GatewayConfig, LiveConfig
from gateway.errors import Conflict, GatewayError, InvalidRequest, PeerError, ServiceUnavailable
from gateway.queue import RawTicket, TicketQueue
from gateway.shell.tasks import Tasks
from gateway.ticket import Ticket, apply_edits, mask_phone, utcnow
from gateway.voice.link import VoiceLink
from gateway.web import console
from gateway.web import seat_protocol as proto
from gateway.web.journal import AwaySeats, Lanes, Replay, SeatJournal, after, journaled, seq_of

log = logging.getLogger("gateway.seats")

Displace = Literal["nobody", "oldest_of_address", "oldest"]


@dataclass(frozen=True, slots=True)
class PendingLimits:
    total: int
    per_address: int


def displaced_by_newcomer(waiting: int, waiting_from_address: int, limits: PendingLimits) -> Displace:
    """Which connection waiting for its hello makes room for a new one (nobody is refused).

    When the newcomer's address already has its share waiting, that address's own oldest goes;
    else, when the room is full, the oldest of any address goes. A real login sends its hello at
    once and leaves the room, so it always gets in, while idle sockets stay bounded and one address
    can only ever push out its own.
    """
    if waiting_from_address >= limits.per_address:
        return "oldest_of_address"
    if waiting >= limits.total:
        return "oldest"
    return "nobody"


class WaitingRoom:
    """The connections waiting for their hello, in arrival order, in all and by address."""

    def __init__(self, limits: PendingLimits) -> None:
        self.limits = limits
        self._all: dict[ServerConnection, str] = {}
        self._by_address: dict[str, dict[ServerConnection, None]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def enter(self, ws: ServerConnection, address: str) -> ServerConnection | None:
        """Admit `ws`; returns the connection it displaced (for the caller to close), if any."""
        same_address = self._by_address.get(address, {})
        rule = displaced_by_newcomer(len(self._all), len(same_address), self.limits)
        displaced = None
        if rule == "oldest_of_address":
            displaced = next(iter(same_address))
        elif rule == "oldest":
            displaced = next(iter(self._all))
        if displaced is not None:
            self.leave(displaced)
        self._all[ws] = address
        self._by_address.setdefault(address, {})[ws] = None
        return displaced

    def leave(self, ws: ServerConnection) -> None:
        address = self._all.pop(ws, None)
        if address is None:
            return
        same_address = self._by_address[address]
        del same_address[ws]
        if not same_address:
            del self._by_address[address]


@dataclass(eq=False)
class SeatSession:
    """One connected seat: what it holds and its outgoing frames."""

    agent: AgentConfig
    session_id: str
    queues: list[str]
    outbox: asyncio.Queue[str]
    state: proto.AgentState
    close: Callable[[int, str], None]
    offers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    claimed: set[str] = field(default_factory=set)
    queue_of: dict[str, str] = field(default_factory=dict)  # claimed ticket -> its queue
    last_queue: str = ""  # the queue of the ticket submitted last
    before_wrap_up: proto.AgentState = "ready"  # where after-call work returns to
    wrap_up_timer: asyncio.TimerHandle | None = None
    idle_since: float = 0.0
    not_before: float = 0.0
    closed: bool = False
    # Until its welcome is sent, news for the seat waits here (the welcome's `missed` may hold it).
    welcomed: bool = False
    held_back: list[proto.ServerFrame] = field(default_factory=list)

    def send(self, frame: proto.ServerFrame) -> None:
        if self.closed:
            return
        try:
            self.outbox.put_nowait(frame.serialize())
        except asyncio.QueueFull:
            log.warning("seat %s is too slow; disconnecting it", self.agent.id)
            self.closed = True
            self.close(proto.CLOSE_TOO_SLOW, "too slow: send queue full")

    def holds(self, ticket_id: str) -> bool:
        """Offered to this seat or claimed by it."""
        return ticket_id in self.offers or ticket_id in self.claimed

    def can_take_offer(self, now: float, offers_per_agent: int) -> bool:
        held = len(self.offers) + len(self.claimed)
        return (
            not self.closed
            and self.state == "ready"
            and now >= self.not_before
            and len(self.offers) < offers_per_agent
            and held < self.agent.max_concurrent
        )


class Dispatcher:
    """Matches this process's ready seats with waiting tickets; Redis arbitrates between processes."""

    def __init__(self, queue: TicketQueue, config: GatewayConfig | LiveConfig, tasks: Tasks) -> None:
        self._queue = queue
        self._live = LiveConfig.of(config)
        self._tasks = tasks
        self.sessions: dict[str, SeatSession] = {}
        self._wake = asyncio.Event()

    @property
    def _config(self) -> GatewayConfig:
        """The config now (read at each use: a swapped config takes effect without a restart)."""
        return self._live.current

    def wake(self) -> None:
        self._wake.set()

    async def run(self, poll_interval: float = 1.0) -> None:
        """Dispatch whenever woken (intake, a seat turning ready) and at least every poll_interval."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_interval)
            self._wake.clear()
            try:
                await self.dispatch_once()
            except ServiceUnavailable:
                log.warning("redis unavailable; dispatch retries in %.1fs", poll_interval)
            cooling = [s.not_before for s in self.sessions.values() if s.not_before > loop.time()]
            if cooling:
                loop.call_at(min(cooling), self.wake)

    async def dispatch_once(self) -> int:
        """Offer tickets to every eligible seat until a round finds nothing more to offer.

        The seats of one round ask Redis concurrently (longest idle first in sending order); the
        offer script itself makes sure no two of them, or of any other process, get one ticket.
        """
        loop = asyncio.get_running_loop()
        offered = 0
        while True:
            limit = self._config.seats.offers_per_agent
            eligible = sorted(
                (s for s in self.sessions.values() if s.can_take_offer(loop.time(), limit)),
                key=lambda s: s.idle_since,
            )
            if not eligible:
                return offered
            tickets = await asyncio.gather(*(self._queue.offer(s.agent.id, s.queues) for s in eligible))
            delivered = 0
            for session, ticket in zip(eligible, tickets, strict=True):
                if ticket is not None:
                    await self._deliver(session, ticket)
                    delivered += 1
            if not delivered:
                return offered
            offered += delivered

    async def _deliver(self, session: SeatSession, ticket: RawTicket) -> None:
        loop = asyncio.get_running_loop()
        if session.closed or session.state != "ready":
            # The seat left or changed state while Redis was choosing: give the ticket back.
            await self._queue.release(ticket.id, session.agent.id, "agent_unavailable")
            return
        timeout = self._config.seats.offer_timeout
        session.offers[ticket.id] = loop.call_later(timeout, self._on_offer_timeout, session, ticket.id)
        session.send(proto.Offer(ticket.data, timeout))
        if ticket.is_voice:
            # The core's step of a call, for following it through the run log beside the worker's.
            log.info(
                "voice ticket %s offered to seat %s (caller %s)",
                ticket.id,
                session.agent.id,
                mask_phone(caller_of(ticket.data)),
            )

    def _on_offer_timeout(self, session: SeatSession, ticket_id: str) -> None:
        """Redirect on no answer: the seat is set away (before the ticket is back in the queue, so
        the dispatcher cannot hand it straight back) until it says ready again."""
        if session.offers.pop(ticket_id, None) is None:
            return
        session.state = "away"
        self._tasks.spawn(self._missed_offer(session, ticket_id))

    async def _missed_offer(self, session: SeatSession, ticket_id: str) -> None:
        await self._queue.release(ticket_id, session.agent.id, "no_answer")
        session.send(proto.OfferRevoked(ticket_id, "no_answer"))
        session.send(proto.StateFrame("away", "missed_offer"))

    async def release_offers(self, session: SeatSession, reason: str) -> None:
        for ticket_id, timer in list(session.offers.items()):
            timer.cancel()
            session.offers.pop(ticket_id, None)
            try:
                await self._queue.release(ticket_id, session.agent.id, reason)
            except ServiceUnavailable:
                log.warning("could not release offer %s now; the reaper will", ticket_id)


class SeatServer:
    """The websocket handler: one coroutine per connected seat."""

    def __init__(
        self, config: GatewayConfig | LiveConfig, queue: TicketQueue, dispatcher: Dispatcher, tasks: Tasks
    ) -> None:
        self._live = LiveConfig.of(config)
        config = self._live.current
        self._queue = queue
        self._voice = VoiceLink(queue)
        self._followups = FollowupDesk(queue)
        self._catalogue = console.CatalogueCache()  # the submit check's category ids, per config
        self._dispatcher = dispatcher
        self._tasks = tasks
        self._journal = SeatJournal(queue)
        self._away = AwaySeats()  # seats of this process that dropped within reconnect_grace
        # Each agent's news, journaled and sent in order; as many wait as its journal keeps.
        self._lanes = Lanes(tasks.spawn, self._journal_and_send, config.seats.journal_length)
        # Connections that have not sent their hello yet, bounded apart from the seats.
        self._waiting = WaitingRoom(
            PendingLimits(config.seats.max_pending_logins, config.seats.max_pending_logins_per_address)
        )
        self._seats = 0  # logged-in connections, counted against seats.max_connections
        self._handlers: dict[type[Any], Callable[[SeatSession, Any], Coroutine[Any, Any, None]]] = {
            proto.SetState: self._on_state,
            proto.Accept: self._on_accept,
            proto.Decline: self._on_decline,
            proto.Update: self._on_update,
            proto.Submit: self._on_submit,
            proto.Reply: self._on_reply,
            proto.ConfirmMerge: self._on_confirm_merge,
            proto.Split: self._on_split,
            proto.Ping: self._on_ping,
            proto.Hello: self._on_second_hello,
        }

    @property
    def _config(self) -> GatewayConfig:
        """The config now (read at each use: a swapped config takes effect without a restart)."""
        return self._live.current

    async def handle(self, ws: ServerConnection) -> None:
        login = await self._wait_for_login(ws)
        if login is None:
            return
        agent, hello = login
        if self._seats >= self._config.seats.max_connections and agent.id not in self._dispatcher.sessions:
            await ws.close(proto.CLOSE_TRY_LATER, "too many seats connected")
            return
        self._seats += 1
        try:
            session = await self._open_session(ws, agent, hello)
            await self._serve(ws, session)
        finally:
            self._seats -= 1

    async def _wait_for_login(self, ws: ServerConnection) -> tuple[AgentConfig, proto.Hello] | None:
        """Wait in the waiting room for the hello, then authenticate it."""
        address = str(ws.remote_address[0]) if ws.remote_address else "-"
        displaced = self._waiting.enter(ws, address)
        if displaced is not None:
            self._tasks.spawn(displaced.close(proto.CLOSE_AUTH_TIMEOUT, "authentication timeout: others are waiting"))
        try:
            raw = await asyncio.wait_for(ws.recv(decode=False), self._config.seats.auth_timeout)
        except TimeoutError:
            await ws.close(proto.CLOSE_AUTH_TIMEOUT, "authentication timeout: send hello first")
            return None
        except ConnectionClosed:
            return None
        finally:
            self._waiting.leave(ws)
        return await self._authenticate(ws, raw)

    async def _authenticate(self, ws: ServerConnection, raw: bytes) -> tuple[AgentConfig, proto.Hello] | None:
        frame = None
        if proto.frame_bytes(raw) <= self._config.seats.max_frame_bytes:
            with contextlib.suppress(PeerError):
                frame = proto.parse_client_frame(raw)
        if not isinstance(frame, proto.Hello):
            await ws.close(proto.CLOSE_AUTH_FAILED, "authentication failed")
            return None
        if console.origin_refused(self._config, ws.request.headers.get("Origin") if ws.request else None):
            log.info("seat connection from a page of another origin refused")
            await ws.close(proto.CLOSE_AUTH_FAILED, "authentication failed")
            return None
        agent = self._config.agent(frame.agent)
        # The agent's token, else a console seat ticket (gateway/web/console.py), timed alike.
        valid = await console.seat_login_valid(self._queue.redis, self._queue.keys, agent, frame.agent, frame.token)
        if agent is None or not valid:
            log.info("seat authentication failed from %s", ws.remote_address)
            await ws.close(proto.CLOSE_AUTH_FAILED, "authentication failed")
            return None
        if frame.v != proto.PROTOCOL_VERSION:
            await ws.close(
                proto.CLOSE_BAD_VERSION,
                f"unsupported protocol version; this server speaks v{proto.PROTOCOL_VERSION}",
            )
            return None
        return agent, frame

    async def _open_session(self, ws: ServerConnection, agent: AgentConfig, hello: proto.Hello) -> SeatSession:
        loop = asyncio.get_running_loop()
        queues = [q.name for q in self._config.queues_for_skills(agent.skills)]

        def close(code: int, reason: str) -> None:
            self._tasks.spawn(ws.close(code, reason))

        session = SeatSession(
            agent=agent,
            session_id=secrets.token_hex(8),
            queues=queues,
            outbox=asyncio.Queue(self._config.seats.send_queue),
            state=hello.state,
            close=close,
            idle_since=loop.time(),
        )
        previous = self._dispatcher.sessions.get(agent.id)
        if previous is not None:
            await self.replace(previous)
        await self._queue.announce_login(agent.id, session.session_id)
        await self._queue.hold_lease([agent.id], self._config.seats.reconnect_grace)
        resumed = [t for t in await self._queue.tickets_of(agent.id) if t.status == "claimed"]
        session.claimed.update(t.id for t in resumed)
        self._away.back(agent.id)
        self._dispatcher.sessions[agent.id] = session
        replay = await self._replay(agent.id, hello.since)
        resumed_json = tuple(proto.ticket_json(ticket) for ticket in resumed)
        welcome = proto.Welcome(
            proto.PROTOCOL_VERSION,
            agent.id,
            agent.name,
            tuple(queues),
            session.session_id,
            session.state,
            resumed_json,
            self._config.deadlines.yellow_share,
            replay.seq,
            replay.missed,
            replay.gap,
        )
        session.send(welcome)
        session.welcomed = True
        for frame in session.held_back:  # what came while the welcome was made, unless it is in `missed`
            seq = getattr(frame, "seq", "")
            if not seq or after(seq, replay.seq):
                session.send(frame)
        session.held_back.clear()
        # Eight hex characters name the session well enough in a log; the whole id (16 random hex
        # characters) now and then begins with eleven digits, which reads as a mobile number.
        log.info("seat %s connected (session %s, %d resumed)", agent.id, session.session_id[:8], len(resumed))
        self._dispatcher.wake()
        return session

    async def _replay(self, agent: str, since: str | None) -> Replay:
        """What the returning seat missed (see gateway/web/journal.py); with the journal unreadable
        the login goes on, and says it could not replay (`gap`)."""
        try:
            return await self._journal.since(agent, since)
        except ServiceUnavailable:
            log.warning("seat %s: its journal could not be read; nothing replayed", agent)
            return Replay((), since or "", since is not None)

    def _tell(self, agent: str, frame: proto.ServerFrame) -> None:
        """News for `agent`'s seat about a ticket it holds (connected, or away within its grace):
        journaled when it is, then sent with its position, in the order it came."""
        self._lanes.push(agent, frame)

    async def _journal_and_send(self, agent: str, frames: list[proto.ServerFrame]) -> None:
        kept = [index for index, frame in enumerate(frames) if journaled(frame)]
        if kept:
            try:
                positions = await self._journal.append(agent, [frames[index] for index in kept])
            except ServiceUnavailable:
                log.warning("seat %s: news sent without a journal position (the journal is unavailable)", agent)
            else:
                for index, seq in zip(kept, positions, strict=True):
                    frames[index] = seq_of(frames[index], seq)
        session = self._dispatcher.sessions.get(agent)
        if session is None:
            return  # away: journaled is all (a partial transcript it misses is replaced by the final)
        for frame in frames:
            if session.welcomed:
                session.send(frame)
            else:
                session.held_back.append(frame)

    def away_holding(self, ticket_id: str) -> list[str]:
        return self._away.holding(ticket_id, asyncio.get_running_loop().time())

    async def replace(self, old: SeatSession) -> None:
        """A newer login of the same agent wins; the old connection is closed."""
        old.closed = True
        old.close(proto.CLOSE_REPLACED, "replaced by a newer login of this agent")
        if self._dispatcher.sessions.get(old.agent.id) is old:
            del self._dispatcher.sessions[old.agent.id]
        await self._dispatcher.release_offers(old, "agent_replaced")

    def on_call_event(self, event: messages.CallEvent) -> None:
        """A media worker's news about a voice ticket this process's seat may hold."""
        session = self._dispatcher.sessions.get(event.agent)
        if session is None:
            if not isinstance(event, messages.ScreenPop) and event.agent in self.away_holding(event.ticket):
                frame = proto.Revoked if isinstance(event, messages.Revoke) else proto.CallEnded
                self._tell(event.agent, frame(event.ticket, event.reason))
            return
        if isinstance(event, messages.ScreenPop):
            self._tasks.spawn(self._screen_pop(session, event.ticket))
        elif isinstance(event, messages.Revoke):
            timer = session.offers.pop(event.ticket, None)
            if timer is not None:
                timer.cancel()
            session.claimed.discard(event.ticket)
            session.queue_of.pop(event.ticket, None)
            self._tell(session.agent.id, proto.Revoked(event.ticket, event.reason))
            if event.reason.startswith("agent_"):
                # Redirect on no answer: the phone did not pick up, so this seat is not really ready.
                session.state = "away"
                session.send(proto.StateFrame("away", event.reason))
            self._dispatcher.wake()
        else:
            self._tell(session.agent.id, proto.CallEnded(event.ticket, event.reason))

    def on_news(self, data: bytes | str) -> None:
        """A conversation's news about a ticket a seat here holds (offered or claimed)."""
        news = _parsed(messages.ConversationNews, data)
        if news is None:
            return
        session = self._dispatcher.sessions.get(news.agent)
        held = session.holds(news.ticket) if session else news.agent in self.away_holding(news.ticket)
        if not held:
            return  # not held here: the ticket has it when it is next sent
        said = news.message
        if said.direction == "in":
            self._tell(news.agent, proto.MessageFrame(news.ticket, said))
        elif said.status is not None:
            self._tell(news.agent, proto.Delivery(news.ticket, said.id, said.status, said.reason))

    def on_triage_news(self, data: bytes | str) -> None:
        """What triage decided about a ticket a seat here holds (a `triaged` frame, and an `alert`
        frame when it found sensitive words), or that its 主单's answer closed it (`revoked`)."""
        news = _parsed(messages.TriageNews, data)
        if news is None:
            return
        holders = [s for s in self._dispatcher.sessions.values() if s.holds(news.ticket)]
        for session in holders:
            if news.kind == "answered_by_parent":
                self._closed_under_seat(session, news.ticket, news.kind)
        agents = [s.agent.id for s in holders] + self.away_holding(news.ticket)
        for agent in agents:
            if news.kind == "answered_by_parent":
                if agent not in self._dispatcher.sessions:
                    self._tell(agent, proto.Revoked(news.ticket, news.kind))
                continue
            self._tell(agent, proto.TriagedFrame.of(news))
            if news.alerts:
                self._tell(agent, proto.AlertFrame(news.ticket, news.priority, news.alerts))

    def on_escalation(self, data: bytes | str) -> None:
        """A 督办 event just sent for a ticket a seat here holds (or held when it dropped)."""
        event = _parsed(messages.Escalated, data)
        if event is None:
            return
        holders = [s.agent.id for s in self._dispatcher.sessions.values() if s.holds(event.ticket)]
        frame = proto.EscalatedFrame(event.ticket, event.clock, event.kind, event.due.isoformat())
        for agent in holders + self.away_holding(event.ticket):
            self._tell(agent, frame)

    def _closed_under_seat(self, session: SeatSession, ticket_id: str, reason: str) -> None:
        """A ticket the seat held was closed by someone else: it no longer holds it, and is told."""
        timer = session.offers.pop(ticket_id, None)
        if timer is not None:
            timer.cancel()
        session.claimed.discard(ticket_id)
        session.queue_of.pop(ticket_id, None)
        self._tell(session.agent.id, proto.Revoked(ticket_id, reason))
        self._dispatcher.wake()

    def on_transcript(self, data: bytes | str) -> None:
        """Live speech of a caller whose ticket a seat here holds (offered or claimed)."""
        message = _parsed(messages.Transcript, data)
        if message is None:
            return
        holders = [s.agent.id for s in self._dispatcher.sessions.values() if s.holds(message.ticket)]
        for agent in holders + self.away_holding(message.ticket):
            self._tell(agent, proto.Transcript(message.ticket, message.segment))

    async def _screen_pop(self, session: SeatSession, ticket_id: str) -> None:
        session.send(proto.ScreenPop(proto.ticket_json(await self._queue.get(ticket_id))))

    def kick(self, agent_id: str, session_id: str) -> None:
        """Another process took this agent's login: close ours if it is an older one."""
        session = self._dispatcher.sessions.get(agent_id)
        if session is not None and session.session_id != session_id:
            self._tasks.spawn(self.replace(session))
        elif session is None:
            self._away.back(agent_id)  # its seat is back, on another process: that one journals now

    async def _serve(self, ws: ServerConnection, session: SeatSession) -> None:
        writer = asyncio.create_task(self._write(ws, session))
        try:
            while True:
                await self._on_message(session, await ws.recv(decode=False))
                await self._catch_up(session, writer)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            await self._disconnect(session)

    @staticmethod
    async def _catch_up(session: SeatSession, writer: asyncio.Task[None]) -> None:
        """Back-pressure: past half a send queue of unsent frames, read nothing more from this seat
        until the writer has sent them (or died). Handlers that never yield (ping) would otherwise
        fill the queue from a seat's pipelined requests before the writer ever ran."""
        if session.outbox.qsize() <= session.outbox.maxsize // 2:
            return
        drained = asyncio.ensure_future(session.outbox.join())
        try:
            await asyncio.wait({drained, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()

    async def _write(self, ws: ServerConnection, session: SeatSession) -> None:
        try:
            while True:
                frame = await session.outbox.get()
                try:
                    await ws.send(frame)
                finally:
                    session.outbox.task_done()
        except ConnectionClosed:
            session.closed = True

    async def _disconnect(self, session: SeatSession) -> None:
        session.closed = True
        if self._dispatcher.sessions.get(session.agent.id) is session:
            del self._dispatcher.sessions[session.agent.id]
            grace = self._config.seats.reconnect_grace
            self._away.left(session.agent.id, session.claimed, asyncio.get_running_loop().time() + grace)
            # Claims survive a short disconnect: the lease runs `reconnect_grace` from now.
            try:
                await self._queue.hold_lease([session.agent.id], self._config.seats.reconnect_grace)
            except ServiceUnavailable:
                log.warning("could not extend the lease of %s", session.agent.id)
        await self._dispatcher.release_offers(session, "agent_disconnected")
        log.info("seat %s disconnected", session.agent.id)

    async def _on_message(self, session: SeatSession, message: str | bytes) -> None:
        limit = self._config.seats.max_frame_bytes
        if proto.frame_bytes(message) > limit:
            session.send(proto.ErrorFrame("too_large", f"frame larger than {limit} bytes", None))
            return
        re = None
        try:
            data = proto.decode(message)
            re = proto.request_id(data)
            frame = proto.frame_of(data)
            await self._handlers[type(frame)](session, frame)
        except GatewayError as exc:
            session.send(proto.ErrorFrame(exc.code, exc.message, re, exc.fields))
        except Exception:
            # Fail closed for this frame only; the seat stays connected, the peer sees no internals.
            log.exception("seat %s: frame failed", session.agent.id)
            session.send(proto.ErrorFrame("internal", "internal error; the frame was not applied", re))

    async def _on_second_hello(self, session: SeatSession, frame: proto.Hello) -> None:
        session.send(proto.ErrorFrame("invalid", "already authenticated", frame.id))

    async def _on_state(self, session: SeatSession, frame: proto.SetState) -> None:
        if session.wrap_up_timer is not None:
            session.wrap_up_timer.cancel()
            session.wrap_up_timer = None
        if frame.state == "wrap_up" and session.state != "wrap_up":
            session.before_wrap_up = session.state
            limit = wrap_up_limit(self._config, session.queues, session.last_queue)
            if limit:
                loop = asyncio.get_running_loop()
                session.wrap_up_timer = loop.call_later(limit, self._wrap_up_over, session)
        session.state = frame.state
        if frame.state == "ready":
            session.idle_since = asyncio.get_running_loop().time()
            self._dispatcher.wake()
        session.send(proto.Ack(frame.id, state=frame.state))

    def _wrap_up_over(self, session: SeatSession) -> None:
        """After-call work ran out its time: back to the state before it, and the seat told why."""
        session.wrap_up_timer = None
        if session.closed or session.state != "wrap_up":
            return
        session.state = session.before_wrap_up
        if session.state == "ready":
            session.idle_since = asyncio.get_running_loop().time()
            self._dispatcher.wake()
        session.send(proto.StateFrame(session.state, "wrap_up_ended"))

    async def _refuse(self, ticket_id: str, why: str) -> NoReturn:
        """A ticket this seat may not change: `not_found` when there is no such ticket at all."""
        await self._queue.get(ticket_id)  # raises NotFound
        raise_conflict(ticket_id, why)

    async def _on_accept(self, session: SeatSession, frame: proto.Accept) -> None:
        timer = session.offers.get(frame.ticket)
        if timer is None:
            await self._refuse(frame.ticket, "no live offer of this ticket")
        claimed = await self._queue.accept(frame.ticket, session.agent.id)
        timer.cancel()
        session.offers.pop(frame.ticket, None)
        session.claimed.add(frame.ticket)
        session.queue_of[frame.ticket] = str(claimed.data.get("queue", ""))
        session.send(proto.Ack(frame.id, ticket=frame.ticket, status="claimed"))
        session.send(proto.TicketFrame(claimed.data))
        if claimed.is_voice:
            await self._connect_call(session, claimed.ticket())
        self._dispatcher.wake()

    async def _connect_call(self, session: SeatSession, ticket: Ticket) -> None:
        """A voice ticket: the worker holding the caller now rings this agent's phone."""
        if session.agent.sip_uri is None:
            session.claimed.discard(ticket.id)
            session.queue_of.pop(ticket.id, None)
            await self._queue.release(ticket.id, session.agent.id, "agent_has_no_phone", "claimed")
            raise Conflict("this seat has no phone (agents.sip_uri); the call went back to the queue")
        await self._voice.connect_agent(ticket, session.agent.id, session.agent.sip_uri)

    async def _on_decline(self, session: SeatSession, frame: proto.Decline) -> None:
        timer = session.offers.pop(frame.ticket, None)
        if timer is None:
            await self._refuse(frame.ticket, "no live offer of this ticket")
        timer.cancel()
        # Let other seats see the ticket before this one is offered anything again (set before the
        # ticket is back in the queue, so the dispatcher cannot hand it straight back).
        session.not_before = asyncio.get_running_loop().time() + self._config.seats.decline_cooldown
        await self._queue.release(frame.ticket, session.agent.id, "declined")
        session.send(proto.Ack(frame.id, ticket=frame.ticket, status="declined"))

    async def _claimed_ticket(self, session: SeatSession, ticket_id: str) -> Ticket:
        if ticket_id not in session.claimed:
            await self._refuse(ticket_id, "you have not claimed this ticket")
        return await self._queue.get(ticket_id)

    async def _on_update(self, session: SeatSession, frame: proto.Update) -> None:
        ticket = edited(await self._claimed_ticket(session, frame.ticket), frame.fields)
        await self._queue.update(ticket, session.agent.id, frame.fields.keys())
        session.send(proto.Ack(frame.id, ticket=frame.ticket))
        session.send(proto.TicketFrame(proto.ticket_json(await self._queue.get(frame.ticket))))

    async def _on_submit(self, session: SeatSession, frame: proto.Submit) -> None:
        if frame.ticket not in session.claimed:
            await self._refuse(frame.ticket, "you have not claimed this ticket")
        final: Ticket | None = None
        catalogue = self._catalogue.ids(self._config)
        if catalogue:
            # A dispatch catalogue is configured: the ticket's category after these edits must be
            # one of it; refused (nothing changed) otherwise.
            final = edited(await self._queue.get_document(frame.ticket), frame.fields)
            proto.check_category(final.category, catalogue)
        if final is not None or not await self._submit_as_stored(frame, session.agent.id):
            # Last edits, or an answer for the citizen (its 回访 goes out with the question): the
            # ticket's document is read (not its history) and planned.
            final = final or edited(await self._queue.get_document(frame.ticket), frame.fields)
            plan = self._followups.plan(final)
            await self._queue.submit(frame.ticket, session.agent.id, final if frame.fields else None, plan)
        session.claimed.discard(frame.ticket)
        session.last_queue = session.queue_of.pop(frame.ticket, session.last_queue)
        session.idle_since = asyncio.get_running_loop().time()
        session.send(proto.Ack(frame.id, ticket=frame.ticket, status="submitted"))
        self._dispatcher.wake()

    async def _submit_as_stored(self, frame: proto.Submit, agent: str) -> bool:
        """Most submits carry no last edits and no answer: Redis closes and publishes the ticket as
        stored in one step, without it being read here. False: it was not (edits, or an answer)."""
        if frame.fields:
            return False
        if not self._followups.enabled:
            await self._queue.submit(frame.ticket, agent)
            return True
        return await self._queue.submit_unless_answered(frame.ticket, agent)

    async def _merged_child(self, session: SeatSession, child_id: str) -> None:
        """A 子单 the seat may decide about: it holds the 子单 or its 主单."""
        child = await self._queue.get(child_id)
        if not child.parent:
            raise_conflict(child_id, "not a 子单 of any 主单")
        if not (session.holds(child_id) or session.holds(child.parent)):
            raise_conflict(child_id, "you hold neither this 子单 nor its 主单")

    async def _on_confirm_merge(self, session: SeatSession, frame: proto.ConfirmMerge) -> None:
        await self._merged_child(session, frame.ticket)
        await self._queue.confirm_merge(frame.ticket, session.agent.id)
        session.send(proto.Ack(frame.id, ticket=frame.ticket, status="merge_confirmed"))

    async def _on_split(self, session: SeatSession, frame: proto.Split) -> None:
        await self._merged_child(session, frame.ticket)
        await self._queue.split(frame.ticket, session.agent.id)
        session.send(proto.Ack(frame.id, ticket=frame.ticket, status="split"))

    async def _on_reply(self, session: SeatSession, frame: proto.Reply) -> None:
        ticket = await self._claimed_ticket(session, frame.ticket)
        entry = await self._queue.reply(ticket, session.agent.id, frame.text)
        session.send(proto.Ack(frame.id, ticket=frame.ticket, outbox=entry))

    async def _on_ping(self, session: SeatSession, frame: proto.Ping) -> None:
        session.send(proto.Pong(frame.id, utcnow().isoformat()))


def edited(ticket: Ticket, fields: dict[str, Any]) -> Ticket:
    """The ticket with an agent's edits; what is wrong is told by field, in the protocol's names."""
    if not fields:
        return ticket
    proto.check_editable(fields)
    try:
        return apply_edits(ticket, fields)
    except ValidationError as exc:
        raise InvalidRequest("cannot apply these edits", proto.edit_errors(exc)) from None


def wrap_up_limit(config: GatewayConfig, queues: list[str], last_queue: str) -> float:
    """How long after-call work may last (0: no limit): the limit of the queue whose ticket the
    agent submitted last, else the longest of the seat's queues' (it may be wrapping up any)."""
    limits = {queue.name: queue.wrap_up_limit for queue in config.queues}
    if last_queue in limits:
        return limits[last_queue]
    mine = [limits[name] for name in queues if name in limits]
    return 0.0 if not mine or 0.0 in mine else max(mine)


P = TypeVar("P", messages.ConversationNews, messages.Transcript, messages.TriageNews, messages.Escalated)


def _parsed(kind: type[P], data: bytes | str) -> P | None:
    """A Pub/Sub message for the seats, or None when it cannot be read (logged in one line)."""
    try:
        return kind.parse(data)
    except messages.MalformedMessage as exc:
        log.warning("%s; dropped", exc.message)
        return None


def caller_of(ticket: dict[str, Any]) -> str:
    """A stored voice ticket's caller: the citizen's phone, else the caller id the call came with."""
    citizen = ticket.get("citizen") or {}
    return str(citizen.get("phone") or (ticket.get("voice") or {}).get("caller") or "")


def raise_conflict(ticket_id: str, why: str) -> NoReturn:
    raise Conflict(f"ticket {ticket_id}: {why}")
