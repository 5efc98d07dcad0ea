"""Whole calls through `CallSession` and `MediaWorker`, on a fake media engine and a real Redis.

The session is a translator: these tests play the caller, the agent's phone and the clock
(`tests/voice/fake_engine.py`) and read what the call leaves in the ticket store, as the core and
the seats would. Fast: no pjsua2, no SIP. The real-pjsua2 tests (`test_worker.py`) carry the same
kinds of calls over SIP and RTP.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import GatewayConfig, parse_config
from gateway.ivr.machine import Phase
from gateway.queue import TicketQueue
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.ticket import Ticket
from gateway.voice.session import CallSession
from gateway.voice.worker import MediaWorker, WorkerSettings
from peers.flows import DEFAULT_FLOW
from peers.gateway_config import make_raw_config
from tests.helpers import queued_ticket
from tests.voice.fake_engine import FakeEngine, FakeLeg, FakeScheduler, fire

AGENT_URI = "sip:1001@127.0.0.1:5080"


@dataclass
class Stack:
    config: GatewayConfig
    queue: TicketQueue
    worker: MediaWorker
    engine: FakeEngine
    redis: aioredis.Redis

    def session(self) -> CallSession:
        [session] = self.worker.sessions.values()
        return session

    async def tickets(self) -> list[Ticket]:
        keys = await self.redis.keys(f"{self.config.redis.key_prefix}:t:*")
        names = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        ids = sorted(name.rsplit(":", 1)[1] for name in names if not name.endswith(":h"))
        return [await self.queue.get(ticket_id) for ticket_id in ids]

    async def the_ticket(self, session: CallSession) -> Ticket:
        assert session.ticket_id is not None, "the call was not queued"
        return await self.queue.get(session.ticket_id)

    def restarted(self) -> MediaWorker:
        """Another worker process on the same settings (and so the same spool)."""
        return MediaWorker(self.config, self.queue, self.worker.settings, FakeEngine, FakeScheduler())


def voice_config(key_prefix: str, redis_url: str, tmp_path: Path, **redis: Any) -> GatewayConfig:
    raw = make_raw_config(key_prefix, redis_url)
    raw["redis"].update(redis)
    raw["voice"] = {
        "enabled": True,
        "flows": [str(DEFAULT_FLOW)],
        "numbers": {"12345": "12345-default"},
        "prompts_dir": str(tmp_path / "prompts"),
        "recordings_dir": str(tmp_path / "recordings"),
        "agent_answer_timeout": 5,
    }
    return parse_config(raw, tmp_path)


async def make_stack(config: GatewayConfig, client: aioredis.Redis) -> Stack:
    queue = TicketQueue(client, config)
    await queue.ensure_groups()
    settings = WorkerSettings.from_config(config, "wfast")
    worker = MediaWorker(config, queue, settings, FakeEngine, FakeScheduler())
    return Stack(config, queue, worker, cast(FakeEngine, worker.engine), client)


@pytest.fixture
async def stack(
    key_prefix: str, redis_client: aioredis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> AsyncIterator[Stack]:
    built = await make_stack(voice_config(key_prefix, redis_server.url, tmp_path), redis_client)
    yield built
    await built.worker.stop()  # calls still up end as at SIGTERM


@pytest.fixture
async def own_stack(own_redis: EmbeddedRedis, key_prefix: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack on a Redis of the test's own, which it may stop and start (commands time out in 5 s)."""
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=5)
    built = await make_stack(voice_config(key_prefix, own_redis.url, tmp_path), client)
    try:
        yield built
    finally:
        await built.worker.stop()
        await client.aclose()


async def zero_pressed_with_redis_gone(stack: Stack, own_redis: EmbeddedRedis) -> tuple[FakeLeg, CallSession]:
    """A caller in the main menu presses 0 just after the stack's Redis stopped."""
    leg, session = await in_the_menu(stack)
    own_redis.stop()
    leg.press("0")
    await session.idle()
    return leg, session


async def in_the_menu(stack: Stack, caller: str = "13812345678") -> tuple[FakeLeg, CallSession]:
    leg = stack.engine.call_in(caller)
    assert leg.answered_with == 200
    session = stack.worker.sessions[next(reversed(stack.worker.sessions))]
    assert stack.engine.finish_prompt(leg) == "greeting"
    assert stack.engine.now_playing(leg) == "main_menu"
    return leg, session


async def queued(stack: Stack) -> tuple[FakeLeg, CallSession]:
    leg, session = await in_the_menu(stack)
    leg.press("0")
    await session.idle()
    return leg, session


