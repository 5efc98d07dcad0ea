"""Dispatch suggestion (分派目录): the three catalogue categories a contact most likely belongs to,
each with its department, a score and the words that weighed most.

Pure: `train` builds a frozen `DispatchModel` from the catalogue and labelled examples (once, at
start); `suggest` ranks the categories for one text. No segmentation and no model download:
character n-grams (1 to 3) carry the signal, which also survives what speech recognition does
to a sentence (no punctuation, a homophone in one character of a word leaves its other n-grams).

A multinomial naive Bayes classifier over n-gram counts ranks the categories. It is trained on
the labelled contacts and on the catalogue's own words (description and name, and each keyword
seed counted as KEYWORD_WEIGHT examples, so a category with few examples stays reachable). The
words named as evidence are the text's n-grams that favour the category most, weighted by their
inverse document frequency over the categories, so that a phrase every category uses (我们那个,
到现在) is not named. A BM25 ranking blended in measured worse (docs/triage.md), so it is not.
The scores are one matrix product (numpy) over the text's known n-grams.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.ticket import Suggestion
from gateway.triage.catalogue import Category, Example

TOP = 3
EVIDENCE = 4  # n-grams named per suggestion
MAX_GRAM = 3
ALPHA = 0.5  # naive Bayes smoothing (additive)
KEYWORD_WEIGHT = 10  # the catalogue's seeds count as this many examples each
TEMPERATURE = 20.0  # the mean log-likelihood per n-gram, sharpened into a distribution (the score)
MAX_CHARS = 4000  # a longer text is cut: the gist of a contact is in its first lines

# Kept: CJK ideographs, Latin letters and digits. Everything else (punctuation, spaces, emoji) is
# where ASR text and typed text differ, so it goes.
_DROP = re.compile(r"[^0-9a-z\u3400-\u9fff]+")


def normalise(text: str) -> str:
    """Full-width to half-width, lower case, punctuation and spaces removed."""
    return _DROP.sub("", unicodedata.normalize("NFKC", text[:MAX_CHARS]).lower())


def grams(text: str, smallest: int = 1) -> Counter[str]:
    """Character n-grams of a normalised text, `smallest` to MAX_GRAM long."""
    return Counter(text[i : i + n] for n in range(smallest, MAX_GRAM + 1) for i in range(len(text) - n + 1))


@dataclass(frozen=True, slots=True)
class DispatchModel:
    """One row per n-gram seen in training (`vocabulary`, `rows`), one column per category."""

    categories: tuple[Category, ...]
    vocabulary: tuple[str, ...]
    rows: Mapping[str, int]  # n-gram -> its row
    # log P(n-gram | category): a text's scores are one matrix product over its known n-grams,
    # not a Python loop over them and the categories.
    log_likelihood: npt.NDArray[np.float64]
    # How much each n-gram (2-3 characters) favours each category over the average one, times its
    # inverse document frequency over the categories; 0 where it does not favour it: what the
    # evidence is ranked by.
    leaning: npt.NDArray[np.float64]


def train(categories: tuple[Category, ...], examples: Iterable[Example]) -> DispatchModel:
    index = {category.id: i for i, category in enumerate(categories)}
    counts: list[Counter[str]] = [_catalogue_grams(category) for category in categories]
    for example in examples:
        counts[index[example.category]].update(grams(normalise(example.text)))
    vocabulary = tuple(sorted(set().union(*counts)))
    totals = [sum(c.values()) + ALPHA * len(vocabulary) for c in counts]
    log_likelihood = np.array(
        [[math.log((c[gram] + ALPHA) / total) for c, total in zip(counts, totals, strict=True)] for gram in vocabulary],
        dtype=np.float64,
    )
    idf = np.array([math.log(len(counts) / sum(1 for c in counts if gram in c)) for gram in vocabulary])
    above = log_likelihood - log_likelihood.mean(axis=1, keepdims=True)
    leaning = np.where(above > 0, above * idf[:, None], 0.0)
    leaning[[len(gram) < 2 for gram in vocabulary]] = 0.0  # a single character is no evidence
    rows = {gram: row for row, gram in enumerate(vocabulary)}
    return DispatchModel(categories, vocabulary, rows, log_likelihood, leaning)


def _catalogue_grams(category: Category) -> Counter[str]:
    counted = grams(normalise(category.description + category.name))
    for keyword in category.keywords:
        for _ in range(KEYWORD_WEIGHT):
            counted.update(grams(normalise(keyword)))
    return counted


def suggest(model: DispatchModel, text: str, top: int = TOP) -> tuple[Suggestion, ...]:
    """The `top` categories for `text`, best first; none for a text with nothing to read."""
    counted = grams(normalise(text))
    if not counted:
        return ()
    found = [(row, n) for gram, n in counted.items() if (row := model.rows.get(gram)) is not None]
    rows = np.array([row for row, _ in found], dtype=np.intp)
    scores = _naive_bayes(model, rows, [n for _, n in found], sum(counted.values()))
    leaning = model.leaning[rows]
    return tuple(
        Suggestion(
            category=model.categories[i].id,
            department=model.categories[i].department,
            score=round(float(scores[i]), 3),
            evidence=_evidence(model, rows, leaning[:, i]),
        )
        for i in np.argsort(-scores, kind="stable")[:top].tolist()
    )


def _naive_bayes(
    model: DispatchModel, rows: npt.NDArray[np.intp], times: list[int], size: int
) -> npt.NDArray[np.float64]:
    """P(category | text) with equal priors, the likelihood tempered per n-gram so that a long
    text is not certain of everything (naive Bayes' independence overcounts overlapping n-grams).
    An n-gram never seen anywhere tells no category from another."""
    if not len(rows):
        return np.full(len(model.categories), 1 / len(model.categories))
    logits = np.asarray(times, dtype=np.float64) @ model.log_likelihood[rows] * (TEMPERATURE / size)
    exps = np.exp(logits - logits.max())
    result: npt.NDArray[np.float64] = exps / exps.sum()
    return result


def _evidence(model: DispatchModel, rows: npt.NDArray[np.intp], leaning: npt.NDArray[np.float64]) -> tuple[str, ...]:
    """The text's n-grams that favour this category most (`leaning`, its column for the text's
    rows); an n-gram inside one already named is not named again."""
    chosen: list[str] = []
    for j in np.argsort(-leaning, kind="stable").tolist():
        if leaning[j] <= 0 or len(chosen) == EVIDENCE:
            break
        gram = model.vocabulary[rows[j]]
        if not any(gram in other or other in gram for other in chosen):
            chosen.append(gram)
    return tuple(chosen)
