"""Sensitive words (敏感词库): a multi-pattern matcher over normalised text, pure and built once.

Citizens and speech recognition do not spell threats the way a word list does: ``跳 楼``, full-width
``ｚｓ``, traditional ``跳樓``, the pinyin ``tiaolou`` or its initials ``tl``, a live transcript with no
punctuation at all. :func:`normalise` folds all of these onto one form (NFKC for full/half width,
lower case, a small traditional-to-simplified table written for the shipped words, and every space,
punctuation mark, symbol and control character dropped) and remembers where each kept character came
from, so a match reports its span and the words around it in the text as it was written.

One Aho-Corasick automaton (``pyahocorasick``) holds every word and its pinyin forms; a scan is one
pass. Context rules keep near misses quiet: a word's ``unless`` phrases (``跳楼价``, ``水管炸了``) cover
a hit that lies inside one of them, and a pinyin form counts only between non-letters (``zs`` in
``zsxx`` is not 自杀).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import ahocorasick
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SensitiveCategory = Literal[
    "self_harm", "violence", "mass_incident", "public_safety", "extreme_demand", "minor_at_risk"
]
Severity = Annotated[int, Field(ge=1, le=3)]
# 1: flag and show the agent; 2: raise the priority and alert the seat and supervisors; 3: also page
# a supervisor at once.
MAX_SEVERITY = 3

Phrase = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Pinyin = Annotated[str, StringConstraints(min_length=2, max_length=32, pattern=r"^[A-Za-z ]+$")]

# Traditional forms of the characters in the shipped words and their `unless` phrases (and of a few
# common ones around them). Not a converter: add a character here when a word that needs it is added.
TRADITIONAL: dict[str, str] = dict(
    zip(
        "樓殺農藥輕歸於盡報復擊訪橫圍聞縱說給褻丟關鎖價賣機過們這會個沒遊戲電話鍋氣兒讓頭勁彈燒門難",
        "楼杀农药轻归于尽报复击访横围闻纵说给亵丢关锁价卖机过们这会个没游戏电话锅气儿让头劲弹烧门难",
        strict=True,
    )
)


class SensitiveWord(BaseModel):
    """One entry of `[[sensitive.words]]`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    word: Phrase
    category: SensitiveCategory
    severity: Severity
    # Pinyin spellings and initials citizens type instead (`tiaolou`, `tl`); letters only.
    pinyin: tuple[Pinyin, ...] = ()
    # Phrases that contain the word and are harmless (跳楼价, 打击报复): a hit inside one does not fire.
    unless: tuple[Phrase, ...] = ()

    @model_validator(mode="after")
    def _normalisable(self) -> SensitiveWord:
        if not normalise(self.word).text:
            raise ValueError(f"word {self.word!r} is only spaces and punctuation")
        form = normalise(self.word).text
        for phrase in self.unless:
            if form not in normalise(phrase).text:
                raise ValueError(f"unless phrase {phrase!r} does not contain the word {self.word!r}")
        return self


@dataclass(frozen=True, slots=True)
class Normalised:
    """The folded text and, for each of its characters, the index of the character it came from."""

    text: str
    origin: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SensitiveMatch:
    """A word found: which, how bad, where in the original text (``start``/``end``), and around it."""

    word: str
    category: SensitiveCategory
    severity: int
    start: int
    end: int
    found: str
    context: str


def _dropped(char: str) -> bool:
    # Punctuation, separators (spaces), symbols (emoji, ~) and control characters: between the
    # characters of a word they only hide it.
    return unicodedata.category(char)[0] in "PZSC"


@functools.lru_cache(maxsize=8192)
def _fold(char: str) -> str:
    """One character folded (possibly to none or several); cached: a scan meets the same few
    thousand characters again and again, and NFKC per character is most of a scan's time."""
    folded = unicodedata.normalize("NFKC", char).lower()
    return "".join(TRADITIONAL.get(part, part) for part in folded if not _dropped(part))


def normalise(text: str) -> Normalised:
    """Full/half width, case, traditional characters and separators folded (see the module doc)."""
    parts = list(map(_fold, text))
    origin = [index for index, part in enumerate(parts) for _ in part]
    return Normalised("".join(parts), tuple(origin))


@dataclass(frozen=True, slots=True)
class _Form:
    entry: int  # index into the word list
    length: int  # of the folded form
    latin: bool  # a pinyin form: counts only between non-letters


def _is_letter(char: str) -> bool:
    return "a" <= unicodedata.normalize("NFKC", char).lower()[:1] <= "z"


class SensitiveMatcher:
    """Built once from the configured words (``scan`` never changes it); one automaton for all."""

    def __init__(self, words: Sequence[SensitiveWord], *, context_chars: int = 20, max_matches: int = 32) -> None:
        self._words = tuple(words)
        self._unless = tuple(tuple(normalise(phrase).text for phrase in word.unless) for word in self._words)
        self._context_chars = context_chars
        self._max_matches = max_matches
        self._automaton = ahocorasick.Automaton()
        forms: dict[str, list[_Form]] = {}
        for entry, word in enumerate(self._words):
            key = normalise(word.word).text
            forms.setdefault(key, []).append(_Form(entry, len(key), latin=False))
            for spelling in word.pinyin:
                key = normalise(spelling).text
                forms.setdefault(key, []).append(_Form(entry, len(key), latin=True))
        for key, found in forms.items():
            self._automaton.add_word(key, tuple(found))
        if forms:
            self._automaton.make_automaton()

    def scan(self, text: str) -> tuple[SensitiveMatch, ...]:
        """Every word in ``text`` that its context rules let fire, in order, one per word and place,
        at most ``max_matches``."""
        if not self._words:
            return ()
        folded = normalise(text)
        matches: dict[tuple[int, int], SensitiveMatch] = {}
        for last, found in self._automaton.iter(folded.text):
            for form in found:
                match = self._match(text, folded, form, last)
                if match is not None:
                    matches.setdefault((form.entry, match.start), match)
            if len(matches) >= self._max_matches:
                break
        return tuple(sorted(matches.values(), key=lambda m: (m.start, -m.severity)))[: self._max_matches]

    def _match(self, text: str, folded: Normalised, form: _Form, last: int) -> SensitiveMatch | None:
        start, end = last + 1 - form.length, last + 1
        if form.latin and not _stands_alone(text, folded.origin[start], folded.origin[last]):
            return None
        if any(_inside(folded.text, start, end, phrase) for phrase in self._unless[form.entry]):
            return None
        first, after = folded.origin[start], folded.origin[last] + 1
        word = self._words[form.entry]
        around = text[max(0, first - self._context_chars) : after + self._context_chars]
        return SensitiveMatch(word.word, word.category, word.severity, first, after, text[first:after], around)


def _stands_alone(text: str, first: int, last: int) -> bool:
    """A pinyin hit is not part of a longer run of letters in the text as written."""
    before = text[first - 1] if first > 0 else " "
    after = text[last + 1] if last + 1 < len(text) else " "
    return not _is_letter(before) and not _is_letter(after)


def _inside(folded: str, start: int, end: int, phrase: str) -> bool:
    """Whether an occurrence of ``phrase`` covers ``folded[start:end]``."""
    position = folded.find(phrase, max(0, end - len(phrase)))
    while position != -1 and position <= start:
        if position + len(phrase) >= end:
            return True
        position = folded.find(phrase, position + 1)
    return False
