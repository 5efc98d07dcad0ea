"""Typed messages between processes: every one round-trips, what cannot be read is refused with
a clear error (never a traceback, never the value), docs/redis-keys.md lists each with its fields,
and what the store and its Lua scripts write in Redis parses as the types say."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from gateway import messages as m
from gateway.config import GatewayConfig
from gateway.queue import TicketQueue
from gateway.ticket import CHANNELS, Citizen, SensitiveAlert, Ticket, TranscriptSegment, new_ticket_id
from gateway.voice.link import VoiceLink
from tests.channels.strategies import conversation_messages
from tests.helpers import queued_ticket, voice_ticket
from tests.redis_typed import raw_entries

DOC = Path(__file__).resolve().parents[1] / "docs" / "redis-keys.md"
CST = timezone(timedelta(hours=8))  # the city's offset: 督办 times are local working days' openings

agents = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
tickets = st.from_regex(r"[0-9A-Za-z]{1,40}", fullmatch=True)
words = st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True)
reasons = st.from_regex(r"[a-z0-9_]{1,64}", fullmatch=True)
seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
segments = st.builds(
    TranscriptSegment,
    speaker=st.sampled_from(["caller", "agent"]),
    text=st.text(max_size=300),
    start=seconds,
    end=seconds,
    confidence=st.floats(min_value=0, max_value=1),
    final=st.booleans(),
)
citizens = st.builds(
    Citizen,
    phone=st.none() | st.from_regex(r"\+?[0-9]{3,20}", fullmatch=True),
    wechat_openid=st.none() | st.text(min_size=1, max_size=100),
    telegram_chat_id=st.none() | st.integers(min_value=-(2**53), max_value=2**53),
    name=st.none() | st.text(max_size=64),
)


@st.composite
def submitted_tickets(draw: st.DrawFn) -> Ticket:
    received = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)))
    return Ticket(
        id=new_ticket_id(received),
        channel=draw(st.sampled_from(CHANNELS)),
        message_id=draw(st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True)),
        citizen=draw(citizens),
        received_at=received,
        text=draw(st.text(max_size=500)),
        queue=draw(st.sampled_from(["general", "housing"])),
        priority=draw(st.integers(min_value=0, max_value=9)),
        status="submitted",
        agent=draw(agents),
        category=draw(st.text(max_size=20)),
    )


sensitive_alerts = st.builds(
    SensitiveAlert,
    word=st.text(min_size=1, max_size=16),
    category=st.sampled_from(["self_harm", "violence", "mass_incident"]),
    severity=st.integers(min_value=1, max_value=3),
    context=st.text(max_size=60),
    source=st.sampled_from(["text", "transcript", "message"]),
    at=st.datetimes(timezones=st.just(UTC)),
)

MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    m.Login: st.builds(m.Login, agents, words),
    m.ScreenPop: st.builds(m.ScreenPop, agents, tickets),
    m.Revoke: st.builds(m.Revoke, agents, tickets, reasons),
    m.CallEnded: st.builds(m.CallEnded, agents, tickets, reasons),
    m.Transcript: st.builds(m.Transcript, tickets, segments),
    m.ConversationNews: st.builds(m.ConversationNews, tickets, agents, conversation_messages),
    m.Alerted: st.builds(
        m.Alerted,
        tickets,
        st.text(min_size=1, max_size=64),
        st.integers(min_value=0, max_value=9),
        st.lists(sensitive_alerts, max_size=3).map(tuple),
    ),
    m.TriageNews: st.builds(
        m.TriageNews,
        tickets,
        st.sampled_from(["triaged", "answered_by_parent"]),
        st.integers(min_value=0, max_value=9),
        st.lists(st.sampled_from(["sensitive", "enterprise", "urgent"]), max_size=3).map(tuple),
        st.just(()),
        st.lists(sensitive_alerts, max_size=2).map(tuple),
        st.just(()),
        st.one_of(st.just(""), tickets),
        st.lists(tickets, max_size=3).map(tuple),
    ),
    m.SurgeWarning: st.builds(
        m.SurgeWarning,
        st.text(min_size=1, max_size=64),
        st.text(min_size=1, max_size=128),
        st.integers(min_value=0, max_value=10_000),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.text(min_size=1, max_size=40),
    ),
    m.Escalated: st.builds(
        m.Escalated,
        tickets,
        st.text(min_size=1, max_size=64),
        st.sampled_from(["contact", "reply", "resolve"]),
        st.sampled_from(["reminder", "report"]),
        st.datetimes(timezones=st.sampled_from([UTC, CST])),
        st.datetimes(timezones=st.sampled_from([UTC, CST])),
    ),
    m.PendingRecording: st.builds(m.PendingRecording, tickets, st.text(min_size=1, max_size=512), reasons),
    m.ConnectAgent: st.builds(
        m.ConnectAgent, tickets, agents, st.from_regex(r"sips?:[\x21-\x7e]{1,200}", fullmatch=True)
    ),
    m.DeadWorker: st.builds(m.DeadWorker, words, st.text(max_size=256)),
    m.Created: st.builds(m.Created, tickets, st.text(min_size=1, max_size=128), st.sampled_from(CHANNELS)),
    m.Reply: st.builds(
        m.Reply, tickets, st.sampled_from(CHANNELS), citizens, st.text(min_size=1, max_size=1000), agents
    ),
    m.Submitted: st.builds(m.Submitted, submitted_tickets()),
}


def test_every_message_has_a_strategy() -> None:
    assert set(MESSAGE_STRATEGIES) == set(m.MESSAGES)


def parsed(message: Any, wire: Any) -> Any:
    """What a receiver reads from `wire`, the way it reads that message (its channel's parser)."""
    if isinstance(message, m.Login | m.ScreenPop | m.Revoke | m.CallEnded):
        return m.parse_control(wire)
    if isinstance(message, m.ConnectAgent):
        return m.parse_worker_command(wire)
    return type(message).parse(wire)


@given(st.one_of(*MESSAGE_STRATEGIES.values()))
def test_every_message_round_trips(message: Any) -> None:
    wire = message.serialize()
    assert parsed(message, wire) == message
    if isinstance(wire, dict):  # a stream entry as redis-py returns it: bytes
        assert parsed(message, {name.encode(): value.encode() for name, value in wire.items()}) == message
    else:
        assert isinstance(wire, bytes) and parsed(message, wire.decode()) == message


def test_the_control_channel_and_inbox_speak_the_previous_releases_words() -> None:
    assert m.Login("1001", "9f3a").serialize() == b"login 1001 9f3a"
    assert m.Revoke("1001", "01KT", "agent_failed_486").serialize() == b"revoke 1001 01KT agent_failed_486"
    assert m.call_event("screen_pop", "1001", "01KT") == m.ScreenPop("1001", "01KT")
    assert m.call_event("call_ended", "1001", "01KT", "worker_died") == m.CallEnded("1001", "01KT", "worker_died")
    connect = m.ConnectAgent("01KT", "1001", "sip:1001@127.0.0.1:5080").serialize()
    assert connect == {"op": "connect", "ticket": "01KT", "agent": "1001", "uri": "sip:1001@127.0.0.1:5080"}
    assert m.Created("01KT", "general", "web").serialize() == {"t": "01KT", "q": "general", "c": "web"}


SECRET = "13812345678"  # a caller's number must not reach a log line through an error message


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"revoke a1 T1", "malformed revoke message: expected 3 words (agent ticket reason)"),
        (f"revoke a1 T1 {SECRET} more".encode(), "malformed revoke message: expected 3 words"),
        (b"revoke a1 T1  caller_hung_up", "malformed revoke message: expected 3 words"),
        (f"revoke a1 T1 has-{SECRET}".encode(), "malformed revoke message: reason: String should match pattern"),
        (f"login {SECRET}@x s1".encode(), "malformed login message: agent: String should match pattern"),
        (b"hangup a1 T1", "unknown control message kind; known: call_ended, login, revoke, screen_pop"),
        (b"", "unknown control message kind"),
        (b"screen_pop a1 T1\xff", "malformed control message: not UTF-8"),
    ],
)
def test_a_control_line_that_cannot_be_read_says_why_without_repeating_it(raw: bytes, says: str) -> None:
    with pytest.raises(m.MalformedMessage) as caught:
        m.parse_control(raw)
    assert caught.value.message.startswith(says) and SECRET not in caught.value.message


