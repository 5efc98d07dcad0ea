"""PocketSphinx engine on real audio: the shared clips, synthesized keywords, silence and noise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.asr.engine import AsrUnavailable, Segment
from gateway.asr.resample import resample
from gateway.asr.settings import AsrSettings
from peers.speech import read_pcm, sox_noise, synthesize


def run(recognizer: Any, pcm: bytes, rate: int, chunk: int = 1600) -> list[Segment]:
    stream = recognizer.open(rate)
    out: list[Segment] = []
    for at in range(0, len(pcm), chunk):
        out += stream.feed(pcm[at : at + chunk])
    rest: list[Segment] = stream.finish()
    return out + rest


def finals(segments: list[Segment]) -> list[Segment]:
    return [s for s in segments if s.final]


def test_missing_model_is_unavailable(tmp_path: Path) -> None:
    from gateway.asr.pocketsphinx_engine import PocketSphinxRecognizer

    with pytest.raises(AsrUnavailable, match="POCKETSPHINX_MODEL_PATH"):
        PocketSphinxRecognizer.load(AsrSettings(pocketsphinx_model_path=str(tmp_path)))


def test_keyword_with_partials_timestamps_and_confidence(recognizer: Any, tts: None, tmp_path: Path) -> None:
    rate, pcm = read_pcm(synthesize("交通", tmp_path / "jt.wav", speed=160))
    segments = run(recognizer, pcm, rate, chunk=333)  # odd chunk sizes on purpose
    final = finals(segments)
    assert [s.text for s in final] == ["交通"]
    assert final[0].detail["target"] == "traffic"
    assert final[0].confidence > 0.5
    assert 0.0 <= final[0].start < final[0].end <= len(pcm) / 2 / rate + 0.05
    partial_ends = [s.end for s in segments if not s.final]
    assert partial_ends  # partial hypotheses while streaming
    assert partial_ends == sorted(partial_ends) and partial_ends[-1] <= final[0].end + 0.1


def test_16k_input_is_resampled_to_the_8k_model(recognizer: Any, tts: None, tmp_path: Path) -> None:
    rate, pcm = read_pcm(synthesize("住房", tmp_path / "zf.wav", speed=160, rate=16000))
    assert rate == 16000
    assert [s.text for s in finals(run(recognizer, pcm, rate))] == ["住房"]


def test_two_utterances_in_one_stream_are_two_finals(recognizer: Any, tts: None, tmp_path: Path) -> None:
    _, a = read_pcm(synthesize("交通", tmp_path / "a.wav"))
    _, b = read_pcm(synthesize("住房", tmp_path / "b.wav"))
    pause = b"\x00\x00" * 8000
    final = finals(run(recognizer, pause + a + pause + b + pause, 8000))
    assert [s.text for s in final] == ["交通", "住房"]
    assert final[0].end <= final[1].start
    assert final[0].start >= 0.8  # the leading second of silence is not part of the utterance


def test_silence_gives_no_segment(recognizer: Any) -> None:
    assert run(recognizer, b"\x00\x00" * 8000 * 3, 8000) == []


@pytest.mark.parametrize("kind", ["whitenoise", "pinknoise", "brownnoise"])
def test_noise_is_bounded_and_low_confidence(recognizer: Any, tts: None, tmp_path: Path, kind: str) -> None:
    rate, pcm = read_pcm(sox_noise(tmp_path / "n.wav", seconds=5, kind=kind))
    began = time.perf_counter()
    segments = run(recognizer, pcm, rate)
    assert time.perf_counter() - began < 5.0  # far below real time; a hang would fail here
    assert all(s.confidence < 0.5 for s in finals(segments))


def test_out_of_grammar_clip_is_low_confidence(recognizer: Any, shared_audio: Path) -> None:
    rate, pcm = read_pcm(shared_audio / "real/BAC009S0764W0121_8k.wav")  # human news speech
    assert all(s.confidence < 0.5 for s in finals(run(recognizer, pcm, rate)))


def test_finished_stream_returns_its_decoders(recognizer: Any) -> None:
    stream = recognizer.open(8000)
    stream.finish()
    assert stream.finish() == []
    with pytest.raises(RuntimeError):
        stream.feed(b"\x00\x00")
    again = recognizer.open(8000)  # reuses the freed pair, no reload
    again.finish()


def test_resampled_shared_clip_matches_8k_file(recognizer: Any, shared_audio: Path) -> None:
    # Our resampler feeding 16 kHz audio gives the same words as sox's 8 kHz copy.
    _, pcm16 = read_pcm(shared_audio / "tts/hotline_08_16k.wav")
    _, pcm8 = read_pcm(shared_audio / "tts/hotline_08_8k.wav")
    ours = [s.raw for s in finals(run(recognizer, resample(pcm16, 16000, 8000), 8000))]
    theirs = [s.raw for s in finals(run(recognizer, pcm8, 8000))]
    assert len(ours) == len(theirs)


def test_audio_ending_mid_speech_on_a_frame_boundary(recognizer: Any, tts: None, tmp_path: Path) -> None:
    # The endpointer is still in speech at finish() and nothing is left over: a flush edge case.
    _, pcm = read_pcm(synthesize("企业服务", tmp_path / "q.wav"))
    cut = pcm[: len(pcm) // 2 // 480 * 480]
    final = finals(run(recognizer, cut, 8000, chunk=480))
    assert len(final) == 1 and final[0].end == pytest.approx(len(cut) / 16000, abs=0.05)
