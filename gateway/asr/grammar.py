"""Navigation grammar: keyword/synonym table -> JSGF for PocketSphinx (pure, no I/O).

    public <utt> = [<lead>] (/1/ <kw> | /w/ <filler>) [<end>];

Every phrase is split into the model's dictionary words by greedy longest match (the Mandarin
dictionary has 住房 and 企业 but not 企业服务, so 企业服务 becomes `企业 服务`). A phrase with a
character that no dictionary word covers cannot be recognized at all; it is reported in
`Grammar.missing` (and the build fails when a target is left with no phrase).

The filler is a loop of one-phone "words" (`ph_a`, `ph_zh`, ... and the model's +GARBAGE+ phone):
out-of-grammar speech can leave through it instead of being forced onto the nearest keyword. Its
entry weight `w` is tiny because a phone loop fits *any* audio at least as well as a keyword does;
the weight is the prior that makes a keyword win when it fits nearly as well.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gateway.asr.engine import GrammarError

FILLER_PREFIX = "ph_"
GARBAGE_WORD = "ph_garbage"
MAX_WORD_CHARS = 8  # longest dictionary word tried by the tokenizer


@dataclass(frozen=True, slots=True)
class Grammar:
    jsgf: str
    # Dictionary token sequence ("企业 服务") -> (target, phrase as written in the table).
    keywords: dict[str, tuple[str, str]]
    # Phrases that could not be split into dictionary words, with the characters at fault.
    missing: dict[str, str]
    # Words the decoder needs that the dictionary lacks and the caller must add (the filler phones).
    extra_words: dict[str, str]
    # Every dictionary word the grammar uses (to load a small dictionary instead of 97,000 entries).
    words: frozenset[str] = frozenset()


def tokenize(phrase: str, lexicon: Collection[str]) -> list[str] | None:
    """Greedy longest-match split of `phrase` into lexicon words; None if some character is uncovered."""
    tokens: list[str] = []
    i = 0
    while i < len(phrase):
        for size in range(min(MAX_WORD_CHARS, len(phrase) - i), 0, -1):
            if phrase[i : i + size] in lexicon:
                tokens.append(phrase[i : i + size])
                i += size
                break
        else:
            return None
    return tokens


def uncovered(phrase: str, lexicon: Collection[str]) -> str:
    """The characters of `phrase` that are not themselves dictionary words (for error messages)."""
    return "".join(ch for ch in phrase if ch not in lexicon)


def _alternatives(phrases: list[str], lexicon: Collection[str], missing: dict[str, str]) -> list[str]:
    out = []
    for phrase in phrases:
        tokens = tokenize(phrase, lexicon)
        if tokens is None:
            missing[phrase] = uncovered(phrase, lexicon) or phrase
        elif " ".join(tokens) not in out:
            out.append(" ".join(tokens))
    return out


def _keywords(
    table: Mapping[str, list[str]], lexicon: Collection[str], missing: dict[str, str]
) -> dict[str, tuple[str, str]]:
    keywords: dict[str, tuple[str, str]] = {}
    for target, phrases in table.items():
        found = 0
        for phrase in phrases:
            for tokens in _alternatives([phrase], lexicon, missing):
                if tokens in keywords and keywords[tokens][0] != target:
                    raise GrammarError(f"phrase {phrase!r} is listed for both {keywords[tokens][0]} and {target}")
                keywords[tokens] = (target, phrase)
                found += 1
        if not found:
            raise GrammarError(
                f"target {target!r}: none of {phrases} is in the dictionary (missing: "
                + ", ".join(f"{p} [{missing.get(p, '?')}]" for p in phrases)
                + ")"
            )
    return keywords


def build_grammar(
    table: Mapping[str, list[str]],
    lexicon: Collection[str],
    lead_ins: Sequence[str] = (),
    endings: Sequence[str] = (),
    filler_phones: Sequence[str] = (),
    filler_weight: float = 1e-30,
) -> Grammar:
    """JSGF for one navigation question. `lexicon` is the set of dictionary words."""
    if not table:
        raise GrammarError("empty navigation table")
    missing: dict[str, str] = {}
    keywords = _keywords(table, lexicon, missing)
    lead = _alternatives(list(lead_ins), lexicon, missing)
    end = _alternatives(list(endings), lexicon, missing)
    rules = [f"<kw> = {' | '.join(keywords)};"]
    body = "<kw>"
    extra: dict[str, str] = {}
    if filler_phones:
        extra = {FILLER_PREFIX + p: p for p in filler_phones}
        extra[GARBAGE_WORD] = "+GARBAGE+"
        body = f"(/1/ <kw> | /{filler_weight:g}/ <filler>)"
        rules += ["<filler> = <g>+;", f"<g> = {' | '.join(extra)};"]
    if lead:
        rules.append(f"<lead> = {' | '.join(lead)};")
        body = f"[<lead>] {body}"
    if end:
        rules.append(f"<end> = {' | '.join(end)};")
        body = f"{body} [<end>]"
    jsgf = "\n".join(["#JSGF V1.0;", "grammar navigation;", f"public <utt> = {body};", *rules]) + "\n"
    used = frozenset(token for alt in [*keywords, *lead, *end] for token in alt.split())
    return Grammar(jsgf=jsgf, keywords=keywords, missing=missing, extra_words=extra, words=used)


def is_filler(word: str) -> bool:
    """Filler-loop words and the decoder's own noise/silence words carry no text."""
    return word.startswith((FILLER_PREFIX, "<", "(", "[", "+"))
