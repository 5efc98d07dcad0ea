"""The knowledge base's store: one SQLite file (stdlib sqlite3) with an FTS5 index, and its versions.

Tables: `versions` (one row per import: number, when, the file's name, how many entries it brought
and how many the version holds), `entries` (every text an entry ever had: a row belongs to versions
`first_version` up to, not including, `until`), `fts` (the rows' question and answer as jieba words
joined by spaces, FTS5's unicode61 tokenizer splitting on the spaces) and `meta` (the current
version). An import builds a new version on the newest one: an entry id imported again with other
text gets a new row (the old row ends where the new version starts), unchanged entries keep theirs,
entries the file does not name carry over (retire an entry by importing it with a `valid_to`).
Searches use the current version (`use` may point it back at an older one).

Search: `text.build_query` turns the text into an OR of at most `max_terms` words; FTS5 ranks the
matches by bm25, the question weighted `QUESTION_WEIGHT` times the answer; entries not valid on
`today` are filtered out in SQL and checked again here, so an expired entry is never returned,
whatever its score. One connection, one lock: a search takes well under a millisecond to a few ms.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.knowledge.entries import Entry, parse_entries
from gateway.knowledge.text import BUILTIN_SYNONYMS as BUILTIN_SYNONYMS
from gateway.knowledge.text import (
    Segment,
    Synonyms,
    build_query,
    build_synonyms,
    index_words,
    matched,
    query_words,
    segmenter,
)

QUESTION_WEIGHT = 4.0
MAX_TERMS = 24
# Rows a query may match, summed over its words (the rarest word is always kept): about 1.5 µs of
# bm25 each, so a search stays within a few milliseconds however large the base.
MAX_POSTINGS = 4000
MAX_TEXT_CHARS = 4000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    number INTEGER PRIMARY KEY, imported_at TEXT NOT NULL, source TEXT NOT NULL,
    imported INTEGER NOT NULL, entries INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    row INTEGER PRIMARY KEY, id TEXT NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL,
    category TEXT NOT NULL, valid_from TEXT NOT NULL, valid_to TEXT, source TEXT NOT NULL,
    first_version INTEGER NOT NULL, until INTEGER);
CREATE INDEX IF NOT EXISTS entries_live ON entries (id, until);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (question, answer, tokenize = 'unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_vocab USING fts5vocab (fts, 'row');
"""

# A row is in version ?1 when it started at or before it and was not replaced by then; it is
# suggested on day ?2 only when valid that day (ISO dates compare as text).
_SEARCH = f"""
SELECT e.id, e.question, e.answer, e.category, e.valid_from, e.valid_to, e.source,
       bm25(fts, {QUESTION_WEIGHT}, 1.0) AS rank, fts.question || ' ' || fts.answer
FROM fts JOIN entries e ON e.row = fts.rowid
WHERE fts MATCH ?3
  AND e.first_version <= ?1 AND (e.until IS NULL OR e.until > ?1)
  AND e.valid_from <= ?2 AND (e.valid_to IS NULL OR e.valid_to >= ?2)
ORDER BY rank LIMIT ?4
"""

_ENTRY_COLUMNS = "id, question, answer, category, valid_from, valid_to, source"


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    imported_at: str
    source: str
    imported: int
    entries: int


@dataclass(frozen=True, slots=True)
class Hit:
    """A suggested entry: `score` is bm25's, sign flipped (higher is better); `terms` are the query
    words the entry holds."""

    id: str
    question: str
    answer: str
    category: str
    score: float
    terms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImportResult:
    version: Version
    added: int
    changed: int
    unchanged: int


def _entry(row: tuple[str, ...]) -> Entry:
    id_, question, answer, category, valid_from, valid_to, source = row
    return Entry(
        id_, question, answer, category, date.fromisoformat(valid_from),
        date.fromisoformat(valid_to) if valid_to else None, source,
    )  # fmt: skip


def _values(entry: Entry) -> tuple[str | None, ...]:
    return (
        entry.id, entry.question, entry.answer, entry.category, entry.valid_from.isoformat(),
        entry.valid_to.isoformat() if entry.valid_to else None, entry.source,
    )  # fmt: skip


