"""PocketSphinx engine: closed-grammar navigation with the CMU Sphinx Mandarin 8 kHz model.

Each stream owns two decoders fed the same audio:

* the *grammar* decoder runs the navigation JSGF (keywords + optional lead-in/ending + a phone-loop
  filler path for out-of-grammar speech, see `grammar.py`);
* the *background* decoder runs a free phone loop (`allphone` search), the best any phone sequence
  can do on this audio.

Confidence is the per-frame log-likelihood ratio of the two acoustic scores, squashed to 0..1:
a keyword that really was said costs little against the free phone loop; a keyword forced onto
other speech costs a lot. See docs/asr.md for the definition and the measured separation.

The audio is cut into utterances by PocketSphinx's `Endpointer` (WebRTC-style VAD): silence never
reaches the decoders (so silence gives no segment), and each utterance ends with a final segment.
Decoders are expensive to create (~0.3 s, ~20 MB each), so the recognizer keeps a free list and a
finished stream returns its pair; a process therefore serves any number of sequential streams.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from gateway.asr.engine import AsrUnavailable, FramedStream, Recognizer, Segment, check_rate
from gateway.asr.grammar import Grammar, build_grammar, is_filler
from gateway.asr.settings import AsrSettings

if TYPE_CHECKING:
    from pocketsphinx import Decoder, Endpointer

log = logging.getLogger("gateway.asr")

MODEL_RATE = 8000
FRAME_RATE = 100  # feature frames per second (10 ms shift)
HMM_DIR = "tdt_sc_8k"
MIN_ASCORE = 1e-300  # the binding returns exp(score); guard against underflow to 0 on long silences


@dataclass(frozen=True, slots=True)
class ModelFiles:
    hmm: Path
    dictionary: Path

    @classmethod
    def find(cls, settings: AsrSettings) -> ModelFiles:
        root = settings.pocketsphinx_dir()
        files = cls(hmm=root / HMM_DIR, dictionary=root / settings.pocketsphinx_dict)
        missing = [str(p) for p in (files.hmm / "mdef", files.hmm / "means", files.dictionary) if not p.exists()]
        if missing:
            raise AsrUnavailable(
                f"PocketSphinx Mandarin model not found: missing {', '.join(missing)}. Set "
                "POCKETSPHINX_MODEL_PATH (or asr.pocketsphinx_model_path) to the folder holding "
                f"{HMM_DIR}/ and {settings.pocketsphinx_dict} (the team's copy: "
                "shared/models/pocketsphinx-zh-tdt_sc_8k, see its SOURCE.md)."
            )
        return files


def read_dictionary(path: Path) -> tuple[set[str], list[str]]:
    """Dictionary words (alternate pronunciations `word(2)` folded) and every phone they use."""
    words: set[str] = set()
    phones: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) < 2:
                continue
            words.add(parts[0].split("(", 1)[0])
            phones.update(parts[1:])
    return words, sorted(phones)


def _import_pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as exc:
        raise AsrUnavailable("the pocketsphinx package is not installed: `pip install 'pocketsphinx>=5.0,<6'`") from exc
    return pocketsphinx


def write_subset(dictionary: Path, words: frozenset[str], out: Path) -> Path:
    """The dictionary lines for `words` only: decoders then load in ~0.1 s instead of ~0.4 s."""
    with dictionary.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        dst.writelines(line for line in src if line.split(maxsplit=1)[0].split("(", 1)[0] in words)
    return out


class DecoderPair:
    """A grammar decoder and a background phone-loop decoder, used by one stream at a time."""

    def __init__(self, files: ModelFiles, grammar: Grammar) -> None:
        ps = _import_pocketsphinx()
        self.grammar = self._decoder(ps, files)
        extra = list(grammar.extra_words.items())
        for i, (word, phone) in enumerate(extra):
            # Rebuilding the search after every word is slow: update only with the last one.
            self.grammar.add_word(word, phone, i == len(extra) - 1)
        self.grammar.add_jsgf_string("navigation", grammar.jsgf)
        self.grammar.activate_search("navigation")
        self.background = self._decoder(ps, files)
        self.background.add_allphone_file("phones", None)
        self.background.activate_search("phones")
        self.logmath = self.grammar.logmath

    @staticmethod
    def _decoder(ps: Any, files: ModelFiles) -> Decoder:
        # bestpath=False: FSG bestpath rescoring drops the final word (SOURCE.md); booleans must be
        # real bools in pocketsphinx 5 ("no" would count as True).
        decoder: Decoder = ps.Decoder(
            hmm=str(files.hmm),
            dict=str(files.dictionary),
            samprate=MODEL_RATE,
            nfft=256,
            remove_noise=True,
            bestpath=False,
            loglevel="FATAL",
        )
        return decoder

    def start(self) -> None:
        self.grammar.start_utt()
        self.background.start_utt()

    def process(self, pcm: bytes) -> None:
        self.grammar.process_raw(pcm, False, False)
        self.background.process_raw(pcm, False, False)

    def end(self) -> None:
        self.grammar.end_utt()
        self.background.end_utt()


class PocketSphinxRecognizer(Recognizer):
    name = "pocketsphinx"

    def __init__(self, settings: AsrSettings, files: ModelFiles, grammar: Grammar) -> None:
        self.settings = settings
        self.files = files
        self.grammar = grammar
        self._free: list[DecoderPair] = []
        self._lock = threading.Lock()
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def load(cls, settings: AsrSettings) -> Self:
        _import_pocketsphinx()
        files = ModelFiles.find(settings)
        words, phones = read_dictionary(files.dictionary)
        g = settings.grammar
        grammar = build_grammar(
            g.table,
            words,
            g.lead_ins,
            g.endings,
            filler_phones=[p for p in phones if p != "SIL"] if g.filler else [],
            filler_weight=g.filler_weight,
        )
        if grammar.missing:
            log.warning(
                "navigation phrases not in the PocketSphinx dictionary (dropped): %s",
                ", ".join(f"{phrase} [{chars}]" for phrase, chars in grammar.missing.items()),
            )
        # The decoders read a dictionary of the grammar's words only, written once per process.
        scratch = tempfile.TemporaryDirectory(prefix="hg-asr-")
        small = write_subset(files.dictionary, grammar.words, Path(scratch.name) / "grammar.dic")
        recognizer = cls(settings, ModelFiles(files.hmm, small), grammar)
        recognizer._scratch = scratch
        recognizer._release(DecoderPair(recognizer.files, grammar))  # fail at start, not on a call
        return recognizer

    def prepare(self, streams: int) -> None:
        with self._lock:
            missing = streams - len(self._free)
        for _ in range(missing):
            self._release(DecoderPair(self.files, self.grammar))

    def close(self) -> None:
        with self._lock:
            self._free.clear()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def open(self, sample_rate: int) -> PocketSphinxStream:
        check_rate(sample_rate)
        with self._lock:
            pair = self._free.pop() if self._free else None
        return PocketSphinxStream(self, pair or DecoderPair(self.files, self.grammar), sample_rate)

    def _release(self, pair: DecoderPair) -> None:
        with self._lock:
            self._free.append(pair)

    def keyword_of(self, words: list[str]) -> tuple[str, str] | None:
        """(target, phrase) for a decoded word sequence, by the grammar's token map."""
        joined = " ".join(words)
        for tokens in sorted(self.grammar.keywords, key=len, reverse=True):
            if f" {tokens} " in f" {joined} ":
                return self.grammar.keywords[tokens]
        return None


