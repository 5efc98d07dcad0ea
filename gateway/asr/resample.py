"""Streaming rational resampler for 16-bit mono PCM (numpy only; no audioop, which Python 3.13 drops).

Polyphase FIR: conceptually upsample by L (zero stuffing), low-pass with a Kaiser-windowed sinc, keep
every M-th sample. Only the products that touch real input samples are computed. The filter is
centred, so output sample n lines up with input time n / out_rate; the first outputs need no
"warm-up" and `finish()` flushes the tail, so a stream of N input samples gives exactly
ceil(N * L / M) output samples whatever the chunking (tests check chunk invariance).
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

HALF_TAPS = 16  # input samples each side of the output instant; 16 gives > 60 dB stop-band
KAISER_BETA = 8.0
ROLLOFF = 0.92  # pass-band edge as a fraction of the lower Nyquist frequency
BLOCK = 4096  # output samples computed per numpy pass


def _design(up: int, down: int) -> tuple[FloatArray, int]:
    """Polyphase table H[phase, tap] for the low-pass at the up-sampled rate, and taps per phase."""
    taps = 2 * HALF_TAPS * up + 1
    cutoff = ROLLOFF * 0.5 / max(up, down)  # cycles per up-sampled sample
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, KAISER_BETA) * up
    per_phase = -(-taps // up)
    padded = np.zeros(per_phase * up)
    padded[:taps] = h
    # Row p holds h[p], h[p + L], h[p + 2L], ...: the taps that meet input samples at phase p.
    return padded.reshape(per_phase, up).T.copy(), per_phase


class Resampler:
    """Stateful resampler: `process(pcm) -> pcm` any number of times, then `finish() -> pcm`."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("rates must be positive")
        g = gcd(in_rate, out_rate)
        self.in_rate, self.out_rate = in_rate, out_rate
        self.up, self.down = out_rate // g, in_rate // g
        self.passthrough = self.up == self.down
        self._table, self._taps = _design(self.up, self.down) if not self.passthrough else (np.zeros((1, 1)), 1)
        self._centre = (2 * HALF_TAPS * self.up) // 2  # filter delay in up-sampled samples
        # Input history with absolute index of its first sample; negative indices are silence.
        self._buf: FloatArray = np.zeros(0)
        self._base = 0
        self._received = 0
        self._produced = 0
        self._odd = b""

    def process(self, pcm: bytes) -> bytes:
        samples = self._samples(pcm)
        if self.passthrough:
            return bytes(samples.data)
        self._append(samples)
        return self._emit(final=False)

    def finish(self) -> bytes:
        """Flush the filter tail: the remaining outputs up to ceil(N * L / M)."""
        if self.passthrough:
            return b""
        return self._emit(final=True)

    def _samples(self, pcm: bytes) -> npt.NDArray[np.int16]:
        data = self._odd + pcm
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        return np.frombuffer(data[:cut], dtype="<i2")

    def _append(self, samples: npt.NDArray[np.int16]) -> None:
        self._buf = np.concatenate([self._buf, samples.astype(np.float64)])
        self._received += len(samples)

    def _emit(self, final: bool) -> bytes:
        last = self._last_output(final)
        pieces = []
        # Blocks bound the temporary (outputs x taps) matrices for long one-shot inputs.
        while self._produced <= last:
            pieces.append(self._block(min(last, self._produced + BLOCK - 1)))
        return b"".join(pieces)

    def _block(self, last: int) -> bytes:
        n = np.arange(self._produced, last + 1)
        t = n * self.down + self._centre  # position of the filter's end in up-sampled samples
        newest = t // self.up
        phase = t - newest * self.up
        idx = newest[:, None] - np.arange(self._taps)[None, :]
        window = self._gather(idx)
        out = np.einsum("ij,ij->i", self._table[phase], window)
        self._produced = last + 1
        self._trim()
        pcm: bytes = np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
        return pcm

    def _last_output(self, final: bool) -> int:
        """Index of the last output computable now: its newest input sample must have arrived."""
        if final:
            return -(-self._received * self.up // self.down) - 1
        # need (n*M + centre) // L <= received - 1
        return ((self._received * self.up - 1 - self._centre) // self.down) if self._received else -1

    def _gather(self, idx: npt.NDArray[np.int64]) -> FloatArray:
        rel = idx - self._base
        valid = (idx >= 0) & (rel >= 0) & (rel < len(self._buf))
        window = np.zeros(idx.shape)
        window[valid] = self._buf[rel[valid]]
        return window

    def _trim(self) -> None:
        # The next output's oldest input sample; everything before it is no longer needed.
        t = self._produced * self.down + self._centre
        oldest = t // self.up - self._taps + 1
        drop = min(max(0, oldest - self._base), len(self._buf))
        if drop:
            self._buf = self._buf[drop:]
            self._base += drop


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """One-shot convenience: the same result as streaming the whole buffer."""
    r = Resampler(in_rate, out_rate)
    return r.process(pcm) + r.finish()
