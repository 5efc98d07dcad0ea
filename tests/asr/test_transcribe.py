"""Batch path: WAV validation, silence/noise, and the CLI entry."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.asr.engine import AudioFormatError
from gateway.asr.transcribe import downmix, main_transcribe, read_wav, transcribe_file
from peers.speech import read_pcm, sox_noise, synthesize, write_wav


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioFormatError, match=r"empty file \(0 bytes\)"):
        read_wav(tmp_path / "empty.wav")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match="no such file"):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(AudioFormatError, match="directory"):
        read_wav(tmp_path)


def test_non_wav_file(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"ID3\x03\x00 this is an mp3 really")
    with pytest.raises(AudioFormatError, match="not a WAV file"):
        read_wav(tmp_path / "x.wav")


def test_truncated_header(tmp_path: Path) -> None:
    (tmp_path / "t.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    with pytest.raises(AudioFormatError, match="broken WAV"):
        read_wav(tmp_path / "t.wav")


@pytest.mark.parametrize("width", [1, 3, 4])
def test_wrong_sample_width(tmp_path: Path, width: int) -> None:
    path = write_wav(tmp_path / "w.wav", b"\x00" * width * 800, width=width)
    with pytest.raises(AudioFormatError, match=f"{8 * width}-bit samples, only 16-bit"):
        read_wav(path)


def test_float_wav(tmp_path: Path) -> None:
    data = np.zeros(800, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "f.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioFormatError, match="IEEE float WAV is not supported"):
        read_wav(tmp_path / "f.wav")


@pytest.mark.parametrize("rate", [4000, 96000])
def test_unsupported_rate(tmp_path: Path, rate: int) -> None:
    path = write_wav(tmp_path / "r.wav", b"\x00\x00" * 100, rate=rate)
    with pytest.raises(AudioFormatError, match=f"{rate} Hz not supported"):
        read_wav(path)


def test_too_long(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "l.wav", b"\x00\x00" * 8000 * 3)
    with pytest.raises(AudioFormatError, match="longer than"):
        read_wav(path, max_seconds=2)


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left = np.array([1000, -2000, 300], dtype="<i2")
    right = np.array([3000, 2000, 301], dtype="<i2")
    pcm = np.stack([left, right], axis=1).reshape(-1).astype("<i2").tobytes()
    audio = read_wav(write_wav(tmp_path / "s.wav", pcm, channels=2))
    assert (audio.channels, audio.sample_rate) == (2, 8000)
    assert np.frombuffer(audio.pcm, "<i2").tolist() == [2000, 0, 300]  # 300.5 rounds to even
    mono = np.array([5, -7], dtype="<i2")
    assert downmix(np.repeat(mono, 2).tobytes(), 2) == mono.tobytes()


def test_silence_gives_an_empty_transcript(recognizer: Any, tmp_path: Path) -> None:
    t = transcribe_file(write_wav(tmp_path / "sil.wav", b"\x00\x00" * 8000 * 2), recognizer)
    assert (t.text, t.segments, t.seconds) == ("", [], 2.0)


def test_noise_does_not_crash_or_hang(recognizer: Any, tts: None, tmp_path: Path) -> None:
    began = time.perf_counter()
    t = transcribe_file(sox_noise(tmp_path / "n.wav", seconds=10), recognizer)
    assert time.perf_counter() - began < 10
    assert t.rtf < 0.5
    assert all(s.confidence < 0.5 for s in t.segments)


def test_44k_stereo_speech_is_resampled(recognizer: Any, tts: None, tmp_path: Path) -> None:
    _, pcm = read_pcm(synthesize("交通", tmp_path / "jt.wav", rate=44100))
    stereo = np.repeat(np.frombuffer(pcm, "<i2"), 2).tobytes()
    t = transcribe_file(write_wav(tmp_path / "st.wav", stereo, rate=44100, channels=2), recognizer)
    assert t.text == "交通" and t.sample_rate == 44100 and t.channels == 2


def test_cli_json_and_exit_codes(model_dir: Path, shared_audio: Path, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "bad.wav").write_bytes(b"")
    clip = str(shared_audio / "tts/hotline_08_8k.wav")
    code = main_transcribe(
        ["--engine", "pocketsphinx", "--model", str(model_dir), "--json", clip, str(tmp_path / "bad.wav")]
    )
    out, err = capsys.readouterr()
    assert code == 1
    record = json.loads(out.splitlines()[0])
    assert record["path"] == clip and record["engine"] == "pocketsphinx" and record["sample_rate"] == 8000
    assert {"text", "raw", "start", "end", "confidence", "final"} <= set(record["segments"][0])
    assert "empty file" in err


def test_cli_without_vosk_model_exits_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any) -> None:
    monkeypatch.delenv("VOSK_MODEL_PATH", raising=False)
    assert main_transcribe([str(tmp_path / "x.wav")]) == 3
    assert "live dictation is off" in capsys.readouterr().err