def test_json_messages_and_entries_that_cannot_be_read_say_why() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: m.Transcript.parse(b"{"), "malformed transcript: not JSON"),
        (lambda: m.Transcript.parse(b"[1]"), "malformed transcript: not a JSON object"),
        (lambda: m.Transcript.parse(b"[" * 100 + b"]" * 100), "malformed transcript: not JSON"),
        (lambda: m.Transcript.parse(b'{"ticket": "T1"}'), "malformed transcript: segment: Field required"),
        (lambda: m.parse_worker_command({b"op": b"hangup"}), "unknown worker command; known: connect"),
        (lambda: m.parse_worker_command({"op": "connect", "ticket": "T1"}), "malformed connect command: agent"),
        (
            lambda: m.parse_worker_command({"op": "connect", "ticket": "T1", "agent": "a", "uri": "sip:a", "x": "1"}),
            "malformed connect command: x: Unexpected keyword argument",
        ),
        (lambda: m.DeadWorker.parse({b"worker": b"w\xff"}), "malformed DeadWorker entry: not UTF-8"),
        (lambda: m.Reply.parse({"ticket": "T1"}), "malformed Reply entry: channel: Field required"),
    ]
    for parse, says in cases:
        with pytest.raises(m.MalformedMessage) as caught:
            parse()
        assert caught.value.message.startswith(says), caught.value.message


