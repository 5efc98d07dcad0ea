"""Vosk adapter: framing, resampling and JSON parsing without the model; real decoding with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.asr.engine import AsrUnavailable
from gateway.asr.settings import AsrSettings
from gateway.asr.vosk_engine import (
    OFFICIAL_BLOBS,
    VoskRecognizer,
    VoskStream,
    check_model_dir,
    git_blob_id,
    model_rate,
    parse_partial,
    parse_result,
    supports_phrase_hints,
    verify_model,
)
from peers.speech import read_pcm

# Shaped like vosk 0.3.45 output with SetWords(True) (small-cn model: words separated by spaces).
RESULT = json.dumps(
    {
        "result": [
            {"conf": 1.0, "end": 0.87, "start": 0.42, "word": "我"},
            {"conf": 0.91, "end": 1.2, "start": 0.87, "word": "要"},
            {"conf": 0.62, "end": 1.71, "start": 1.2, "word": "投诉"},
        ],
        "text": "我 要 投诉",
    },
    ensure_ascii=False,
)
PHONE = json.dumps(
    {
        "result": [
            {"conf": 0.8, "end": 0.3 + i * 0.3, "start": i * 0.3, "word": w}
            for i, w in enumerate("幺三八五三五七二四六九")
        ],
        "text": " ".join("幺三八五三五七二四六九"),
    },
    ensure_ascii=False,
)


def test_parse_result_words_times_confidence() -> None:
    seg = parse_result(RESULT)
    assert seg is not None
    assert (seg.text, seg.raw, seg.start, seg.end, seg.final) == ("我要投诉", "我 要 投诉", 0.42, 1.71, True)
    assert seg.confidence == pytest.approx((1.0 + 0.91 + 0.62) / 3, abs=1e-4)
    assert seg.detail["words"][2] == ("投诉", 1.2, 1.71, 0.62)  # type: ignore[index]


def test_parse_result_normalizes_spoken_digits_and_keeps_raw() -> None:
    seg = parse_result(PHONE)
    assert seg is not None and seg.text == "13853572469" and seg.raw.startswith("幺 三 八")


def test_parse_empty_and_wordless_results() -> None:
    assert parse_result('{"text" : ""}') is None
    seg = parse_result('{"text" : "你 好"}', since=2.5)
    assert seg is not None and (seg.text, seg.start, seg.end, seg.confidence) == ("你好", 2.5, 2.5, 1.0)


def test_parse_partial() -> None:
    seg = parse_partial('{\n  "partial" : "我 要 投"\n}', since=1.0, now=1.6)
    assert seg is not None and (seg.text, seg.final, seg.start, seg.end) == ("我要投", False, 1.0, 1.6)
    assert parse_partial('{"partial" : ""}', 0, 0) is None


class FakeKaldi:
    """Stands in for vosk.KaldiRecognizer: ends an utterance every `every` frames."""

    def __init__(self, every: int = 5) -> None:
        self.frames: list[bytes] = []
        self.every = every

    def AcceptWaveform(self, data: bytes) -> bool:
        self.frames.append(data)
        return len(self.frames) % self.every == 0

    def Result(self) -> str:
        return RESULT

    def PartialResult(self) -> str:
        return json.dumps({"partial": "我 " * (len(self.frames) % self.every)}, ensure_ascii=False)

    def FinalResult(self) -> str:
        return '{"text" : ""}'


def test_stream_frames_at_model_rate_and_resamples_8k() -> None:
    kaldi = FakeKaldi()
    stream = VoskStream(kaldi, sample_rate=8000, rate=16000, chunk_ms=100)
    segments = []
    for _ in range(13):  # 13 x 77 ms of 8 kHz audio in odd-sized chunks
        segments += stream.feed(b"\x00\x01" * 616 + b"\x00")
    segments += stream.finish()
    sizes = {len(f) for f in kaldi.frames[:-1]}
    assert sizes == {3200}  # 100 ms at 16 kHz, whatever the input chunking
    assert sum(len(f) for f in kaldi.frames) == 2 * (13 * 1233 // 2) * 2  # every 8 kHz sample -> two
    assert stream.seconds_fed == pytest.approx(13 * 1233 / 16000, abs=1e-3)
    finals = [s for s in segments if s.final]
    partials = [s for s in segments if not s.final]
    assert len(finals) == len(kaldi.frames) // 5 and finals[0].text == "我要投诉"
    assert partials and all(p.confidence == 0.0 for p in partials)


def test_stream_at_model_rate_is_not_resampled() -> None:
    kaldi = FakeKaldi(every=1000)
    stream = VoskStream(kaldi, sample_rate=16000, rate=16000, chunk_ms=100)
    pcm = bytes(range(256)) * 25
    stream.feed(pcm)
    stream.finish()
    assert b"".join(kaldi.frames) == pcm


def test_missing_model_says_dictation_is_off_and_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOSK_MODEL_PATH", raising=False)
    with pytest.raises(AsrUnavailable) as info:
        VoskRecognizer.load(AsrSettings(engine="vosk"))
    message = info.value.message
    for needle in ("live dictation is off", "vosk-model-small-cn-0.22", "vosk-model-cn-0.22", "VOSK_MODEL_PATH",
                   "https://alphacephei.com/vosk/models", OFFICIAL_BLOBS["am/final.mdl"]):  # fmt: skip
        assert needle in message


def test_incomplete_model_dir_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "model.conf").write_text("--min-active=200\n")
    with pytest.raises(AsrUnavailable, match=r"lacks am/final.mdl, graph/"):
        check_model_dir(tmp_path)
    with pytest.raises(AsrUnavailable, match="not a folder"):
        check_model_dir(tmp_path / "nope")


def test_model_rate_and_hints_support(tmp_path: Path) -> None:
    assert model_rate(tmp_path) == 16000
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mfcc.conf").write_text("--use-energy=false\n--sample-frequency=8000\n")
    assert model_rate(tmp_path) == 8000
    assert not supports_phrase_hints(tmp_path)
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "Gr.fst").write_bytes(b"")
    (tmp_path / "graph" / "HCLr.fst").write_bytes(b"")
    assert supports_phrase_hints(tmp_path)


def test_blob_ids_match_git(tmp_path: Path) -> None:
    assert git_blob_id(b"") == OFFICIAL_BLOBS["ivector/online_cmvn.conf"]  # the empty file
    (tmp_path / "ivector").mkdir()
    (tmp_path / "ivector" / "online_cmvn.conf").write_bytes(b"")
    problems = verify_model(tmp_path)
    assert "ivector/online_cmvn.conf" not in problems and problems["am/final.mdl"] == "missing"


needs_model = pytest.mark.skipif(
    not os.environ.get("VOSK_MODEL_PATH"), reason="VOSK_MODEL_PATH not set: Vosk model tests could not run"
)


@pytest.mark.vosk
@needs_model
def test_vosk_model_copy_is_official() -> None:
    root = Path(os.environ["VOSK_MODEL_PATH"])
    if (root / "graph" / "Gr.fst").exists():  # the small model; the big one has other files
        assert verify_model(root) == {}


@pytest.mark.vosk
@needs_model
@pytest.mark.parametrize("name", ["tts/hotline_02_8k.wav", "tts/hotline_02_16k.wav"])
def test_vosk_transcribes_the_phone_number(name: str, shared_audio: Path) -> None:
    from gateway.asr.text import extract
    from gateway.asr.transcribe import transcribe_file

    recognizer = VoskRecognizer.load(AsrSettings(engine="vosk"))
    transcript = transcribe_file(shared_audio / name, recognizer)
    assert transcript.text
    assert transcript.rtf < 1.0
    # espeak's digits are clear; at least the mobile prefix must come through.
    assert "138" in (extract(transcript.text).phone or transcript.text)


@pytest.mark.vosk
@needs_model
def test_vosk_streaming_gives_partials_then_finals(shared_audio: Path) -> None:
    recognizer = VoskRecognizer.load(AsrSettings(engine="vosk", phrase_hints=["住房", "税务", "交通"]))
    rate, pcm = read_pcm(shared_audio / "tts/hotline_03_8k.wav")
    stream = recognizer.open(rate)
    segments = []
    for at in range(0, len(pcm), 1600):
        segments += stream.feed(pcm[at : at + 1600])
    segments += stream.finish()
    assert any(not s.final for s in segments) and any(s.final and s.text for s in segments)


def test_corrupt_model_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    for name in ("am/final.mdl", "conf/model.conf"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("garbage\n")
    (tmp_path / "graph").mkdir()
    with pytest.raises(AsrUnavailable, match=r"failed to load.*live dictation is off"):
        VoskRecognizer.load(AsrSettings(engine="vosk", vosk_model_path=str(tmp_path)))
