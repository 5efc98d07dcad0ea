"""The media worker with real SIP peers: baresip callers and agent phones, SIPp with RFC 2833 DTMF.

Every test runs a real redis-server, the core (seats) in-process and `hotline-gateway media-worker`
as a child process. Marked slow; CI runs them.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.asr.navigation import find_keyword
from gateway.asr.settings import DEFAULT_TABLE
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.ticket import Ticket, utcnow
from gateway.voice.policy import callback_ticket
from gateway.voice.prompts import prompt_wav
from peers import audio
from peers.sip import Baresip, Peers, dtmf_scenario, uac_scenario, uas_reject_scenario
from tests.helpers import Seat, queued_ticket
from tests.voice.conftest import StackArgs
from tests.voice.voice_stack import (
    VoiceStack,
    accepted_then_revoked,
    filed_callback_ticket,
    voice_stack,
    worker_files,
)

pytestmark = pytest.mark.slow

SHORT_MESSAGE = {"max_seconds = 120": "max_seconds = 6"}  # voice messages of 6 s at most


@pytest.fixture
def long_speech(tmp_path: Path, speech_wav: Path) -> Path:
    """The shared hotline utterance three times over (about 20 s): a caller who keeps talking."""
    out = tmp_path / "speech-x3.wav"
    subprocess.run(["sox", str(speech_wav), str(speech_wav), str(speech_wav), str(out)], check=True, timeout=30)
    return out


def matching_windows(reference: Path, heard: audio.Audio, window: float = 1.0) -> int:
    """How many 1 s windows of what was heard are a near-exact copy of the reference somewhere.

    Windows, not the whole call: the jitter buffer may slip a frame now and then (the notes saw
    10 ms slips), which breaks one global alignment but not a short window's. 1 s, not 2 s: with
    slips about every 2 s, 2 s windows of a 10 s bridge matched only once in 1 run in 5 (a dump
    from such a run: 1 of 4 two-second windows above 0.95, 6 of 9 one-second windows)."""
    starts = [i * window for i in range(int(heard.duration // window))]
    return sum(1 for t in starts if audio.align(reference, heard.slice(t, t + window), max_lag_s=30).correlation > 0.95)


async def dial_in(peers: Peers, stack: VoiceStack, speech: Path) -> Baresip:
    """A baresip caller (13812345678) whose microphone is `speech`, connected to the 12345 flow."""
    caller = await peers.caller(speech, user="13812345678")
    await caller.dial(stack.dial_uri())
    await caller.wait_event("CALL_ESTABLISHED", 5)
    return caller


def actions(ticket: Ticket) -> list[str]:
    return [entry.action for entry in ticket.history]


async def test_caller_presses_0_and_is_bridged_to_the_agent_phone(
    stack_args: StackArgs,
    peers: Peers,
    long_speech: Path,
    tone_wav: Path,
    baresip_available: None,
) -> None:
    agent_phone = await peers.agent(tone_wav, user="1001")
    async with voice_stack(**stack_args, agent_uris={"a1": agent_phone.uri}) as stack:
        seat = await Seat.connect(stack.bound, "a1")
        caller = await dial_in(peers, stack, long_speech)
        await asyncio.sleep(1.0)  # the greeting is playing
        await caller.send_dtmf("0")

        offer = await seat.expect("offer", 10)
        offered_at = time.monotonic()
        ticket = offer["ticket"]
        assert ticket["channel"] == "voice" and ticket["ivr_path"] == "0" and ticket["queue"] == "general"
        assert ticket["citizen"]["phone"] == "13812345678"
        assert ticket["voice"]["called"] == "12345"
        assert ticket["attachments"][0]["kind"] == "recording"
        await seat.send(type="accept", ticket=ticket["id"])
        pop = await seat.expect("screen_pop", 10)
        assert pop["ticket"]["id"] == ticket["id"]
        answered = await agent_phone.wait_event("CALL_ESTABLISHED", 10)
        # The screen pop comes on the phone's 180 Ringing, before its 200: the history below says so
        # (agent_ringing, then agent_answered). Which of the two reaches this test first is a race
        # between processes on a loaded machine, so it is not asserted on the clock.
        assert offered_at < answered.at

        # The agent's tone ends after 10 s: the agent hangs up first, the caller hears the survey.
        await caller.wait_event("CALL_CLOSED", 30)
        done = await stack.ticket_where(lambda t: t.id == ticket["id"] and "recordings" in actions(t), 15)
        history = actions(done)
        for earlier, later in [
            ("offered", "agent_ringing"),
            ("agent_ringing", "agent_answered"),
            ("agent_answered", "bridged"),
        ]:
            assert history.index(earlier) < history.index(later)
        assert done.status == "claimed" and done.agent == "a1"

        caller_rec = Path(done.attachments[0].path or "")
        agent_rec = next(Path(a.path or "") for a in done.attachments if (a.path or "").endswith("-agent.wav"))
        call_seconds = audio.duration(caller.dumps()[0].enc)
        assert abs(audio.duration(caller_rec) - call_seconds) < 1.5, "the caller is recorded for the whole call"
        assert audio.rms(caller_rec) > 0.02, "the recording holds the caller's speech"
        assert abs(audio.dominant_frequency(agent_rec) - 1000) < 20, "the agent leg is recorded too"
        # Each side heard the other.
        heard_by_agent = audio.as_audio(agent_phone.dumps()[0].dec)
        assert matching_windows(long_speech, heard_by_agent) >= 3, "the agent heard the caller's own words"
        heard_by_caller = audio.as_audio(caller.dumps()[0].dec)
        tone_part = heard_by_caller.slice(max(0.0, answered.at - offered_at), None)
        assert abs(audio.dominant_frequency(tone_part) - 1000) < 20
        await seat.close()


async def test_sipp_digit_1_reaches_the_enterprise_queue(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    # Dictation by Vosk, whose model is not here: calls still work, and wait for `transcribe --pending`.
    no_model = {"enabled": True, "engine": "vosk", "vosk_model_path": str(stack_args["tmp_path"] / "no-model")}
    async with voice_stack(**stack_args, asr=no_model) as stack:
        # Past the greeting (about 3 s at the tests' speech rate), during the menu prompt.
        scenario = dtmf_scenario("1", pause_ms_before=4000, hold_ms_after=2000, out_dir=stack_args["tmp_path"])
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
        result = await sipp.wait(30)
        assert result.ok, str(result)
        ticket = await stack.ticket_where(lambda t: t.status == "abandoned" and "recordings" in actions(t), 10)
        assert (ticket.queue, ticket.ivr_path, ticket.priority) == ("enterprise", "1", 7)
        assert actions(ticket)[:2] == ["queued", "abandoned"], "caller hung up while queued"
        recording = Path(ticket.attachments[0].path or "")
        assert recording.is_relative_to(stack.recordings) and audio.duration(recording) > 2
        waiting = [entry for _, entry in await stack.link.pending()]
        assert waiting == [{"ticket": ticket.id, "path": str(recording), "reason": "asr_unavailable"}]


async def test_the_fallbacks_python_live_audio_port_and_pjsips_media_thread_carry_a_call(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    # What a worker runs without the C helpers for these two jobs (docs/voice.md, "Live audio").
    async with voice_stack(**stack_args, native_live_audio=False, media_poll_ms=0) as stack:
        scenario = dtmf_scenario("1", pause_ms_before=4000, hold_ms_after=2000, out_dir=stack_args["tmp_path"])
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
        result = await sipp.wait(30)
        assert result.ok, str(result)
        ticket = await stack.ticket_where(lambda t: t.status == "abandoned" and "recordings" in actions(t), 10)
        assert (ticket.queue, ticket.ivr_path) == ("enterprise", "1")  # the digit came through RTP
        assert audio.duration(Path(ticket.attachments[0].path or "")) > 2
        info = await stack.redis.hgetall(f"{stack.config.redis.key_prefix}:worker:wtest")
        assert info[b"audio"] == b"python"


async def test_silence_takes_the_timeout_branch_then_the_default(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    # Menu (the shipped one, with FAST's 2 s timeout): silence, one repeat, then the general queue.
    async with voice_stack(**stack_args) as stack:
        scenario = uac_scenario(stack_args["tmp_path"], audio_pcap=None, pause_ms_before=30000, hold_ms_after=100)
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
        ticket = await stack.ticket_where(lambda t: t.channel == "voice", 40)
        assert (ticket.queue, ticket.ivr_path) == ("general", "")
        nodes = await stack.redis.hgetall(f"{stack.config.redis.key_prefix}:metrics")
        assert int(nodes[b"voice.node.main_menu"]) == 1 and int(nodes[b"voice.node.queue_general"]) == 1
        await sipp.close()


async def test_two_invalid_digits_take_the_default(stack_args: StackArgs, peers: Peers, pcap_playback: None) -> None:
    async with voice_stack(**stack_args) as stack:
        # Past the greeting, into the menu prompt; 7 and 8 are no options (2 tries: 1 retry, then the
        # default). Two different keys: SIPp replays a pcap with its RTP timestamps, so the same
        # key twice would look like one event retransmitted (RFC 4733) and be counted once.
        scenario = dtmf_scenario(
            "78", pause_ms_before=4000, hold_ms_after=4000, out_dir=stack_args["tmp_path"], digit_gap_ms=2500
        )
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
        ticket = await stack.ticket_where(lambda t: t.channel == "voice", 30)
        assert ticket.queue == "general" and ticket.ivr_path == "78"
        await sipp.wait(30)


async def test_capacity_is_two_callers_then_503(stack_args: StackArgs, peers: Peers, pcap_playback: None) -> None:
    async with voice_stack(**stack_args) as stack:
        scenario = uac_scenario(stack_args["tmp_path"], audio_pcap=None, pause_ms_before=3000, hold_ms_after=100)
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345", calls=3, concurrency=3, rate=10)
        result = await sipp.wait(30)
        assert result.successful == 2, str(result)
        assert dict(result.statuses).get(503) == 1, str(result)
        info = await stack.redis.hgetall(f"{stack.config.redis.key_prefix}:worker:wtest")
        assert info[b"capacity"] == b"2"
        assert info[b"audio"] == b"c"  # live audio through the C port, not the Python fallback


async def test_unknown_number_is_404(stack_args: StackArgs, peers: Peers, sipp_available: None) -> None:
    async with voice_stack(**stack_args, default_flow=None) as stack:
        scenario = uac_scenario(stack_args["tmp_path"], audio_pcap=None, pause_ms_before=100, hold_ms_after=100)
        sipp = await peers.sipp(scenario, target=stack.sip, service="99999")
        result = await sipp.wait(20)
        assert dict(result.statuses).get(404) == 1, str(result)
        assert await stack.tickets() == []


async def test_agent_phone_not_answering_requeues_ahead(
    stack_args: StackArgs, peers: Peers, tone_wav: Path, pcap_playback: None, baresip_available: None
) -> None:
    # a1's phone rings and nobody picks it up: after agent_answer_timeout (5 s) the worker cancels it.
    phone = Baresip(stack_args["tmp_path"] / "agent", user="1001", audio_source=tone_wav, role="agent")
    await phone.start()
    try:
        async with voice_stack(**stack_args, agent_uris={"a1": phone.uri}) as stack:
            scenario = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=15000, out_dir=stack_args["tmp_path"])
            sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
            seat = await Seat.connect(stack.bound, "a1")
            offer = await seat.expect("offer", 10)
            key = f"{stack.config.redis.key_prefix}:t:{offer['ticket']['id']}"
            entry_before = await stack.redis.hget(key, "entry")
            await seat.send(type="accept", ticket=offer["ticket"]["id"])
            await phone.wait_event("CALL_INCOMING", 10)
            revoked = await seat.expect("revoked", 15)
            assert revoked["reason"] == "agent_no_answer", revoked  # not the worker's own CANCEL read as a failure
            await phone.wait_event("CALL_CLOSED", 5)  # it stopped ringing
            assert (await seat.expect("state", 5))["state"] == "away"
            ticket = await stack.gateway.queue.get(offer["ticket"]["id"])
            requeued = [entry for entry in ticket.history if entry.action == "requeued"]
            assert ticket.status == "queued" and requeued[-1].detail["reason"] == "agent_no_answer"
            assert await stack.redis.hget(key, "entry") == entry_before, "it keeps its place in the queue"
            boss = await Seat.connect(stack.bound, "boss")
            assert (await boss.expect("offer", 10))["ticket"]["id"] == ticket.id
            await sipp.close()
            await seat.close()
            await boss.close()
    finally:
        await phone.close()


async def test_agent_phone_refusing_the_call_requeues_with_its_status(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    busy = await peers.sipp(uas_reject_scenario(stack_args["tmp_path"], 486, "Busy Here"), calls=1)
    async with voice_stack(**stack_args, agent_uris={"a1": f"sip:1001@{busy.address}"}) as stack:
        scenario = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=15000, out_dir=stack_args["tmp_path"])
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
        seat, _, revoked = await accepted_then_revoked(stack.bound)
        assert revoked["reason"] == "agent_failed_486", revoked
        await sipp.close()
        await seat.close()


async def test_sigterm_with_live_calls_sends_bye_and_stores_tickets(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    async with voice_stack(**stack_args) as stack:
        scenario = dtmf_scenario(
            "0", pause_ms_before=1000, hold_ms_after=20000, hangs_up_itself=False, out_dir=stack_args["tmp_path"]
        )
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345", calls=2, concurrency=2, rate=10)
        await stack.wait_for(lambda: _count(stack, lambda t: t.status == "queued", 2), 15)
        await asyncio.sleep(1.0)  # SIPp is past its digit and waiting for our BYE
        assert await stack.worker.stop() == 0, "a clean exit, no abort"
        result = await sipp.wait(20)
        assert result.successful == 2, f"both callers got a BYE: {result}"
        abandoned = [t for t in await stack.tickets() if t.status == "abandoned"]
        callbacks = [t for t in await stack.tickets() if "callback" in t.flags]
        assert len(abandoned) == 2 and len(callbacks) == 2
        assert all(audio.duration(Path(t.attachments[0].path or "")) > 0.5 for t in abandoned)
        assert await stack.redis.zscore(f"{stack.config.redis.key_prefix}:workers", "wtest") is None


async def test_sigkill_mid_call_is_settled_by_the_core(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    async with voice_stack(**stack_args) as stack:
        scenario = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=3000, out_dir=stack_args["tmp_path"])
        sipp = await peers.sipp(scenario, target=stack.sip, service="12345")
        queued = await stack.ticket_where(lambda t: t.status == "queued", 15)
        await asyncio.sleep(1.0)
        stack.worker.kill()
        settled = await stack.ticket_where(lambda t: t.id == queued.id and t.status == "abandoned", 15)
        assert settled.history[-1].detail == {"reason": "worker_died"}
        recording = Path(settled.attachments[0].path or "")
        assert audio.duration(recording) > 1.0, "the recording so far is kept, its header repaired"
        callback = await stack.ticket_where(lambda t: "callback" in t.flags, 5)
        assert callback.message_id == f"{queued.message_id}-callback" and callback.priority == 0
        await sipp.close()


async def _count(stack: VoiceStack, check: Callable[[Ticket], bool], n: int) -> bool:
    return sum(1 for t in await stack.tickets() if check(t)) >= n


async def test_agent_hangs_up_first_and_the_caller_rates_the_service(
    stack_args: StackArgs, peers: Peers, long_speech: Path, tmp_path: Path, baresip_available: None
) -> None:
    short_tone = audio.write_tone_wav(tmp_path / "tone-3s.wav", 1000.0, 3.0)
    agent_phone = await peers.agent(short_tone, user="1001")
    async with voice_stack(**stack_args, agent_uris={"a1": agent_phone.uri}) as stack:
        seat = await Seat.connect(stack.bound, "a1")
        caller = await dial_in(peers, stack, long_speech)
        await caller.send_dtmf("0")
        offer = await seat.expect("offer", 10)
        await seat.send(type="accept", ticket=offer["ticket"]["id"])
        await agent_phone.wait_event("CALL_CLOSED", 15)  # the 3 s tone ended: the agent hung up
        await asyncio.sleep(1.0)  # the survey prompt: 满意请按1，基本满意请按2，不满意请按3
        await caller.send_dtmf("1")
        rated = await stack.ticket_where(lambda t: t.satisfaction == "satisfied", 15)
        assert rated.id == offer["ticket"]["id"] and "set_satisfaction" in actions(rated)
        await caller.wait_event("CALL_CLOSED", 10)  # 感谢您的评价，再见 — the gateway hangs up
        metrics = await stack.redis.hgetall(f"{stack.config.redis.key_prefix}:metrics")
        assert int(metrics[b"voice.rating.satisfied"]) == 1
        await seat.close()


async def test_overflow_records_a_voice_message_and_queues_one_callback(
    stack_args: StackArgs, peers: Peers, long_speech: Path, baresip_available: None
) -> None:
    # The general queue gives up after 3 s: overflow -> leave a message -> a callback ticket.
    replacements = {"max_wait_seconds = 300": "max_wait_seconds = 3"}
    async with voice_stack(**stack_args, flow_replacements=replacements) as stack:
        caller = await dial_in(peers, stack, long_speech)
        await caller.send_dtmf("0")
        await caller.wait_event("CALL_CLOSED", 40)  # the caller talks into the voice message until the WAV ends
        callback = await stack.ticket_where(lambda t: "callback" in t.flags, 15)
        live = await stack.ticket_where(lambda t: t.status == "abandoned", 5)
        assert live.history[1].detail == {"reason": "overflow"}
        assert callback.message_id == f"{live.message_id}-callback"
        assert callback.priority == 0 < live.priority, "callbacks never jump ahead of live callers"
        message = next(Path(a.path or "") for a in callback.attachments if (a.path or "").endswith("-message.wav"))
        assert audio.duration(message) > 5 and audio.rms(message) > 0.02, "the message holds the caller's words"
        # A second callback for the same call (say, from a core that also settled it) is the same ticket.
        again = await stack.gateway.queue.intake(callback_ticket(live, utcnow(), 0, "worker_died"), "test")
        assert not again.created and again.ticket_id == callback.id
        assert sum(1 for t in await stack.tickets() if "callback" in t.flags) == 1


@pytest.fixture
def housing_request(tmp_path: Path) -> Path:
    """A caller naming the housing service, again and again (espeak-ng Mandarin, 8 kHz), about 20 s."""
    one = tmp_path / "housing.wav"
    subprocess.run(
        ["espeak-ng", "-v", "cmn-latn-pinyin", "-s", "160", "-w", str(tmp_path / "raw.wav"), "我要办理住房业务"],
        check=True,
        timeout=30,
    )
    subprocess.run(
        ["sox", str(tmp_path / "raw.wav"), "-r", "8000", "-c", "1", "-b", "16", str(one), "pad", "0", "1.5"],
        check=True,
        timeout=30,
    )
    out = tmp_path / "housing-x6.wav"
    subprocess.run(["sox", *[str(one)] * 6, str(out)], check=True, timeout=30)
    return out


async def test_live_transcript_reaches_the_seat_before_the_agent_answers(
    stack_args: StackArgs, peers: Peers, housing_request: Path, tone_wav: Path, baresip_available: None
) -> None:
    # A phone that rings until we answer it, so the seat's screen fills while it rings.
    # The agent talks too (the same request, for the grammar to hear): both legs are transcribed.
    agent_phone = Baresip(stack_args["tmp_path"] / "agent", user="1001", audio_source=housing_request, role="agent")
    await agent_phone.start()
    asr = {
        "enabled": True,
        "engine": "pocketsphinx",
        "after_answer": True,  # the caller keeps being transcribed while talking to the agent
        "pool": {"workers": 1, "streams_per_worker": 2},
    }
    try:
        async with voice_stack(**stack_args, agent_uris={"a1": agent_phone.uri}, asr=asr) as stack:
            seat = await Seat.connect(stack.bound, "a1")
            caller = await dial_in(peers, stack, housing_request)
            await caller.send_dtmf("0")
            offer = await seat.expect("offer", 10)
            await seat.send(type="accept", ticket=offer["ticket"]["id"])
            await seat.expect("screen_pop", 10)
            heard = await seat.expect("transcript", 15)  # the agent's phone is still ringing
            assert heard["ticket"] == offer["ticket"]["id"] and heard["segment"]["speaker"] == "caller"
            assert not agent_phone.events or all(e.type != "CALL_ESTABLISHED" for e in agent_phone.events)
            await agent_phone.command("accept")
            await agent_phone.wait_event("CALL_ESTABLISHED", 5)
            await caller.wait_event("CALL_CLOSED", 40)
            ticket = await stack.ticket_where(lambda t: t.id == offer["ticket"]["id"] and "recordings" in actions(t))
            finals = [s for s in ticket.transcript if s.final and s.speaker == "caller"]
            assert finals, "the ticket holds the final segments"
            assert any(s.speaker == "agent" for s in ticket.transcript), "after the answer, the agent's leg too"
            # The caller asked for housing (住房, or its synonym 房子 in the navigation table).
            heard_targets = {found[0] for s in finals if (found := find_keyword(s.text, DEFAULT_TABLE))}
            assert "housing" in heard_targets, [s.text for s in finals]
            await seat.close()
    finally:
        await agent_phone.close()


def spoken(tmp_path: Path, name: str, text: str, lead_silence: float, times: int = 3) -> Path:
    """`text` said `times` times after `lead_silence` seconds of silence (espeak-ng, 8 kHz)."""
    raw, one, out = tmp_path / f"{name}-raw.wav", tmp_path / f"{name}-1.wav", tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-s", "160", "-w", str(raw), text], check=True, timeout=30)
    subprocess.run(
        ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(one), "pad", "0", "1.5"], check=True, timeout=30
    )
    subprocess.run(["sox", *[str(one)] * times, str(out), "pad", str(lead_silence), "0"], check=True, timeout=30)
    return out


NAVIGATION = {"enabled": False, "navigation_enabled": True, "pool": {"workers": 1, "streams_per_worker": 2}}


@asynccontextmanager
async def navigating(
    stack_args: StackArgs, peers: Peers, name: str, request: str
) -> AsyncIterator[tuple[VoiceStack, Baresip]]:
    """A worker with speech navigation, and a caller on it who picks 3 (语音导航) in the main menu
    and then says `request`: silence through the greeting, the menu and the navigation prompt."""
    speech = spoken(stack_args["tmp_path"], name, request, lead_silence=9.0)
    async with voice_stack(**stack_args, asr=NAVIGATION) as stack:
        caller = await dial_in(peers, stack, speech)
        await asyncio.sleep(4.0)  # the menu prompt is playing
        await caller.send_dtmf("3")
        yield stack, caller


async def test_speech_navigation_routes_a_housing_request_to_the_housing_queue(
    stack_args: StackArgs, peers: Peers, baresip_available: None
) -> None:
    async with navigating(stack_args, peers, "housing", "我要办理住房业务") as (stack, caller):
        await asyncio.sleep(8.5)  # the navigation prompt, then the request; an unsure grammar asks to confirm
        await caller.send_dtmf("1")  # yes (ignored when the route was already accepted)
        ticket = await stack.ticket_where(lambda t: t.channel == "voice", 20)
        assert (ticket.queue, ticket.route) == ("housing", "housing"), ticket.route_evidence
        assert ticket.route_evidence.startswith(("accept", "confirmed")), ticket.route_evidence
        assert ticket.ivr_path.startswith("3")


async def test_speech_navigation_sends_out_of_domain_speech_to_the_general_queue(
    stack_args: StackArgs, peers: Peers, baresip_available: None
) -> None:
    async with navigating(stack_args, peers, "weather", "今天天气怎么样") as (stack, _):
        ticket = await stack.ticket_where(lambda t: t.channel == "voice", 30)
        assert ticket.queue == "general", "not a random department"
        assert ticket.route_evidence.startswith(("reject", "timeout")), ticket.route_evidence


class WorkerLog:
    """The media worker's log: the worker inherits the test's stderr, which pytest captures."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self._capfd = capfd
        self.text = ""

    def lines(self, call_event: str) -> list[str]:
        self.text += self._capfd.readouterr().err
        return [line for line in self.text.splitlines() if re.search(rf"gateway\.voice: call \S+ {call_event}", line)]

    async def wait_for(self, call_event: str, timeout: float = 15.0) -> str:
        async with asyncio.timeout(timeout):
            while not (found := self.lines(call_event)):
                await asyncio.sleep(0.1)  # the worker writes to a file; there is nothing to await
        return found[0]


