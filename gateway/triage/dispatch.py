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
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
    categories: tuple[Category, ...]
    log_likelihood: Mapping[str, tuple[float, ...]]  # n-gram -> log P(n-gram | category), per category
    idf: Mapping[str, float]  # n-gram -> log(categories / categories whose words have it)


def train(categories: tuple[Category, ...], examples: Iterable[Example]) -> DispatchModel:
    index = {category.id: i for i, category in enumerate(categories)}
    counts: list[Counter[str]] = [_catalogue_grams(category) for category in categories]
    for example in examples:
        counts[index[example.category]].update(grams(normalise(example.text)))
    vocabulary: set[str] = set().union(*counts)
    totals = [sum(c.values()) + ALPHA * len(vocabulary) for c in counts]
    log_likelihood = {
        gram: tuple(math.log((c[gram] + ALPHA) / total) for c, total in zip(counts, totals, strict=True))
        for gram in vocabulary
    }
    idf = {gram: math.log(len(counts) / sum(1 for c in counts if gram in c)) for gram in vocabulary}
    return DispatchModel(categories, log_likelihood, idf)


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
    scores = _naive_bayes(model, counted)
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[:top]
    return tuple(
        Suggestion(
            category=model.categories[i].id,
            department=model.categories[i].department,
            score=round(scores[i], 3),
            evidence=_evidence(model, counted, i),
        )
        for i in ranked
    )


def _naive_bayes(model: DispatchModel, counted: Counter[str]) -> list[float]:
    """P(category | text) with equal priors, the likelihood tempered per n-gram so that a long
    text is not certain of everything (naive Bayes' independence overcounts overlapping n-grams)."""
    scores = [0.0] * len(model.categories)
    for gram, n in counted.items():
        row = model.log_likelihood.get(gram)
        if row is None:
            continue  # never seen anywhere: tells no category from another
        for i, value in enumerate(row):
            scores[i] += n * value
    size = sum(counted.values())
    return _softmax([score * TEMPERATURE / size for score in scores])


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(value - top) for value in values]
    total = sum(exps)
    return [value / total for value in exps]


def _evidence(model: DispatchModel, counted: Counter[str], category: int) -> tuple[str, ...]:
    """The text's n-grams (2-3 characters) that favour this category most over the average one,
    weighted by their idf; an n-gram inside one already named is not named again."""
    weights = []
    for gram in counted:
        row = model.log_likelihood.get(gram)
        if len(gram) >= 2 and row is not None:
            weights.append(((row[category] - sum(row) / len(row)) * model.idf[gram], gram))
    chosen: list[str] = []
    for weight, gram in sorted(weights, reverse=True):
        if weight <= 0 or len(chosen) == EVIDENCE:
            break
        if not any(gram in other or other in gram for other in chosen):
            chosen.append(gram)
    return tuple(chosen)
