"""A fake recognizer for pool tests: deterministic, fast, optionally slow on purpose.

It 'recognizes' the number of bytes fed: every `step` bytes give one final segment whose text is the
running byte count, so a test can check exactly which audio reached which stream.
"""

from __future__ import annotations

import os
import time
from typing import Self

from gateway.asr.engine import Recognizer, Segment, Stream
from gateway.asr.settings import AsrSettings


class CountingStream(Stream):
    def __init__(self, sample_rate: int, delay: float) -> None:
        self.sample_rate = sample_rate
        self._bytes = 0
        self._delay = delay

    @property
    def seconds_fed(self) -> float:
        return self._bytes / 2 / self.sample_rate

    def feed(self, pcm: bytes) -> list[Segment]:
        if self._delay:
            time.sleep(self._delay)
        if pcm.startswith(b"BOOM"):
            raise ValueError("bad audio for this stream")
        self._bytes += len(pcm)
        t = self.seconds_fed
        return [Segment(str(self._bytes), str(self._bytes), 0.0, t, 1.0, False)]

    def finish(self) -> list[Segment]:
        t = self.seconds_fed
        return [Segment(f"total {self._bytes}", str(self._bytes), 0.0, t, 1.0, True)]


class CountingRecognizer(Recognizer):
    name = "counting"
    delay = 0.0

    @classmethod
    def load(cls, settings: AsrSettings) -> Self:
        return cls()

    def open(self, sample_rate: int) -> Stream:
        return CountingStream(sample_rate, self.delay)


class SlowRecognizer(CountingRecognizer):
    delay = 0.05


def counting(settings: AsrSettings) -> Recognizer:
    return CountingRecognizer.load(settings)


def slow(settings: AsrSettings) -> Recognizer:
    return SlowRecognizer.load(settings)


def dies(settings: AsrSettings) -> Recognizer:
    os._exit(3)  # like a native abort() inside a model loader: no exception, no message


def broken(settings: AsrSettings) -> Recognizer:
    raise RuntimeError("model file is corrupt")