async def test_a_calls_events_are_logged_once_each_with_the_callers_number_masked(
    stack_args: StackArgs,
    peers: Peers,
    long_speech: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    baresip_available: None,
) -> None:
    # a1's phone rings unanswered (requeued), the boss's answers (bridged); a second caller hangs up
    # while queued (abandoned). Offers are the core's to log (gateway/web/seats.py).
    ringing = Baresip(tmp_path / "a1-phone", user="1001", audio_source=long_speech, role="agent")
    await ringing.start()
    boss_phone = await peers.agent(audio.write_tone_wav(tmp_path / "tone.wav", 1000.0, 20.0), user="1003")
    log = WorkerLog(capfd)
    try:
        async with voice_stack(**stack_args, agent_uris={"a1": ringing.uri, "boss": boss_phone.uri}) as stack:
            seat = await Seat.connect(stack.bound, "a1")
            caller = await dial_in(peers, stack, long_speech)  # 13812345678
            await caller.send_dtmf("0")
            offer = await seat.expect("offer", 10)
            await seat.send(type="accept", ticket=offer["ticket"]["id"])
            assert (await seat.expect("revoked", 15))["reason"] == "agent_no_answer"
            boss = await Seat.connect(stack.bound, "boss")
            await boss.send(type="accept", ticket=(await boss.expect("offer", 10))["ticket"]["id"])
            await log.wait_for("bridged")
            second = await peers.caller(long_speech, user="13900001111")
            await second.dial(stack.dial_uri())
            await second.wait_event("CALL_ESTABLISHED", 5)
            await second.send_dtmf("0")
            await log.wait_for("queued: ticket .* \\(139\\*\\*\\*\\*1111\\)")
            await second.hangup()
            await log.wait_for("abandoned")
            await seat.close()
            await boss.close()
    finally:
        await ringing.close()
    answered, queued = log.lines("answered"), log.lines("queued")
    assert [len(answered), len(queued)] == [2, 2], log.text[-3000:]
    assert [len(log.lines(event)) for event in ("requeued", "bridged", "abandoned")] == [1, 1, 1], log.text[-3000:]
    assert "138****5678" in answered[0] and "138****5678" in queued[0]
    assert "agent_no_answer" in log.lines("requeued")[0] and "caller_hung_up" in log.lines("abandoned")[0]
    assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", log.text), "a full mobile number in the worker's log"


