"""The real-peer harness proves itself without the gateway: baresip <-> baresip, SIPp <-> SIPp,
SIPp <-> baresip, and SIPp against nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from peers import audio
from peers.sip import (
    UAS_REGISTER,
    UAS_TRIVIAL,
    NetstringDecoder,
    PeerError,
    Peers,
    baresip_account,
    baresip_config,
    dtmf_scenario,
    free_port,
    parse_error_codes,
    uac_scenario,
    uas_reject_scenario,
)

pytestmark = pytest.mark.slow


# -- pure parts (cheap, but they live with the harness they check)


def test_netstring_decoder_handles_split_and_joined_frames() -> None:
    decoder = NetstringDecoder(max_size=100)
    assert decoder.feed(b"5:hel") == []
    assert decoder.feed(b"lo,3:abc,2:") == [b"hello", b"abc"]
    assert decoder.feed(b"xy,") == [b"xy"]
    with pytest.raises(PeerError):
        NetstringDecoder(max_size=4).feed(b"5:hello,")


def test_baresip_config_is_loopback_only_and_soundless(tmp_path: Path) -> None:
    config = baresip_config(
        sip_port=5080,
        ctrl_port=4444,
        rtp_base=10000,
        rtp_count=20,
        audio_source=tmp_path / "a.wav",
        snd_path=tmp_path,
    )
    assert "sip_listen\t127.0.0.1:5080" in config
    assert "rtp_ports\t10000-10019" in config
    assert "ctrl_tcp_listen\t127.0.0.1:4444" in config
    for absent in ("0.0.0.0", "alsa", "stun", "turn", "ice"):
        assert absent not in config
    assert (
        baresip_account(
            user="agent1",
            sip_port=5301,
            answermode="auto",
            codecs=("pcma", "pcmu"),
            registrar="127.0.0.1:5060",
            auth_pass="s3cret",
            regint=120,
        )
        == "<sip:agent1@127.0.0.1:5060>;auth_pass=s3cret;regint=120;answermode=auto;audio_codecs=pcma,pcmu\n"
    )


def test_uac_scenario_renders_digits_and_both_endings(tmp_path: Path) -> None:
    self_bye = dtmf_scenario("0#", 1000, 700, out_dir=tmp_path).read_text()
    assert self_bye.index("dtmf_2833_0.pcap") < self_bye.index("dtmf_2833_pound.pcap")
    assert 'g711a.pcap"/>' in self_bye and '<pause milliseconds="700"/>' in self_bye
    assert "BYE [next_url]" in self_bye and 'request="BYE"' not in self_bye
    far_bye = uac_scenario(tmp_path, digits="*", audio_pcap=None, hold_ms_after=4000, hangs_up_itself=False)
    text = far_bye.read_text()
    assert 'g711a.pcap"/>' not in text and "dtmf_2833_star.pcap" in text
    assert '<recv request="BYE" timeout="4000"/>' in text and "BYE [next_url]" not in text
    assert dtmf_scenario("0#", 1000, 700, out_dir=tmp_path) == dtmf_scenario("0#", 1000, 700, out_dir=tmp_path)
    with pytest.raises(ValueError):
        dtmf_scenario("0x", 1000, 700, out_dir=tmp_path)
    assert "SIP/2.0 503 Service Unavailable" in uas_reject_scenario(tmp_path, 503, "Service Unavailable").read_text()


def test_error_codes_file_is_summed(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("t0;00:00:00;\nt1;00:00:01;486,503,\nt2;00:00:02;486,\n")
    assert parse_error_codes(path) == {486: 2, 503: 1}


def test_audio_alignment_finds_lag_and_frequency() -> None:
    rng = np.random.default_rng(7)
    noise = audio.Audio(rng.standard_normal(16000) * 0.1, 8000)
    delayed = audio.Audio(np.concatenate([np.zeros(400), noise.samples * 0.5]), 8000)
    found = audio.align(noise, delayed)
    assert found.lag == 400 and found.correlation > 0.999
    assert audio.dominant_frequency(audio.tone(1000, 1.0)) == pytest.approx(1000, abs=2)
    assert audio.rms(audio.tone(440, 1.0, amplitude=1.0)) == pytest.approx(0.7071, abs=1e-3)


# -- real peers


async def test_baresip_caller_and_agent_hear_each_other(
    peers: Peers, baresip_available: None, speech_wav: Path, tone_wav: Path
) -> None:
    agent = await peers.agent(tone_wav)
    caller = await peers.caller(speech_wav)
    await caller.dial(agent.uri)
    await caller.wait_event("CALL_ESTABLISHED", 5)
    await agent.wait_event("CALL_ESTABLISHED", 5)
    # the caller's microphone is a WAV: baresip hangs up by itself when it ends
    closed = await caller.wait_event("CALL_CLOSED", audio.duration(speech_wav) + 5)
    assert closed.param == "end of file"
    await agent.wait_event("CALL_CLOSED", 5)
    await caller.close()
    await agent.close()

    (agent_dump,) = agent.dumps()
    (caller_dump,) = caller.dumps()
    heard_by_agent = audio.align(speech_wav, agent_dump.dec)
    assert heard_by_agent.correlation > 0.9, heard_by_agent
    assert audio.duration(agent_dump.dec) == pytest.approx(audio.duration(speech_wav), abs=1.0)
    assert audio.dominant_frequency(caller_dump.dec) == pytest.approx(1000, abs=10)
    assert min(audio.rms_per_window(caller_dump.dec)) > 0.2  # the tone all along (0.354 sent)


async def test_baresip_dtmf_reaches_the_agent_as_rfc2833(
    peers: Peers, baresip_available: None, tmp_path: Path, tone_wav: Path
) -> None:
    quiet = audio.write_wav(tmp_path / "quiet.wav", audio.tone(300, 5.0, amplitude=0.05))
    agent = await peers.agent(tone_wav)
    caller = await peers.caller(quiet, sip_trace=True)
    await caller.dial(agent.uri)
    await agent.wait_event("CALL_ESTABLISHED", 5)
    await caller.wait_event("CALL_ESTABLISHED", 5)
    await caller.send_dtmf("0")
    await caller.send_dtmf("#")
    zero = await agent.wait_event("CALL_DTMF_START", 3, param="0")
    pound = await agent.wait_event("CALL_DTMF_START", 3, param="#")
    assert zero.at < pound.at
    await agent.wait_event("CALL_DTMF_END", 3)
    await caller.hangup()
    await agent.wait_event("CALL_CLOSED", 3)
    await caller.wait_event("CALL_CLOSED", 3)
    await caller.close()
    trace = caller.log_path.read_text(errors="replace")
    assert "INVITE sip:" in trace  # the SIP trace is on...
    assert "INFO sip:" not in trace  # ...and no digit went as SIP INFO: they are telephone-events


async def test_sipp_uac_dtmf_against_sipp_uas(peers: Peers, pcap_playback: None, tmp_path: Path) -> None:
    uas = await peers.sipp(UAS_TRIVIAL, calls=3)
    scenario = dtmf_scenario("1#", pause_ms_before=7300, hold_ms_after=300, out_dir=tmp_path / "scn")
    uac = await peers.sipp(scenario, target=uas.address, calls=3, concurrency=3, rate=20)
    result = await uac.wait(timeout=20)
    assert result.ok and result.successful == 3, result
    assert result.statuses == {200: 3}, result
    served = await uas.wait(timeout=5)
    assert served.ok and served.successful == 3, served


async def test_sipp_uac_against_closed_port_fails_fast(peers: Peers, sipp_available: None, tmp_path: Path) -> None:
    nobody = free_port()
    scenario = uac_scenario(tmp_path, audio_pcap=None, pause_ms_before=0, hold_ms_after=0)
    uac = await peers.sipp(scenario, target=f"127.0.0.1:{nobody}", recv_timeout_ms=1500)
    result = await uac.wait(timeout=10)
    # Fast: SIPp's own receive timeout ended it (FailedTimeoutOnRecv), not the harness's 10 s.
    assert not result.timed_out and result.returncode == 1 and result.exit_meaning == "at least one call failed"
    assert (result.successful, result.failed) == (0, 1), result
    assert result.failure_reasons == {"FailedTimeoutOnRecv": 1}, result
    assert result.statuses == {}
    assert "timeout" in result.errors.lower()


async def test_sipp_uac_counts_rejections(peers: Peers, sipp_available: None, tmp_path: Path) -> None:
    uas = await peers.sipp(uas_reject_scenario(tmp_path, 503, "Service Unavailable"), calls=3)
    scenario = uac_scenario(tmp_path, audio_pcap=None, pause_ms_before=0, hold_ms_after=0)
    result = await (await peers.sipp(scenario, target=uas.address, calls=3, concurrency=3, rate=50)).wait(10)
    assert (result.successful, result.failed) == (0, 3), result
    assert result.statuses == {503: 3}, result
    assert result.failure_reasons == {"FailedUnexpectedMessage": 3}, result
    acked = await uas.wait(timeout=5)  # the UAS scenario waits for each ACK
    assert acked.ok and acked.successful == 3, acked


async def test_sipp_dtmf_reaches_baresip_agent_which_hangs_up(
    peers: Peers, baresip_available: None, pcap_playback: None, tmp_path: Path
) -> None:
    short_tone = audio.write_tone_wav(tmp_path / "tone-2.5s.wav", 1000.0, 2.5)
    agent = await peers.agent(short_tone)  # hangs up (BYE) when its 2.5 s WAV ends
    scenario = uac_scenario(
        tmp_path, digits="5*", audio_pcap=None, pause_ms_before=300, hold_ms_after=5000, hangs_up_itself=False
    )
    uac = await peers.sipp(scenario, target=agent.address, service=agent.user)
    result = await uac.wait(timeout=12)
    assert result.ok and result.successful == 1, result
    # Events come over ctrl_tcp on their own schedule: wait for them (bounded) rather than peek.
    await agent.wait_event("CALL_DTMF_START", 3, param="*")
    assert [e.param for e in agent.events if e.type == "CALL_DTMF_START"] == ["5", "*"]
    await agent.wait_event("CALL_CLOSED", 2)


async def test_agent_phone_registers_with_digest_auth(
    peers: Peers, baresip_available: None, sipp_available: None, tone_wav: Path
) -> None:
    registrar = await peers.sipp(UAS_REGISTER, calls=10, keys={"user": "agent1", "password": "s3cret"})
    agent = await peers.agent(tone_wav, user="agent1", registrar=registrar.address, auth_pass="s3cret")
    assert agent.aor == f"sip:agent1@{registrar.address}" and agent.uri != agent.aor
    assert await agent.registration_state() == "OK"
    with pytest.raises(PeerError, match="403 Forbidden"):
        await peers.agent(tone_wav, user="agent1", registrar=registrar.address, auth_pass="wrong")