class PocketSphinxStream(FramedStream):
    def __init__(self, recognizer: PocketSphinxRecognizer, pair: DecoderPair, sample_rate: int) -> None:
        ps = _import_pocketsphinx()
        settings = recognizer.settings
        self._recognizer = recognizer
        self._pair: DecoderPair | None = pair
        self._endpointer: Endpointer = ps.Endpointer(
            window=settings.endpoint_window, ratio=settings.endpoint_ratio, sample_rate=MODEL_RATE
        )
        super().__init__(sample_rate, MODEL_RATE, self._endpointer.frame_bytes)
        self._chunk_bytes = MODEL_RATE * 2 * settings.chunk_ms // 1000
        self._speech = bytearray()
        self._in_utterance = False
        self._utterance_start = 0.0
        self._last_partial = ""

    @property
    def finished(self) -> bool:
        return self._pair is None

    def finish(self) -> list[Segment]:
        if self._pair is None:
            return []
        out, rest = self._flush()
        if self._endpointer.in_speech:
            # end_stream rejects an empty buffer; one silent sample flushes the same queue.
            speech = self._endpointer.end_stream(rest or b"\x00\x00")
            if speech:
                out += self._speech_data(speech)
        if self._in_utterance:
            out += self._end_utterance(max(self._utterance_start, self.seconds_fed))
        pair, self._pair = self._pair, None
        self._recognizer._release(pair)
        return out

    def _frame(self, frame: bytes) -> list[Segment]:
        speech = self._endpointer.process(frame)
        if speech is None:
            return []
        out = self._speech_data(speech)
        if not self._endpointer.in_speech:  # this frame closed the speech region
            out += self._end_utterance(self._endpointer.speech_end)
        return out

    def _speech_data(self, speech: bytes) -> list[Segment]:
        assert self._pair is not None
        if not self._in_utterance:
            self._in_utterance = True
            self._utterance_start = self._endpointer.speech_start
            self._last_partial = ""
            self._pair.start()
        self._speech += speech
        if len(self._speech) < self._chunk_bytes:
            return []
        self._pair.process(bytes(self._speech))
        self._speech.clear()
        return self._partial()

    def _partial(self) -> list[Segment]:
        segment = self._segment(0.0, final=False)
        if segment is None or not segment.text or segment.text == self._last_partial:
            return []
        self._last_partial = segment.text
        return [segment]

    def _end_utterance(self, end: float) -> list[Segment]:
        assert self._pair is not None
        if self._speech:
            self._pair.process(bytes(self._speech))
            self._speech.clear()
        self._pair.end()
        self._in_utterance = False
        segment = self._segment(end, final=True)
        return [segment] if segment is not None else []

    def _segment(self, end: float, final: bool) -> Segment | None:
        assert self._pair is not None
        words = _words(self._pair)
        scores = _scores(self._pair)
        if words is None:
            # No path reached the grammar's end: nothing in-grammar was said (noise, a cough).
            if not final:
                return None
            words, scores["llr"] = [], -math.inf
        spoken = [w for w in words if not is_filler(w)]
        keyword = self._recognizer.keyword_of(spoken)
        confidence = self._confidence(scores["llr"]) if keyword else 0.0
        detail: dict[str, object] = {**scores, "words": words}
        if keyword:
            detail["target"], detail["keyword"] = keyword
        start = self._utterance_start
        # A partial ends where decoding has got to; a final where the endpointer closed the speech.
        decoded_end = start + scores["frames"] / FRAME_RATE
        return Segment(
            text="".join(spoken),
            raw=" ".join(words),
            start=round(start, 3),
            end=round(end if final else decoded_end, 3),
            confidence=confidence,
            final=final,
            detail=detail,
        )

    def _confidence(self, llr: float) -> float:
        c = self._recognizer.settings.confidence
        z = (llr - c.center) / c.scale
        return round(1.0 / (1.0 + math.exp(-z)), 4) if z > -700 else 0.0


def _words(pair: DecoderPair) -> list[str] | None:
    if pair.grammar.hyp() is None:
        return None
    return [s.word for s in pair.grammar.seg()]


def _log_total(pair: DecoderPair, decoder: Decoder) -> tuple[float, int]:
    """Summed acoustic log score (decoder units) and the frames spent outside silence/filler noise."""
    total, speech_frames = 0.0, 0
    for seg in decoder.seg() or ():
        total += pair.logmath.log(max(seg.ascore, MIN_ASCORE))
        if not seg.word.startswith(("<", "(", "+", "[")):
            speech_frames += seg.end_frame - seg.start_frame + 1
    return total, speech_frames


def _scores(pair: DecoderPair) -> dict[str, float]:
    grammar_score, speech_frames = _log_total(pair, pair.grammar)
    background_score, _ = _log_total(pair, pair.background)
    frames = max(1, pair.grammar.n_frames())
    # Normalise by speech frames: silence scores alike in both decoders and would dilute the ratio.
    llr = (grammar_score - background_score) / max(1, speech_frames)
    return {"llr": round(llr, 2), "frames": float(frames), "speech_frames": float(speech_frames)}
