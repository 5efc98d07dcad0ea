"""The hotline behind Kamailio, with real peers: calls spread over a pool of media workers by call
load, 503 when all are full, 403 for untrusted sources, the bridge to a phone registered at the
front, and a worker killed under load.

Every test runs a real redis-server, the core (seats) in-process, media worker processes and a real
Kamailio rendered from the same typed config. Marked slow; CI runs them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.sipfront.rpc import Target
from gateway.ticket import Ticket
from peers import audio
from peers.sip import Peers, dtmf_scenario, uac_scenario
from tests.helpers import Seat
from tests.sipfront.front_stack import PHONE_PASSWORDS, FrontStack, StackArgs, front_stack
from tests.voice.voice_stack import accepted_then_revoked

pytestmark = pytest.mark.slow



def actions(ticket: Ticket) -> list[str]:
    return [entry.action for entry in ticket.history]


async def _metric(stack: FrontStack, name: str) -> int:
    value = await stack.redis.hget(f"{stack.config.redis.key_prefix}:metrics", name)
    return int(value or 0)


async def test_calls_spread_over_the_workers_by_load_and_the_one_over_capacity_gets_503_from_kamailio(
    stack_args: StackArgs, peers: Peers, sipp_available: None
) -> None:
    async with front_stack(**stack_args, workers=3) as stack:
        scenario = uac_scenario(stack.recordings.parent, audio_pcap=None, pause_ms_before=5000, hold_ms_after=100)
        sipp = await peers.sipp(scenario, target=stack.front, service="12345", calls=7, concurrency=7, rate=20)

        # While the calls are up: each worker holds exactly its 2 callers, by its own count and by Kamailio's.
        def full(targets: dict[str, Target]) -> bool:
            return sum(t.load for t in targets.values()) == 6

        targets = await stack.wait_targets(full, 5, "6 calls up")
        assert sorted(t.load for t in targets.values()) == [2, 2, 2], targets
        info = await stack.wait_for(lambda: _all_callers(stack, 2), 3)
        assert {worker_id: i["callers"] for worker_id, i in info.items()} == {"w1": "2", "w2": "2", "w3": "2"}

        result = await sipp.wait(20)
        assert result.successful == 6, str(result)
        assert dict(result.statuses).get(503) == 1, str(result)
        assert await _metric(stack, "voice.rejected_full") == 0, "the 503 came from Kamailio, not a worker"
        assert await _metric(stack, "voice.calls") == 6
        # Every BYE went through Kamailio (Record-Route) and freed its slot: nothing leaks.
        await stack.wait_targets(lambda t: all(x.load == 0 for x in t.values()), 5, "every load back to 0")


async def _all_callers(stack: FrontStack, n: int) -> dict[str, dict[str, str]] | None:
    info = await stack.worker_info()
    return info if all(i.get("callers") == str(n) for i in info.values()) else None


async def test_invite_from_an_untrusted_address_gets_403_and_no_worker_sees_it(
    stack_args: StackArgs, peers: Peers, sipp_available: None
) -> None:
    # Only 127.0.0.2 may send calls; SIPp calls from 127.0.0.1.
    async with front_stack(**stack_args, trunks=("127.0.0.2/32",)) as stack:
        scenario = uac_scenario(stack.recordings.parent, audio_pcap=None, pause_ms_before=100, hold_ms_after=100)
        sipp = await peers.sipp(scenario, target=stack.front, service="12345", calls=2, concurrency=2, rate=10)
        result = await sipp.wait(15)
        assert dict(result.statuses) == {403: 2}, str(result)
        assert await stack.tickets() == []
        assert await _metric(stack, "voice.calls") == 0 and await _metric(stack, "voice.rejected_full") == 0
        assert all(t.load == 0 for t in (await stack.targets()).values())


async def test_caller_through_the_front_presses_0_and_is_bridged_to_the_registered_phone(
    stack_args: StackArgs, peers: Peers, tone_wav: Path, caller_wav: Path, baresip_available: None
) -> None:
    phones = {"a1": "1001", "boss": "1002"}
    async with front_stack(**stack_args, workers=2, agent_phones=phones) as stack:
        assert stack.config.agents[0].sip_uri == f"sip:1001@{stack.front}"
        phone = await peers.agent(
            tone_wav, user="1001", registrar=stack.front, auth_pass=PHONE_PASSWORDS["1001"], regint=60
        )
        seat = await Seat.connect(stack.bound, "a1")
        caller = await peers.caller(caller_wav, user="13812345678")
        await caller.dial(stack.dial_uri())
        await caller.wait_event("CALL_ESTABLISHED", 5)
        await asyncio.sleep(1.0)  # the greeting is playing
        await caller.send_dtmf("0")

        offer = await seat.expect("offer", 10)
        await seat.send(type="accept", ticket=offer["ticket"]["id"])
        await seat.expect("screen_pop", 15)
        answered = await phone.wait_event("CALL_ESTABLISHED", 10)
        assert answered.peer_uri is not None
        ticket = await stack.ticket_where(lambda t: t.id == offer["ticket"]["id"] and "bridged" in actions(t), 10)
        assert ticket.voice is not None and ticket.voice.worker in stack.workers
        await asyncio.sleep(2.0)  # two seconds of conversation

        await caller.hangup()
        # The caller's BYE reached the worker through Kamailio, and the worker's BYE reached the phone.
        await phone.wait_event("CALL_CLOSED", 10)
        done = await stack.ticket_where(lambda t: t.id == ticket.id and "recordings" in actions(t), 15)
        agent_rec = next(Path(a.path or "") for a in done.attachments if (a.path or "").endswith("-agent.wav"))
        assert abs(audio.dominant_frequency(agent_rec) - 1000) < 20, "the worker heard the agent's phone"
        await phone.close()
        heard = audio.as_audio(phone.dumps()[0].dec)
        assert abs(audio.dominant_frequency(heard) - 440) < 20, "the phone heard the caller"
        await stack.wait_targets(lambda t: all(x.load == 0 for x in t.values()), 5, "every load back to 0")
        await seat.close()

        # A second agent, whose phone registered from another address, takes the next call.
        other = await peers.agent(
            tone_wav, user="1002", registrar=stack.front, auth_pass=PHONE_PASSWORDS["1002"], regint=60, host="127.0.0.2"
        )
        assert stack.rpc is not None
        assert [c for c in await stack.rpc.contacts("1002") if "@127.0.0.2:" in c], await stack.rpc.contacts("1002")
        boss = await Seat.connect(stack.bound, "boss")
        second = await peers.caller(caller_wav, user="13912345678")
        await second.dial(stack.dial_uri())
        await second.wait_event("CALL_ESTABLISHED", 5)
        await asyncio.sleep(1.0)
        await second.send_dtmf("0")
        offer = await boss.expect("offer", 10)
        await boss.send(type="accept", ticket=offer["ticket"]["id"])
        await other.wait_event("CALL_ESTABLISHED", 15)
        bridged = await stack.ticket_where(lambda t: t.id == offer["ticket"]["id"] and "bridged" in actions(t), 10)
        assert bridged.agent == "boss"
        await second.hangup()
        await other.wait_event("CALL_CLOSED", 10)
        await boss.close()


async def test_worker_killed_under_load_is_settled_marked_down_and_new_calls_flow_to_the_others(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    async with front_stack(**stack_args, workers=3) as stack:
        probe = stack.config.sipfront.probe_interval
        fr_timer = stack.config.sipfront.fr_timer
        # Three callers press 0 and wait in the queue, one per worker.
        waiting = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=20000, out_dir=stack.recordings.parent)
        first = await peers.sipp(waiting, target=stack.front, service="12345", calls=3, concurrency=3, rate=10)
        queued = await stack.wait_for(lambda: _tickets(stack, lambda t: t.status == "queued", 3), 15)
        assert Counter(t.voice.worker for t in queued if t.voice) == {"w1": 1, "w2": 1, "w3": 1}

        victim = next(t for t in queued if t.voice and t.voice.worker == "w2")
        victim_sip = stack.worker_sips["w2"]
        assert stack.workers["w2"].process is not None
        killed_at = time.monotonic()
        os.kill(stack.workers["w2"].process.pid, signal.SIGKILL)

        await stack.wait_targets(lambda t: not t[victim_sip].active, probe + fr_timer + 2, "w2 down")
        detected = time.monotonic() - killed_at
        print(f"\nKamailio marked the killed worker down after {detected:.2f} s (probe {probe} s)")
        assert detected <= probe + fr_timer + 1.0

        # The core settles the dead worker's caller: abandoned with its recording, and a callback.
        settled = await stack.ticket_where(lambda t: t.id == victim.id and t.status == "abandoned", 15)
        assert settled.history[-1].detail == {"reason": "worker_died"}
        callback = await stack.ticket_where(lambda t: "callback" in t.flags, 5)
        assert callback.message_id == f"{victim.message_id}-callback"

        # Its caller is not left in silence: the front ends the dialog (BYE to the caller), and the
        # local BYE frees the dead worker's dispatcher load.
        await stack.wait_targets(lambda t: t[victim_sip].load == 0, 5, "the dead worker's load released")

        # New calls keep flowing, to the workers still alive (each has one free slot).
        more = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=1500, out_dir=stack.recordings.parent)
        second = await peers.sipp(more, target=stack.front, service="12345", calls=2, concurrency=2, rate=10)
        result = await second.wait(20)
        assert result.successful == 2, str(result)
        new = await stack.wait_for(lambda: _tickets(stack, lambda t: t.id not in {q.id for q in queued} and
                                                    "callback" not in t.flags, 2), 10)  # fmt: skip
        assert sorted(t.voice.worker for t in new if t.voice) == ["w1", "w3"]

        # The pool restarts the worker: Kamailio's next probe brings it back.
        restarted_at = time.monotonic()
        await stack.start_worker("w2")
        await stack.wait_targets(lambda t: t[victim_sip].active, probe + fr_timer + 2, "w2 up again")
        print(f"marked up {time.monotonic() - restarted_at:.2f} s after the restart began")
        result = await first.wait(30)
        print(result, result.counts)
        # The two callers on live workers hang up themselves; the dead worker's caller got a BYE
        # from the front in the middle of its scenario (SIPp counts it as an unexpected message).
        assert (result.successful, result.failed) == (2, 1), str(result)
        assert result.failure_reasons == {"FailedUnexpectedMessage": 1}, str(result)
        assert "unexpected BYE" in result.errors, result.errors


async def _tickets(stack: FrontStack, check: Callable[[Ticket], bool], n: int) -> list[Ticket] | None:
    found = [t for t in await stack.tickets() if check(t)]
    return found if len(found) >= n else None


async def test_agent_phone_not_registered_gets_480_and_the_caller_goes_back_to_the_queue(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    async with front_stack(**stack_args, agent_phones={"a1": "1001"}) as stack:
        scenario = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=8000, out_dir=stack.recordings.parent)
        sipp = await peers.sipp(scenario, target=stack.front, service="12345")
        seat, ticket_id, revoked = await accepted_then_revoked(stack.bound)
        assert revoked["reason"] == "agent_failed_480", revoked
        ticket = await stack.gateway.queue.get(ticket_id)
        assert ticket.status == "queued" and "requeued" in actions(ticket)
        await sipp.close()
        await seat.close()
