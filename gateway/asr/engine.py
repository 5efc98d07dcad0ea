"""One streaming recognizer interface for every engine.

    recognizer = load_recognizer(settings)         # once per process: loads the model
    stream = recognizer.open(sample_rate=8000)      # once per call leg (or per prompt)
    segments = stream.feed(pcm)                     # 16-bit LE mono PCM, any chunk size
    segments += stream.finish()                     # flushes; the stream is then closed

`feed` returns partial segments (`final=False`, the engine's current guess, replaced by later ones)
and final segments (`final=True`, one per utterance). Nothing here does I/O beyond what an engine's
own model loading needs; engines resample to their model's rate themselves, so callers pass what the
line gives them (8 kHz telephony, 16 kHz wideband, a WAV file's rate).

Exception tree (all are `gateway.errors.GatewayError`):

    AsrError
    ├── AsrUnavailable       the engine or its model is not installed: live recognition is off
    ├── AudioFormatError     the caller's audio is not what we accept (empty, not WAV, 8-bit, ...)
    └── GrammarError         the navigation table cannot be turned into a grammar
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from gateway.asr.resample import Resampler
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.asr.settings import AsrSettings

SAMPLE_WIDTH = 2  # bytes: every stream takes 16-bit little-endian mono PCM


class AsrError(GatewayError):
    code = "asr_error"


class AsrUnavailable(AsrError):
    """No engine or no model: the caller falls back to DTMF menus / recording-only intake."""

    code = "asr_unavailable"
    http_status = 503
    sip_status = None  # never refuses a call: it is answered and recorded, transcribed later


class AudioFormatError(AsrError):
    """The audio given to us is malformed or in a format we do not take; the message says which."""

    code = "bad_audio"
    http_status = 400
    sip_status = None  # audio given to `transcribe`, not a call


class GrammarError(AsrError):
    code = "bad_grammar"


@dataclass(frozen=True, slots=True)
class Segment:
    """One recognized stretch of a stream.

    `text` is post-processed Chinese (tokens joined, filler removed); `raw` is what the engine said.
    `start`/`end` are seconds from the first byte fed to the stream. `confidence` is 0..1 and its
    meaning is engine-specific but monotonic (see docs/asr.md). Partial segments (`final=False`)
    are superseded by the next segment of the same utterance.
    """

    text: str
    raw: str
    start: float
    end: float
    confidence: float
    final: bool
    # Engine-specific numbers behind `confidence` (scores, word list): for logs and tuning only.
    detail: dict[str, object] = field(default_factory=dict, compare=False, hash=False)


class Stream(abc.ABC):
    """One call leg's recognition state. Not thread-safe: one caller feeds it."""

    sample_rate: int

    @abc.abstractmethod
    def feed(self, pcm: bytes) -> list[Segment]:
        """Take 16-bit LE mono PCM at `sample_rate`; return segments that became available."""

    @abc.abstractmethod
    def finish(self) -> list[Segment]:
        """End of audio: flush and return the remaining (final) segments. The stream is closed."""

    @property
    @abc.abstractmethod
    def seconds_fed(self) -> float:
        """Audio consumed so far, in seconds of the input rate."""


class Recognizer(abc.ABC):
    """An engine with its model loaded; opens any number of streams (see each engine for limits)."""

    name: str

    @classmethod
    @abc.abstractmethod
    def load(cls, settings: AsrSettings) -> Self:
        """Load the model once per process. Raises AsrUnavailable when engine or model is missing."""

    @abc.abstractmethod
    def open(self, sample_rate: int) -> Stream:
        """A new stream for audio at `sample_rate` (8000..48000 Hz)."""

    def prepare(self, streams: int) -> None:  # noqa: B027 - optional hook
        """Make `streams` concurrent streams cheap to open (pool workers call this after load)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most engines free memory on GC
        """Release the model (optional)."""


MIN_RATE = 8000
MAX_RATE = 48000


def check_rate(sample_rate: int) -> int:
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioFormatError(f"sample rate {sample_rate} Hz not supported: use {MIN_RATE}..{MAX_RATE} Hz")
    return sample_rate


class PcmFramer:
    """Cuts a byte stream of any chunking into whole frames of `frame_bytes`.

    Keeps an odd trailing byte (half a sample) until the next chunk, so callers may split PCM anywhere.
    """

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0 or frame_bytes % SAMPLE_WIDTH:
            raise ValueError("frame_bytes must be a positive multiple of 2")
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        self._pending += pcm
        usable = len(self._pending) - len(self._pending) % self.frame_bytes
        frames = [bytes(self._pending[i : i + self.frame_bytes]) for i in range(0, usable, self.frame_bytes)]
        del self._pending[:usable]
        return frames

    def rest(self) -> bytes:
        """What is left at end of stream, cut to whole samples (a lone odd byte is dropped)."""
        tail = bytes(self._pending[: len(self._pending) - len(self._pending) % SAMPLE_WIDTH])
        self._pending.clear()
        return tail


class FramedStream(Stream):
    """A stream whose engine takes fixed-size frames at its model's rate: the caller's audio is
    counted, resampled and cut into frames here, and each frame handed to `_frame`."""

    def __init__(self, sample_rate: int, model_rate: int, frame_bytes: int) -> None:
        self.sample_rate = sample_rate
        self._resampler = Resampler(sample_rate, model_rate) if sample_rate != model_rate else None
        self._framer = PcmFramer(frame_bytes)
        self._bytes_in = 0

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """`finish` was called: the stream takes no more audio."""

    @abc.abstractmethod
    def _frame(self, frame: bytes) -> list[Segment]:
        """One frame at the model's rate to the engine; the segments it made available."""

    @property
    def seconds_fed(self) -> float:
        return self._bytes_in / 2 / self.sample_rate

    def feed(self, pcm: bytes) -> list[Segment]:
        if self.finished:
            raise RuntimeError("stream is finished")
        self._bytes_in += len(pcm)
        return self._frames(self._resampler.process(pcm) if self._resampler else pcm)

    def _flush(self) -> tuple[list[Segment], bytes]:
        """At the end: the segments of the resampler's last audio, and what is left short of a frame."""
        segments = self._frames(self._resampler.finish() if self._resampler else b"")
        return segments, self._framer.rest()

    def _frames(self, audio: bytes) -> list[Segment]:
        return [segment for frame in self._framer.push(audio) for segment in self._frame(frame)]


def load_recognizer(settings: AsrSettings) -> Recognizer:
    """The engine named by `settings.engine`, loaded. Imports engines lazily (optional wheels)."""
    if settings.engine == "pocketsphinx":
        from gateway.asr.pocketsphinx_engine import PocketSphinxRecognizer

        return PocketSphinxRecognizer.load(settings)
    if settings.engine == "vosk":
        from gateway.asr.vosk_engine import VoskRecognizer

        return VoskRecognizer.load(settings)
    raise AsrUnavailable(f"unknown ASR engine {settings.engine!r}")