async def spooled(spool: Path, timeout: float = 15.0) -> Path:
    """The one entry a worker (another process) writes to its spool as it settles a call."""
    async with asyncio.timeout(timeout):
        while not (found := list(spool.glob("*.json"))):
            await asyncio.sleep(0.1)  # written by another process: nothing to await
    [entry] = found
    return entry


async def test_redis_stopped_mid_call_the_caller_hears_the_apology_leaves_a_message_and_is_one_ticket(
    tmp_path: Path, own_redis: EmbeddedRedis, key_prefix: str, prompts_dir: Path, peers: Peers, long_speech: Path
) -> None:
    # worker_timeout 30 s: Redis comes back before the worker would drain; it files its spool itself.
    files = worker_files(
        tmp_path, own_redis.url, key_prefix, prompts_dir, flow_replacements=SHORT_MESSAGE, worker_timeout=30
    )
    worker = files.process(own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        await worker.start()
        caller = await peers.caller(long_speech, user="13812345678")
        await caller.dial(f"sip:12345@{files.sip}")
        await caller.wait_event("CALL_ESTABLISHED", 5)
        own_redis.stop()  # mid-call, during the greeting
        await caller.send_dtmf("0")
        await caller.wait_event("CALL_CLOSED", 40)  # apology, 6 s message, goodbye: the worker hangs up
        entry = await spooled(files.recordings / "spool")
        heard = audio.as_audio(caller.dumps()[0].dec)
        apology = prompt_wav(prompts_dir, "12345-default", "unavailable")
        print("WIN", matching_windows(apology, heard), audio.duration(apology))
        assert matching_windows(apology, heard) >= 3, "the caller heard the apology (about 6 s of it)"

        own_redis.start()  # the same data as before it stopped; the worker files it at its next good heartbeat
        ticket = await filed_callback_ticket(client, files.config, key_prefix, entry)
    finally:
        await worker.stop()
        await client.aclose()
    assert ticket.citizen.phone == "13812345678" and ticket.queue == "general"
    message = next(Path(a.path or "") for a in ticket.attachments if (a.path or "").endswith("-message.wav"))
    assert audio.duration(message) > 4 and audio.rms(message) > 0.02, "the message holds the caller's words"


async def test_a_full_queue_sends_the_caller_to_the_overflow_message_at_once(
    stack_args: StackArgs, peers: Peers, long_speech: Path, prompts_dir: Path, baresip_available: None
) -> None:
    # general at priority 1 holds one ticket, its bound; the caller's would be the second.
    async with voice_stack(**stack_args, redis={"max_queue_length": 1}, flow_replacements=SHORT_MESSAGE) as stack:
        web = await stack.gateway.queue.intake(queued_ticket("web-1", priority=1), "test")
        caller = await dial_in(peers, stack, long_speech)
        await caller.send_dtmf("0")
        # max_wait_seconds is 300: a call closed well before that went to the overflow at once.
        await caller.wait_event("CALL_CLOSED", 40)
        callback = await stack.ticket_where(lambda t: "callback" in t.flags, 15)
        assert [t.id for t in await stack.tickets() if t.id != callback.id] == [web.ticket_id], "nothing queued"
        assert callback.voice is not None and callback.message_id == callback.voice.call_id
        assert callback.notes == "回拨原因: voice_message" and callback.priority == 0
        heard = audio.as_audio(caller.dumps()[0].dec)
        overflow = prompt_wav(prompts_dir, "12345-default", "overflow")
        print("WIN", matching_windows(overflow, heard), audio.duration(overflow))
        assert matching_windows(overflow, heard) >= 3, "the caller heard the overflow prompt (about 5 s of it)"
        metrics = await stack.redis.hgetall(f"{stack.config.redis.key_prefix}:metrics")
        assert int(metrics[b"voice.node.overflow_message"]) == 1
