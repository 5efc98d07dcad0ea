"""The paraphrased query set (queries.tsv) and its top-3 recall: shared by the test and the bench."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

QUERIES = Path(__file__).resolve().parent / "queries.tsv"


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    expected: frozenset[str]  # empty: no current entry answers it
    expired: str | None  # the expired entry that matches its text best, if any
    note: str


def load_queries(path: Path = QUERIES) -> list[Query]:
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        text, expected, *rest = line.split("\t")
        note = rest[0] if rest else ""
        expired = note.split()[1].rstrip(",") if note.startswith("expired ") else None
        ids = frozenset() if expected == "-" else frozenset(expected.split(","))
        if not text.strip() or not all(i.startswith("kb-") for i in ids):
            raise ValueError(f"{path.name} line {number}: malformed")
        queries.append(Query(text, ids, expired, note))
    return queries


@dataclass(frozen=True, slots=True)
class Recall:
    answerable: int
    hits: int
    misses: tuple[str, ...]
    expired_returned: tuple[str, ...]  # queries whose results named an expired entry (must be none)

    @property
    def recall(self) -> float:
        return self.hits / self.answerable if self.answerable else 0.0


def top3_recall(queries: list[Query], search: Callable[[str], list[str]]) -> Recall:
    """A query is a hit when any of its expected entries is among the first three results."""
    hits, misses, expired = 0, [], []
    answerable = [query for query in queries if query.expected]
    for query in queries:
        found = search(query.text)[:3]
        if query.expired is not None and query.expired in found:
            expired.append(query.text)
        if not query.expected:
            continue
        if query.expected & set(found):
            hits += 1
        else:
            misses.append(query.text)
    return Recall(len(answerable), hits, tuple(misses), tuple(expired))
