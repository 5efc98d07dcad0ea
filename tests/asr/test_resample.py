from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.asr.resample import Resampler, resample


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (44100, 8000), (8000, 48000), (22050, 16000)])
def test_length_is_exact(src: int, dst: int) -> None:
    out = resample(tone(440, src), src, dst)
    assert len(out) // 2 == dst  # one second in, one second out


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (44100, 16000)])
def test_tone_survives_in_phase(src: int, dst: int) -> None:
    out = samples(resample(tone(440, src), src, dst))
    expected = 8000 * np.sin(2 * np.pi * 440 * np.arange(len(out)) / dst)
    # Away from the edges the filter is transparent: no delay, no gain change.
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 40


def test_downsampling_removes_what_would_alias() -> None:
    # 5 kHz cannot exist at 8 kHz; without the low-pass it would fold back to 3 kHz.
    out = samples(resample(tone(5000, 16000), 16000, 8000))
    assert out[100:-100].std() < 30


def test_passthrough_is_identity() -> None:
    pcm = tone(300, 8000)
    assert resample(pcm, 8000, 8000) == pcm


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=977), min_size=1, max_size=40))
def test_chunking_does_not_change_the_output(cuts: list[int]) -> None:
    pcm = tone(700, 8000, 0.5)
    whole = resample(pcm, 8000, 16000)
    r = Resampler(8000, 16000)
    out, at = b"", 0
    for size in cuts:  # odd sizes split samples in half: the resampler must keep the odd byte
        out += r.process(pcm[at : at + size])
        at += size
    out += r.process(pcm[at:]) + r.finish()
    assert out == whole


def test_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError):
        Resampler(0, 8000)
