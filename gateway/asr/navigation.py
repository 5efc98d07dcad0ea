"""Navigation decision: recognized segments -> route, ask to confirm, or reject (pure, no I/O).

    accept   confidence >= thresholds.accept and one target clearly ahead: route the call there
    confirm  a keyword was heard but unsure (or two targets compete): ask
             "您要办理的是住房业务吗？是请按1" and route on the answer
    reject   nothing in-domain (silence, noise, filler, out-of-domain speech): general queue

Works on any engine's segments: the keyword is found in `Segment.text` by the table's phrases
(longest first), so Vosk dictation ("我 要 交税" -> "我要交税") and PocketSphinx grammar output are
decided the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.asr.engine import Segment

Action = Literal["accept", "confirm", "reject"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    accept: float = 0.5
    confirm: float = 0.12
    # A second target within this confidence of the best makes the answer ambiguous: confirm.
    margin: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 <= self.confirm <= self.accept <= 1.0:
            raise ValueError("need 0 <= confirm <= accept <= 1")


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    target: str | None
    keyword: str | None
    confidence: float
    evidence: dict[str, object] = field(default_factory=dict)


def find_keyword(text: str, table: Mapping[str, Iterable[str]]) -> tuple[str, str] | None:
    """(target, phrase) of the longest table phrase in `text`; earliest wins among equals."""
    best: tuple[int, int, str, str] | None = None
    for target, phrases in table.items():
        for phrase in phrases:
            at = text.find(phrase) if phrase else -1
            if at >= 0 and (best is None or (len(phrase), -at) > (best[0], -best[1])):
                best = (len(phrase), at, target, phrase)
    return (best[2], best[3]) if best else None


def _candidates(segments: Iterable[Segment], table: Mapping[str, Iterable[str]]) -> dict[str, tuple[float, str, str]]:
    """Best (confidence, keyword, text) per target over the final segments."""
    found: dict[str, tuple[float, str, str]] = {}
    for segment in segments:
        if not segment.final:
            continue  # partials are superseded by their utterance's final segment
        hit = find_keyword(segment.text, table)
        if hit is None:
            continue
        target, phrase = hit
        if target not in found or segment.confidence > found[target][0]:
            found[target] = (segment.confidence, phrase, segment.text)
    return found


def decide(segments: Iterable[Segment], table: Mapping[str, Iterable[str]], threshold: Thresholds) -> Decision:
    segments = list(segments)
    heard = [s.text for s in segments if s.final and s.text]
    found = _candidates(segments, table)
    evidence: dict[str, object] = {"heard": heard, "scores": {t: c[0] for t, c in found.items()}}
    if not found:
        reason = "no_speech" if not heard else "no_keyword"
        return Decision("reject", None, None, 0.0, {**evidence, "reason": reason})
    ranked = sorted(found.items(), key=lambda item: item[1][0], reverse=True)
    target, (confidence, keyword, _text) = ranked[0]
    if confidence < threshold.confirm:
        return Decision("reject", None, keyword, confidence, {**evidence, "reason": "low_confidence"})
    close = len(ranked) > 1 and confidence - ranked[1][1][0] < threshold.margin
    if close:
        return Decision("confirm", target, keyword, confidence, {**evidence, "reason": "ambiguous"})
    if confidence < threshold.accept:
        return Decision("confirm", target, keyword, confidence, {**evidence, "reason": "unsure"})
    return Decision("accept", target, keyword, confidence, {**evidence, "reason": "confident"})
