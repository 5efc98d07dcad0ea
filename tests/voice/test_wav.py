"""gateway.voice.wav: the header-only length the worker reads at every call's end."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from gateway.voice.wav import wav_info, wav_seconds


@pytest.mark.parametrize(("rate", "frames"), [(8000, 12345), (16000, 16000), (8000, 0)])
def test_wav_seconds_reads_the_length_from_the_header(tmp_path: Path, rate: int, frames: int) -> None:
    path = tmp_path / "x.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x01\x02" * frames)
    assert wav_seconds(path) == pytest.approx(frames / rate)
    assert wav_seconds(path) == pytest.approx(wav_info(path).seconds)


def test_wav_seconds_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        wav_seconds(tmp_path / "none.wav")
