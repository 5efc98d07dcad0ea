"""WAV helpers for asserting what real SIP peers sent and heard.

Everything works on mono float64 samples in [-1, 1]. Multi-channel files are averaged to mono.
Only 16-bit PCM WAV is read and written (what baresip's sndfile, sox and espeak-ng produce here).
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Audio:
    """Mono samples in [-1, 1] and their sample rate."""

    samples: Samples
    rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate

    def slice(self, start_s: float, end_s: float | None = None) -> Audio:
        begin = max(0, round(start_s * self.rate))
        end = len(self.samples) if end_s is None else max(begin, round(end_s * self.rate))
        return Audio(self.samples[begin:end], self.rate)

    def resampled(self, rate: int) -> Audio:
        """Linear-interpolation resampling: good enough for correlation and level checks."""
        if rate == self.rate or len(self.samples) == 0:
            return self
        count = round(len(self.samples) * rate / self.rate)
        positions = np.arange(count) * (self.rate / rate)
        return Audio(np.interp(positions, np.arange(len(self.samples)), self.samples), rate)


def read_wav(path: Path) -> Audio:
    """Read a 16-bit PCM WAV as mono float samples."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM is supported, got {8 * wav.getsampwidth()}-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    if channels > 1:
        data = data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1)
    return Audio(data, rate)


def write_wav(path: Path, audio: Audio) -> Path:
    """Write mono 16-bit PCM."""
    pcm = np.clip(np.round(audio.samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(audio.rate)
        wav.writeframes(pcm.tobytes())
    return path


def tone(freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> Audio:
    """A sine tone (what `sox -n -r 8000 -c 1 -b 16 out.wav synth S sine F vol A` makes)."""
    t = np.arange(round(seconds * rate)) / rate
    return Audio(amplitude * np.sin(2 * math.pi * freq_hz * t), rate)


def silence(seconds: float, rate: int = 8000) -> Audio:
    return Audio(np.zeros(round(seconds * rate)), rate)


def write_tone_wav(
    path: Path, freq_hz: float = 1000.0, seconds: float = 10.0, rate: int = 8000, amplitude: float = 0.5
) -> Path:
    return write_wav(path, tone(freq_hz, seconds, rate, amplitude))


def as_audio(source: Audio | Path) -> Audio:
    return source if isinstance(source, Audio) else read_wav(source)


def duration(source: Audio | Path) -> float:
    """Length in seconds (from the header for a path, without decoding the samples)."""
    if isinstance(source, Audio):
        return source.duration
    with wave.open(str(source), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def rms(source: Audio | Path | Samples) -> float:
    """Root mean square level in [0, 1] (full-scale sine = 0.707); 0.0 for no samples."""
    samples = source if isinstance(source, np.ndarray) else as_audio(source).samples
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples))))


def rms_per_window(source: Audio | Path, window_s: float = 1.0) -> list[float]:
    """RMS of each consecutive window (the last, partial window included if at least 10 ms)."""
    audio = as_audio(source)
    step = max(1, round(window_s * audio.rate))
    minimum = max(1, audio.rate // 100)
    return [
        rms(audio.samples[i : i + step])
        for i in range(0, len(audio.samples), step)
        if len(audio.samples[i : i + step]) >= minimum
    ]


def dominant_frequency(source: Audio | Path) -> float:
    """Frequency (Hz) of the strongest FFT bin, DC excluded, with a Hann window."""
    audio = as_audio(source)
    samples = audio.samples - np.mean(audio.samples) if len(audio.samples) else audio.samples
    if len(samples) < 16:
        raise ValueError("too few samples for a spectrum")
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    return peak * audio.rate / len(samples)


@dataclass(frozen=True)
class Alignment:
    """Best alignment of `test` against `reference`.

    `lag` is in samples: test[i + lag] lines up with reference[i] (positive = test is late).
    `correlation` is Pearson's r over the overlapping part at that lag.
    """

    correlation: float
    lag: int
    rate: int
    overlap: int

    @property
    def lag_s(self) -> float:
        return self.lag / self.rate


def align(reference: Audio | Path, test: Audio | Path, rate: int = 8000, max_lag_s: float | None = 2.0) -> Alignment:
    """Find the lag that best aligns `test` with `reference` and correlate them there.

    Both are resampled to `rate` first. Lags are searched within +-max_lag_s (None: any lag).
    Silent leading/trailing parts do not matter much: only the overlap is correlated, and a
    constant offset (DC) is removed by Pearson's formula.
    """
    ref = as_audio(reference).resampled(rate).samples
    tst = as_audio(test).resampled(rate).samples
    if len(ref) == 0 or len(tst) == 0:
        return Alignment(0.0, 0, rate, 0)
    size = 1 << (len(ref) + len(tst) - 1).bit_length()
    # full cross-correlation via FFT: xcorr[k] = sum_i ref[i] * tst[i + k]
    spectrum = np.conj(np.fft.rfft(ref - ref.mean(), size)) * np.fft.rfft(tst - tst.mean(), size)
    xcorr = np.fft.irfft(spectrum, size)
    lags = np.concatenate([np.arange(0, len(tst)), np.arange(-(len(ref) - 1), 0)])
    values = np.concatenate([xcorr[: len(tst)], xcorr[size - (len(ref) - 1) :]])
    if max_lag_s is not None:
        window = np.abs(lags) <= round(max_lag_s * rate)
        lags, values = lags[window], values[window]
    lag = int(lags[int(np.argmax(values))])
    ref_part, tst_part = _overlap(ref, tst, lag)
    return Alignment(_pearson(ref_part, tst_part), lag, rate, len(ref_part))


def correlation(reference: Audio | Path, test: Audio | Path, rate: int = 8000, max_lag_s: float = 2.0) -> float:
    """Pearson correlation after the best alignment (see `align`)."""
    return align(reference, test, rate, max_lag_s).correlation


def _overlap(ref: Samples, tst: Samples, lag: int) -> tuple[Samples, Samples]:
    if lag >= 0:
        n = min(len(ref), len(tst) - lag)
        return ref[:n], tst[lag : lag + n]
    n = min(len(ref) + lag, len(tst))
    return ref[-lag : -lag + n], tst[:n]


def _pearson(a: Samples, b: Samples) -> float:
    if len(a) < 2:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b)) / denominator if denominator > 0 else 0.0