class KnowledgeBase:
    """The store behind the knowledge search; safe to share between threads (one lock)."""

    def __init__(
        self,
        path: Path | str,
        synonyms: Synonyms | None = None,
        segment: Segment | None = None,
        max_terms: int = MAX_TERMS,
        max_text_chars: int = MAX_TEXT_CHARS,
        max_postings: int = MAX_POSTINGS,
    ) -> None:
        self.path = Path(path)
        self.synonyms = build_synonyms(BUILTIN_SYNONYMS) if synonyms is None else synonyms
        self.segment = segment or segmenter()
        self.max_terms = max_terms
        self.max_text_chars = max_text_chars
        self.max_postings = max_postings
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)
        self._doc_freq = self._load_doc_freq()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_doc_freq(self) -> dict[str, int]:
        # How many rows hold each word: the query keeps the rarest words of a long text.
        return {term: count for term, count in self._db.execute("SELECT term, doc FROM fts_vocab")}

    def _index_text(self, text: str) -> str:
        return " ".join(index_words(self.segment, text, self.synonyms))

    # -- versions --------------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM versions ORDER BY number").fetchall()
        return [Version(*row) for row in rows]

    def current(self) -> Version | None:
        with self._lock:
            return self._current()

    def _current(self) -> Version | None:
        found = self._db.execute("SELECT value FROM meta WHERE key = 'current'").fetchone()
        if found is None:
            return None
        row = self._db.execute("SELECT * FROM versions WHERE number = ?", (int(found[0]),)).fetchone()
        return Version(*row)

    def use(self, number: int) -> Version:
        """Search version `number` from now on (a rollback); KeyError if there is none."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM versions WHERE number = ?", (number,)).fetchone() is None:
                raise KeyError(number)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('current', ?)", (str(number),))
            current = self._current()
        assert current is not None
        return current

    def entries(self, number: int | None = None) -> list[Entry]:
        """The entries of version `number` (default: the current one), expired ones included."""
        with self._lock:
            if number is None:
                current = self._current()
                number = current.number if current else 0
            rows = self._db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE first_version <= ?1 AND (until IS NULL OR until > ?1)"
                " ORDER BY id",
                (number,),
            ).fetchall()
        return [_entry(row) for row in rows]

    def import_file(self, path: Path, now: datetime | None = None) -> ImportResult:
        """Parse the file whole (BadImport: nothing imported), then import it as a new version."""
        return self.import_entries(parse_entries(path.name, path.read_bytes()), path.name, now)

    def import_entries(self, entries: Iterable[Entry], source: str, now: datetime | None = None) -> ImportResult:
        """A new version: the newest one's entries, with these added or replacing theirs by id."""
        batch = list(entries)
        # Segmenting is the slow part: done before the transaction, outside the lock.
        indexed = {entry.id: (self._index_text(entry.question), self._index_text(entry.answer)) for entry in batch}
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                number = db.execute("SELECT coalesce(max(number), 0) + 1 FROM versions").fetchone()[0]
                counts = self._apply(batch, indexed, number)
                total = db.execute("SELECT count(*) FROM entries WHERE until IS NULL").fetchone()[0]
                db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?)", (number, stamp, source, len(batch), total))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('current', ?)", (str(number),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._doc_freq = self._load_doc_freq()
            version = self._current()
        assert version is not None
        return ImportResult(version, *counts)

    def _apply(self, batch: list[Entry], indexed: dict[str, tuple[str, str]], number: int) -> tuple[int, int, int]:
        added = changed = unchanged = 0
        db = self._db
        for entry in batch:
            live = db.execute(
                f"SELECT row, {_ENTRY_COLUMNS} FROM entries WHERE id = ? AND until IS NULL", (entry.id,)
            ).fetchone()
            if live is not None and _entry(live[1:]) == entry:
                unchanged += 1
                continue
            if live is not None:
                db.execute("UPDATE entries SET until = ? WHERE row = ?", (number, live[0]))
                changed += 1
            else:
                added += 1
            cursor = db.execute(
                f"INSERT INTO entries ({_ENTRY_COLUMNS}, first_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*_values(entry), number),
            )
            row = (cursor.lastrowid, *indexed[entry.id])
            db.execute("INSERT INTO fts (rowid, question, answer) VALUES (?, ?, ?)", row)
        return added, changed, unchanged

    # -- search ----------------------------------------------------------------------------------

    def search(self, text: str, today: date, limit: int = 3) -> list[Hit]:
        """The `limit` best entries of the current version valid on `today`, best first; [] when the
        text has no word the index knows. A long text is cut at `max_text_chars`."""
        terms = query_words(self.segment, text[: self.max_text_chars], self.synonyms)
        with self._lock:
            query = build_query(terms, self.synonyms, self._doc_freq, self.max_terms, self.max_postings)
            current = self._current()
            if query is None or current is None or limit < 1:
                return []
            rows = self._db.execute(_SEARCH, (current.number, today.isoformat(), query.match, limit)).fetchall()
        hits = []
        for row in rows:
            entry = _entry(row[:7])
            if not entry.valid_on(today):  # never, given the SQL; an expired answer must not slip out
                continue
            hits.append(Hit(entry.id, entry.question, entry.answer, entry.category,
                            round(-row[7], 4), matched(query.terms, row[8])))  # fmt: skip
        return hits