def outcome(parse: Any, raw: Any) -> object:
    """What a receiver gets: the message, or the MalformedMessage it logs (any other exception
    escapes, and fails the test)."""
    try:
        return parse(raw)
    except m.MalformedMessage as exc:
        return exc


@given(st.binary(max_size=200))
def test_any_bytes_are_a_message_or_a_malformed_message(raw: bytes) -> None:
    assert isinstance(outcome(m.parse_control, raw), (*m.CONTROL.values(), m.MalformedMessage))
    assert isinstance(outcome(m.Transcript.parse, raw), m.Transcript | m.MalformedMessage)
    assert isinstance(outcome(m.PendingRecording.parse, raw), m.PendingRecording | m.MalformedMessage)


@given(st.dictionaries(st.binary(max_size=10), st.binary(max_size=30), max_size=6))
def test_any_entry_is_a_command_or_a_malformed_message(fields: dict[bytes, bytes]) -> None:
    assert isinstance(outcome(m.parse_worker_command, fields), m.ConnectAgent | m.MalformedMessage)
    for cls in (m.DeadWorker, m.Created, m.Reply, m.Submitted):
        assert isinstance(outcome(cls.parse, fields), cls | m.MalformedMessage)


def test_what_the_receiver_would_refuse_is_not_sent() -> None:
    with pytest.raises(m.MalformedMessage, match="malformed revoke message"):
        m.Revoke("a1", "T1", "caller hung up").serialize()
    with pytest.raises(m.MalformedMessage, match="malformed connect command: uri"):
        m.ConnectAgent("T1", "a1", "tel:110").serialize()
    with pytest.raises(m.MalformedMessage, match="malformed transcript: ticket"):
        m.Transcript("T-1", TranscriptSegment(text="x", start=0, end=1, confidence=1)).serialize()


def documented_messages(text: str) -> dict[str, list[str]]:
    """The Messages table of docs/redis-keys.md: message -> its fields, in order."""
    section = text.split("\n## Messages\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]* \| ([^|]*) \|", section, flags=re.MULTILINE)
    return {name: re.findall(r"`(\w+)`", fields) for name, fields in rows}


def test_the_document_lists_every_message_with_its_fields() -> None:
    documented = documented_messages(DOC.read_text(encoding="utf-8"))
    declared = {cls.__name__: [field.name for field in dataclasses.fields(cls)] for cls in m.MESSAGES}
    assert documented == declared


async def test_what_the_store_and_its_scripts_write_parses_as_the_types_say(
    redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    queue = TicketQueue(redis_client, config)
    await queue.ensure_groups()
    ticket = queued_ticket("m-typed", citizen=Citizen(phone=SECRET, name="陈先生"), text="路灯不亮")
    await queue.intake(ticket, "client:test")
    offered = await queue.offer("a1", ["general"])
    assert offered is not None and offered.id == ticket.id
    claimed = (await queue.accept(ticket.id, "a1")).ticket()
    await queue.reply(claimed, "a1", "已派人处理")
    await queue.submit(ticket.id, "a1", None)

    ((_, created),) = raw_entries(await redis_client.xrange(queue.keys.created))
    assert m.Created.parse(created) == m.Created(ticket.id, "general", "web")
    ((_, reply),) = raw_entries(await redis_client.xrange(queue.keys.outbox("web")))
    assert m.Reply.parse(reply) == m.Reply(ticket.id, "web", Citizen(phone=SECRET, name="陈先生"), "已派人处理", "a1")
    ((_, submitted),) = raw_entries(await redis_client.xrange(queue.keys.submitted))
    assert m.Submitted.parse(submitted).ticket == await queue.get(ticket.id)


async def test_a_workers_inbox_reads_commands_and_names_the_entries_that_are_none(
    redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    queue = TicketQueue(redis_client, config)
    link = VoiceLink(queue)
    call = voice_ticket("call-typed")
    inbox = link.keys.inbox("w1")
    await redis_client.xadd(inbox, {"op": "connect", "ticket": call.id})  # a release that forgot a field
    await link.connect_agent(call, "a1", "sip:a1@127.0.0.1:5999")
    (first_id, first), (_, second) = await link.read_inbox("w1", "0", 100)
    assert isinstance(first, m.MalformedMessage) and "agent: Field required" in first.message
    assert second == m.ConnectAgent(call.id, "a1", "sip:a1@127.0.0.1:5999")
    assert [command for _, command in await link.read_inbox("w1", first_id, 100)] == [second]
