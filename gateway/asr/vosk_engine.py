"""Vosk engine: open Mandarin dictation (vosk-model-small-cn-0.22 or vosk-model-cn-0.22).

The `vosk` wheel is imported only when the engine is loaded, and the model folder is checked before
Kaldi sees it: without a model, `VoskRecognizer.load` raises `AsrUnavailable` saying that live
dictation is off and how to install the model. It never crashes or hangs the process.

The JSON parsing and the framing/resampling are plain functions tested without the model.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from gateway.asr.engine import AsrUnavailable, FramedStream, Recognizer, Segment, check_rate
from gateway.asr.settings import AsrSettings
from gateway.asr.text import join_tokens, normalize

DEFAULT_MODEL_RATE = 16000
MODEL_PAGE = "https://alphacephei.com/vosk/models"
# Git blob ids (sha1 of "blob <len>\0<content>") of the official vosk-model-small-cn-0.22 files, as
# listed in shared/models/MISSING-vosk-model-small-cn-0.22.md; `verify_model` compares against them.
OFFICIAL_BLOBS = {
    "README": "0b5d9e51c73727f41e2fffd02e94ea097e9e7f08",
    "am/final.mdl": "f7cf1de81a9b41dc310a8f7012720b8d69033a10",
    "conf/mfcc.conf": "12fdad4ed91d2e9fad69ef486f3b4fae612d4ad2",
    "conf/model.conf": "9ae12a7d1f3fbbf4defb2b7c98d7eea4421208d0",
    "graph/Gr.fst": "ee4580d20e58fcd986d5a289dcab57dd21367eff",
    "graph/HCLr.fst": "2ad6e8f7b9d611040ffbe77a29c0a23ec5f27447",
    "graph/disambig_tid.int": "c1a114fc9fb5d3b253f44580d7879cbbf6ed653a",
    "graph/phones/word_boundary.int": "9f3713e91e9c6262da3d659d34afa14dd24d3a13",
    "ivector/final.dubm": "bcf26895711f44caabcddbee22e7b0725826b344",
    "ivector/final.ie": "e1d78a203c476104e9b35a2bd93f3f48ce3b6294",
    "ivector/final.mat": "1093236cc3eefa5f5e47d69dcd04a85cd715ff58",
    "ivector/global_cmvn.stats": "500cc408f8375a752c602233baf35695f43acfa7",
    "ivector/online_cmvn.conf": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    "ivector/splice.conf": "960cd2e4c23521e5aecdd6627209c79a693073ff",
}
REQUIRED = ("am/final.mdl", "conf/model.conf")
_MODELS: dict[Path, Any] = {}  # loaded vosk.Model per model folder, shared by recognizers
_RATE = re.compile(r"--sample-frequency=(\d+)")


def install_hint(reason: str) -> str:
    blobs = "\n".join(f"    {blob}  {name}" for name, blob in OFFICIAL_BLOBS.items())
    return (
        f"Vosk model unavailable ({reason}): live dictation is off. To turn it on, download "
        f"vosk-model-small-cn-0.22 (42 MB zip, 43,898,754 bytes) or vosk-model-cn-0.22 (1.3 GB) from "
        f"{MODEL_PAGE}, unzip it and set VOSK_MODEL_PATH (or asr.vosk_model_path) to the unzipped "
        "folder. Check a small-cn copy with `git hash-object <file>` against these git blob ids:\n"
        f"{blobs}"
    )


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def verify_model(root: Path) -> dict[str, str]:
    """Files of a small-cn copy whose blob id differs from the official one: {file: problem}."""
    problems = {}
    for name, blob in OFFICIAL_BLOBS.items():
        path = root / name
        if not path.exists():
            problems[name] = "missing"
        elif git_blob_id(path.read_bytes()) != blob:
            problems[name] = "differs from the official file"
    return problems


def model_rate(root: Path) -> int:
    """The model's sample rate from conf/mfcc.conf (Kaldi's default 16 kHz when absent)."""
    conf = root / "conf" / "mfcc.conf"
    match = _RATE.search(conf.read_text(encoding="utf-8", errors="replace")) if conf.exists() else None
    return int(match.group(1)) if match else DEFAULT_MODEL_RATE


def supports_phrase_hints(root: Path) -> bool:
    """Runtime grammars need a lookahead graph (HCLr.fst + Gr.fst); HCLG-only models ignore them."""
    return (root / "graph" / "Gr.fst").exists() and (root / "graph" / "HCLr.fst").exists()


def check_model_dir(root: Path | None) -> Path:
    if root is None:
        raise AsrUnavailable(install_hint("VOSK_MODEL_PATH is not set"))
    if not root.is_dir():
        raise AsrUnavailable(install_hint(f"{root} is not a folder"))
    missing = [name for name in REQUIRED if not (root / name).exists()]
    if not (root / "graph").is_dir():
        missing.append("graph/")
    if missing:
        raise AsrUnavailable(install_hint(f"{root} lacks {', '.join(missing)}"))
    return root


# --- Vosk JSON results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoskWord:
    word: str
    start: float
    end: float
    conf: float


def parse_result(payload: str, since: float = 0.0, final: bool = True) -> Segment | None:
    """A `Result()`/`FinalResult()` JSON string -> final Segment, or None for an empty utterance.

    With SetWords(True): {"result": [{"conf": 0.98, "end": 1.02, "start": 0.6, "word": "我"}, ...],
    "text": "我 要 投诉"}; without words only {"text": ...}. Times are from the stream's start.
    """
    data = json.loads(payload)
    raw = str(data.get("text", "")).strip()
    words = [_word(item) for item in data.get("result", []) if isinstance(item, dict)]
    if not raw and not words:
        return None
    raw = raw or " ".join(w.word for w in words)
    start = words[0].start if words else since
    end = words[-1].end if words else since
    confidence = sum(w.conf for w in words) / len(words) if words else 1.0
    detail: dict[str, object] = {"words": [(w.word, w.start, w.end, w.conf) for w in words]}
    return Segment(normalize(raw), raw, round(start, 3), round(end, 3), round(confidence, 4), final, detail)


def parse_partial(payload: str, since: float, now: float) -> Segment | None:
    """A `PartialResult()` JSON string ({"partial": "我 要"}) -> partial Segment, None if empty."""
    raw = str(json.loads(payload).get("partial", "")).strip()
    if not raw:
        return None
    return Segment(join_tokens(raw), raw, round(since, 3), round(now, 3), 0.0, False)


def _word(item: dict[str, Any]) -> VoskWord:
    return VoskWord(
        word=str(item.get("word", "")),
        start=float(item.get("start", 0.0)),
        end=float(item.get("end", 0.0)),
        conf=min(1.0, max(0.0, float(item.get("conf", 1.0)))),
    )


# --- engine ------------------------------------------------------------------------------------


def _import_vosk() -> Any:
    try:
        import vosk
    except ImportError as exc:  # the wheel is optional: PocketSphinx navigation works without it
        raise AsrUnavailable("the vosk package is not installed (`pip install 'vosk>=0.3.45,<0.4'`)") from exc
    except OSError as exc:  # libvosk.so failed to load (wrong platform/glibc)
        raise AsrUnavailable(f"the vosk library cannot load here: {exc}") from exc
    return vosk


class VoskRecognizer(Recognizer):
    name = "vosk"

    def __init__(self, settings: AsrSettings, model: Any, root: Path, vosk: Any) -> None:
        self.settings = settings
        self.model = model
        self.root = root
        self.rate = model_rate(root)
        self._vosk = vosk
        self.grammar = (
            json.dumps([*settings.phrase_hints, "[unk]"], ensure_ascii=False)
            if settings.phrase_hints and supports_phrase_hints(root)
            else None
        )

    @classmethod
    def load(cls, settings: AsrSettings) -> Self:
        root = check_model_dir(settings.vosk_dir())
        vosk = _import_vosk()
        key = root.resolve()
        if key not in _MODELS:  # one model per process: the big one is 1.3 GB
            vosk.SetLogLevel(-1)
            try:
                _MODELS[key] = vosk.Model(str(root))
            except Exception as exc:  # Kaldi reports a corrupt file as a bare Exception
                raise AsrUnavailable(install_hint(f"{root} failed to load: {exc}")) from exc
        return cls(settings, _MODELS[key], root, vosk)

    def open(self, sample_rate: int) -> VoskStream:
        check_rate(sample_rate)
        args = (self.model, float(self.rate)) + ((self.grammar,) if self.grammar else ())
        kaldi = self._vosk.KaldiRecognizer(*args)
        kaldi.SetWords(True)
        return VoskStream(kaldi, sample_rate, self.rate, self.settings.chunk_ms)


class VoskStream(FramedStream):
    """Feeds a KaldiRecognizer in chunk_ms frames at the model's rate (resampled here, not by Kaldi)."""

    def __init__(self, kaldi: Any, sample_rate: int, rate: int, chunk_ms: int) -> None:
        super().__init__(sample_rate, rate, rate * 2 * chunk_ms // 1000)
        self._kaldi = kaldi
        self._rate = rate
        self._model_bytes = 0
        self._utterance_start = 0.0
        self._last_partial = ""
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done

    def finish(self) -> list[Segment]:
        if self._done:
            return []
        out, rest = self._flush()
        if rest:
            out += self._frame(rest)
        self._done = True
        final = parse_result(self._kaldi.FinalResult(), self._utterance_start)
        return out + ([final] if final else [])

    def _frame(self, frame: bytes) -> list[Segment]:
        self._model_bytes += len(frame)
        now = self._model_bytes / 2 / self._rate
        if self._kaldi.AcceptWaveform(frame):
            segment = parse_result(self._kaldi.Result(), self._utterance_start)
            self._utterance_start, self._last_partial = now, ""
            return [segment] if segment else []
        partial = parse_partial(self._kaldi.PartialResult(), self._utterance_start, now)
        if partial is None or partial.text == self._last_partial:
            return []
        self._last_partial = partial.text
        return [partial]