async def claimed_by_a1(stack: Stack, session: CallSession) -> str:
    """What the core does when a1's seat accepts the call's offer."""
    offered = await stack.queue.offer("a1", ["general"])
    assert offered is not None and offered.id == session.ticket_id
    await stack.queue.accept(offered.id, "a1")
    return offered.id


async def a1_dialled(stack: Stack) -> tuple[FakeLeg, CallSession, str, FakeLeg]:
    """A queued caller whose ticket a1's seat accepted, and a1's phone dialled for it: the caller's
    leg, the session, the ticket id and the phone's leg."""
    leg, session = await queued(stack)
    ticket_id = await claimed_by_a1(stack, session)
    session.dial_agent(ticket_id, "a1", AGENT_URI)
    [(_, phone)] = stack.engine.dialled
    return leg, session, ticket_id, phone


async def ended(leg: FakeLeg, session: CallSession) -> None:
    """The caller hangs up; the call is settled."""
    leg.far_end_hangs_up()
    await session.settled


def actions(ticket: Ticket) -> list[str]:
    return [entry.action for entry in ticket.history]


# --- the queue ---------------------------------------------------------------------------------------


async def test_a_caller_pressing_0_is_queued_with_the_ticket_the_policy_shapes(stack: Stack) -> None:
    leg, session = await queued(stack)
    ticket = await stack.the_ticket(session)
    assert (ticket.channel, ticket.queue, ticket.priority, ticket.ivr_path) == ("voice", "general", 1, "0")
    assert ticket.citizen.phone == "13812345678" and ticket.message_id == session.call_id
    assert ticket.voice is not None and (ticket.voice.worker, ticket.voice.called) == ("wfast", "12345")
    assert ticket.attachments[0].path == str(session.recording_files["caller"])
    assert actions(ticket) == ["queued"]
    assert stack.engine.now_playing(leg) == "hold"
    await ended(leg, session)
    abandoned = await stack.the_ticket(session)
    assert abandoned.status == "abandoned" and abandoned.history[-2].detail == {"reason": "caller_hung_up"}
    assert "recordings" in actions(abandoned) and abandoned.attachments[0].seconds == 1.0


async def test_a_caller_named_by_a_sip_name_has_no_phone_on_the_ticket(stack: Stack) -> None:
    leg = stack.engine.call_in(caller="alice")
    session = stack.session()
    stack.engine.finish_prompt(leg)
    leg.press("0")
    await session.idle()
    assert (await stack.the_ticket(session)).citizen.phone is None


