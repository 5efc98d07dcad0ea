"""Knowledge-base entries (知识库, 一问一答): parse a JSONL or CSV file into frozen `Entry` records.

Pure: text in, entries out. A file is taken whole or not at all: every bad line is reported (up to
`MAX_REPORTED`), by line number and field, in one `BadImport`, and nothing is imported.

Fields: `id`, `question`, `answer`, `category`, `valid_from` (ISO date), `valid_to` (ISO date or
null / empty: still valid), `source`. CSV files need a header row naming the columns.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from gateway.errors import FieldError, InvalidRequest

# Size limits per field (characters) and per file: an entry is read aloud or shown in the mini
# program, and the whole file is held in memory while it is checked.
MAX_ID = 64
MAX_QUESTION = 500
MAX_ANSWER = 5000
MAX_CATEGORY = 64
MAX_SOURCE = 200
MAX_ENTRIES = 200_000
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_REPORTED = 50

FIELDS = ("id", "question", "answer", "category", "valid_from", "valid_to", "source")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class BadImport(InvalidRequest):
    """A knowledge file with bad lines: `fields` names each (`line 3: question`); nothing imported."""

    code = "invalid_knowledge"


@dataclass(frozen=True, slots=True)
class Entry:
    """One question and its answer, valid from `valid_from` to `valid_to` inclusive (None: open)."""

    id: str
    question: str
    answer: str
    category: str
    valid_from: date
    valid_to: date | None
    source: str

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


def _text(record: Mapping[str, object], name: str, limit: int, required: bool = True) -> str:
    value = record.get(name)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    if required and not value:
        raise ValueError("required")
    if len(value) > limit:
        raise ValueError(f"at most {limit} characters (has {len(value)})")
    return value


def _date(record: Mapping[str, object], name: str, required: bool) -> date | None:
    value = record.get(name)
    if value is None or value == "":
        if required:
            raise ValueError("required (an ISO date, 2025-01-31)")
        return None
    if not isinstance(value, str):
        raise ValueError("must be an ISO date string (2025-01-31)")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("must be an ISO date (2025-01-31)") from None


def _field(record: Mapping[str, object], name: str, problems: list[str]) -> object:
    """One field's value, or None with its problem noted (so one line reports all its fields)."""
    try:
        if name in ("valid_from", "valid_to"):
            return _date(record, name, required=name == "valid_from")
        limits = {"id": MAX_ID, "question": MAX_QUESTION, "answer": MAX_ANSWER, "category": MAX_CATEGORY}
        value = _text(record, name, limits.get(name, MAX_SOURCE), required=name != "source")
        if name == "id" and not _ID.match(value):
            raise ValueError("letters, digits and _ . : - only, starting with a letter or digit")
        if name == "category" and not _CATEGORY.match(value):
            raise ValueError("a catalogue id: lower-case letters, digits, _ and -")
        return value
    except ValueError as exc:
        problems.append(f"{name}: {exc}")
        return None


def entry_from(record: Mapping[str, object]) -> Entry:
    """One record (a JSON object or a CSV row) as an Entry; ValueError naming every bad field."""
    unknown = sorted(set(record) - set(FIELDS))
    problems = [f"{name}: unknown field" for name in unknown]
    values = {name: _field(record, name, problems) for name in FIELDS}
    if not problems:
        valid_from, valid_to = values["valid_from"], values["valid_to"]
        assert isinstance(valid_from, date)
        if isinstance(valid_to, date) and valid_to < valid_from:
            problems.append("valid_to: before valid_from")
    if problems:
        raise ValueError("; ".join(problems))
    return Entry(**values)  # type: ignore[arg-type]


def _collect(records: Iterable[tuple[int, Mapping[str, object] | str]]) -> tuple[Entry, ...]:
    """Entries from (line, record or a parse problem), refusing the lot on any problem."""
    entries: list[Entry] = []
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for line, record in records:
        if len(entries) + len(errors) >= MAX_ENTRIES:
            errors.append(FieldError(f"line {line}", f"more than {MAX_ENTRIES} entries in one file"))
            break
        try:
            if isinstance(record, str):
                raise ValueError(record)
            entry = entry_from(record)
        except ValueError as exc:
            errors.append(FieldError(f"line {line}", str(exc)))
            continue
        if entry.id in seen:
            errors.append(FieldError(f"line {line}", f"id: {entry.id} already on line {seen[entry.id]}"))
            continue
        seen[entry.id] = line
        entries.append(entry)
    if errors:
        shown = tuple(errors[:MAX_REPORTED])
        more = f" (the first {MAX_REPORTED} shown)" if len(errors) > MAX_REPORTED else ""
        raise BadImport(f"{len(errors)} bad line(s){more}; nothing imported", shown)
    if not entries:
        raise BadImport("no entries; nothing imported")
    return tuple(entries)


def _jsonl_records(text: str) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not JSON ({exc.msg} at column {exc.colno})"
            continue
        yield number, value if isinstance(value, dict) else "not a JSON object"


def _csv_records(text: str) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    names = [name.strip() for name in header]
    missing = [name for name in ("id", "question", "answer", "category", "valid_from") if name not in names]
    if missing:
        yield 1, f"header: missing column(s) {', '.join(missing)} (columns: {', '.join(FIELDS)})"
        return
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield reader.line_num, f"{len(row)} columns, the header has {len(names)}"
            continue
        yield reader.line_num, dict(zip(names, row, strict=True))


def parse_jsonl(text: str) -> tuple[Entry, ...]:
    """One JSON object per line; blank lines skipped."""
    return _collect(_jsonl_records(text))


def parse_csv(text: str) -> tuple[Entry, ...]:
    """A header row naming the columns, then one entry per row; an empty valid_to is null."""
    try:
        return _collect(_csv_records(text))
    except csv.Error as exc:
        raise BadImport(f"not valid CSV: {exc}; nothing imported") from None


def parse_entries(name: str, data: bytes) -> tuple[Entry, ...]:
    """A file's bytes by its name's suffix: `.jsonl` / `.json` or `.csv` (UTF-8, BOM allowed)."""
    if len(data) > MAX_FILE_BYTES:
        raise BadImport(f"the file is larger than {MAX_FILE_BYTES} bytes; nothing imported")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadImport(f"not UTF-8 (byte {exc.start}); nothing imported") from None
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        return parse_jsonl(text)
    if lowered.endswith(".csv"):
        return parse_csv(text)
    raise BadImport(f"{name}: unknown format; name it .jsonl or .csv")