async def test_a_full_queue_sends_the_caller_to_the_overflow_message_at_once(
    key_prefix: str, redis_client: aioredis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    stack = await make_stack(voice_config(key_prefix, redis_server.url, tmp_path, max_queue_length=1), redis_client)
    await stack.queue.intake(queued_ticket("web-1", priority=1), "test")  # general:1 now holds its one ticket
    leg, session = await queued(stack)
    assert stack.engine.now_playing(leg) == "overflow", "no hold music: the overflow at once"
    assert session.machine.refused == "queue_full" and session.ticket_id is None
    assert not [name for name in session.timers if name.startswith("queue.")], "no wait for max_wait_seconds"
    assert stack.engine.finish_prompt(leg) == "overflow"
    assert stack.engine.recording("message") is not None, "the caller leaves a message"
    await ended(leg, session)
    [_, callback] = await stack.tickets()
    assert callback.message_id == session.call_id, "the call's one ticket: under its own id"
    assert "callback" in callback.flags and callback.notes == "回拨原因: voice_message"
    assert (callback.queue, callback.priority) == ("general", 0)
    assert [Path(a.path or "").name for a in callback.attachments] == [
        f"{session.call_id}.wav",
        f"{session.call_id}-message.wav",
    ]
    await stack.worker.stop()


async def test_the_max_wait_overflows_the_ticket_and_a_recorder_that_fails_moves_the_call_on(stack: Stack) -> None:
    leg, session = await queued(stack)
    fire(session.timers, "queue.max_wait")
    assert stack.engine.now_playing(leg) == "overflow"
    stack.engine.refuse_recording = True  # the message's recorder will not start (a full disk, say)
    stack.engine.finish_prompt(leg)
    await session.idle()  # RecordingFinished comes on the next loop turn
    assert session.machine.node_id == "bye" and stack.engine.now_playing(leg) == "goodbye"
    stack.engine.finish_prompt(leg)
    assert leg.hung_up_with == 200, "the flow ends the call"
    await session.settled
    ticket = await stack.the_ticket(session)
    assert ticket.status == "abandoned" and ticket.history[1].detail == {"reason": "overflow"}
    assert [t.id for t in await stack.tickets()] == [ticket.id], "no message left: no callback"


async def test_position_announcements_come_from_the_queue(stack: Stack) -> None:
    await stack.queue.intake(queued_ticket("web-1", priority=1), "test")
    leg, session = await queued(stack)
    fire(session.timers, "queue.position")
    await session.idle()
    player = stack.engine.playing(leg)
    assert player is not None and player.path.name == "position_1.wav", "您前面还有1位"


# --- the agent leg -----------------------------------------------------------------------------------


async def test_an_agent_phone_that_rings_out_is_dropped_and_the_ticket_requeued_ahead(stack: Stack) -> None:
    leg, session = await queued(stack)
    ticket_id = await claimed_by_a1(stack, session)
    entry_before = await stack.redis.hget(f"{stack.config.redis.key_prefix}:t:{ticket_id}", "entry")
    session.dial_agent(ticket_id, "a1", AGENT_URI)
    [(uri, phone)] = stack.engine.dialled
    assert uri == AGENT_URI and stack.engine.now_playing(leg) == "hold"
    phone.ring()
    fire(session.timers, "agent.ring")  # agent_answer_timeout
    assert phone.hung_up_with is not None, "the worker cancels the ringing"
    await session.idle()  # the phone's end (487 to our CANCEL) comes on the next loop turn
    await session.idle()
    ticket = await stack.queue.get(ticket_id)
    requeued = [entry for entry in ticket.history if entry.action == "requeued"]
    assert ticket.status == "queued" and requeued[-1].detail["reason"] == "agent_no_answer"
    assert "agent_ringing" in actions(ticket) and "agent_dialled" in actions(ticket)
    assert await stack.redis.hget(f"{stack.config.redis.key_prefix}:t:{ticket_id}", "entry") == entry_before
    assert session.machine.state is Phase.QUEUED
    await ended(leg, session)


async def test_an_agent_phone_refusing_the_call_requeues_with_its_status(stack: Stack) -> None:
    leg, session, ticket_id, phone = await a1_dialled(stack)
    phone.refuse(486)
    await session.idle()
    ticket = await stack.queue.get(ticket_id)
    assert ticket.status == "queued" and ticket.history[-1].detail["reason"] == "agent_failed_486"
    session.dial_agent("01OTHERTICKET", "boss", AGENT_URI)  # another call's: not this one's to ring
    assert len(stack.engine.dialled) == 1
    await ended(leg, session)


async def test_the_agent_answers_talks_hangs_up_and_the_caller_rates(stack: Stack) -> None:
    leg, session, ticket_id, phone = await a1_dialled(stack)
    phone.ring()
    phone.pick_up()
    assert (leg.media, phone.media) in stack.engine.connections and (phone.media, leg.media) in stack.engine.connections
    assert stack.engine.recording("agent") is not None and stack.engine.playing(leg) is None
    phone.far_end_hangs_up()
    assert stack.engine.now_playing(leg) == "survey"
    leg.press("1")
    assert stack.engine.finish_prompt(leg) == "thanks"
    await session.settled
    ticket = await stack.queue.get(ticket_id)
    history = actions(ticket)
    assert history.index("agent_ringing") < history.index("agent_answered") < history.index("bridged")
    assert ticket.satisfaction == "satisfied" and ticket.status == "claimed"
    assert [Path(a.path or "").name for a in ticket.attachments] == [
        f"{session.call_id}.wav",
        f"{session.call_id}-agent.wav",
    ]
    assert session.machine.outcome == "completed"


async def test_the_caller_hanging_up_while_the_phone_rings_drops_it_and_abandons(stack: Stack) -> None:
    leg, session, ticket_id, phone = await a1_dialled(stack)
    await ended(leg, session)
    assert phone.hung_up_with is not None
    ticket = await stack.queue.get(ticket_id)
    assert ticket.status == "abandoned" and ticket.history[-2].detail == {"reason": "caller_hung_up"}


# --- Redis out of reach ------------------------------------------------------------------------------


async def test_redis_stopped_mid_call_the_caller_hears_the_apology_and_ends_up_as_one_ticket(
    own_stack: Stack, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    stack = own_stack
    leg, session = await zero_pressed_with_redis_gone(stack, own_redis)
    assert session.machine.refused == "unavailable" and session.ticket_id is None
    assert stack.engine.now_playing(leg) == "unavailable", "the apology"
    stack.engine.finish_prompt(leg)
    assert stack.engine.recording("message") is not None, "then the caller leaves a message"
    await ended(leg, session)
    [entry] = stack.worker.spool.entries()
    assert entry.parent == tmp_path / "recordings" / "spool"

    own_redis.start()  # the same data: what Redis had before stays
    assert await stack.worker.file_spool() == 1
    assert stack.worker.spool.entries() == []
    [ticket] = await stack.tickets()
    assert ticket.message_id == session.call_id and "callback" in ticket.flags
    assert ticket.notes == "回拨原因: voice_message" and ticket.citizen.phone == "13812345678"
    assert Path(ticket.attachments[-1].path or "").name == f"{session.call_id}-message.wav"


async def test_a_restarted_worker_files_the_spool_once_even_when_the_store_already_had_it(
    own_stack: Stack, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    stack = own_stack
    leg, session = await zero_pressed_with_redis_gone(stack, own_redis)
    assert stack.engine.now_playing(leg) == "unavailable"
    await ended(leg, session)  # hung up during the apology: no message, still a callback
    [entry] = stack.worker.spool.entries()
    kept = tmp_path / "entry-copy.json"
    shutil.copy(entry, kept)
    own_redis.start()
    assert await stack.restarted().file_spool() == 1
    # A worker that died between the store's answer and deleting the entry files it again.
    shutil.copy(kept, entry)
    assert await stack.restarted().file_spool() == 1
    [ticket] = await stack.tickets()
    assert ticket.message_id == session.call_id and ticket.notes == "回拨原因: store_unavailable"
    assert stack.worker.spool.entries() == []


async def test_a_worker_that_loses_redis_drains_then_stops_and_spools_the_waiting_callers_message(
    stack: Stack,
) -> None:
    leg, session = await queued(stack)
    worker = stack.worker
    lost = RedisConnectionError("Connection refused")
    start = worker.lifeline.last_ok
    assert not worker.judge_beat(lost, start + 1.0)
    assert not worker.judge_beat(lost, start + worker.settings.worker_timeout)  # the bound: drain
    assert worker.lifeline.draining
    assert stack.engine.now_playing(leg) == "unavailable", "a waiting caller hears the apology"
    refused = stack.engine.call_in(caller="13900001111")
    assert refused.hung_up_with == 503 and len(worker.sessions) == 1, "no new calls while draining"
    stack.engine.finish_prompt(leg)
    await ended(leg, session)  # the message is left: the caller is not cut off
    assert len(worker.spool.entries()) == 1, "what Redis could not take waits on disk"
    assert worker.judge_beat(lost, start + worker.settings.worker_timeout + 1.0), "no callers left: stop"
    assert worker.must_stop.is_set() and worker.exit_status == 1


async def test_a_draining_worker_hangs_up_at_its_bound(stack: Stack) -> None:
    await in_the_menu(stack)
    worker = stack.worker
    lost = RedisConnectionError("Connection refused")
    start = worker.lifeline.last_ok
    worker.judge_beat(lost, start + worker.settings.worker_timeout)
    assert not worker.must_stop.is_set(), "a caller in the menu may still finish"
    limit = start + worker.settings.worker_timeout + worker.settings.drain_seconds
    assert worker.judge_beat(lost, limit) and worker.exit_status == 1
    assert worker.settings.drain_seconds == 120 + 60, "the longest voice message and its prompts"


# --- settings ----------------------------------------------------------------------------------------


def test_worker_and_engine_settings_are_the_configs(
    key_prefix: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    config = voice_config(key_prefix, redis_server.url, tmp_path)
    settings = WorkerSettings.from_config(config, "w1", "127.0.0.1:5071")
    voice = config.voice
    engine = settings.engine
    assert (engine.host, engine.port) == ("127.0.0.1", 5071)
    assert (engine.max_calls, engine.poll_interval, engine.idle_poll_interval) == (
        voice.calls_per_worker,
        voice.poll_interval,
        voice.idle_poll_interval,
    )
    assert (engine.rtp_port, engine.rtp_port_range) == voice.rtp_ports(5071)
    assert (engine.native_live_audio, engine.media_poll_ms) == (voice.native_live_audio, voice.media_poll_ms)
    assert (settings.agent_answer_timeout, settings.worker_timeout) == (
        voice.agent_answer_timeout,
        voice.worker_timeout,
    )
    assert settings.spool_dir == config.resolve(voice.recordings_dir) / "spool"
