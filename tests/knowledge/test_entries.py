"""Parsing knowledge files: good lines become frozen entries; any bad line refuses the whole file,
naming each bad line and field."""

from __future__ import annotations

import dataclasses
import json
from datetime import date

import pytest

from gateway.knowledge.entries import MAX_QUESTION, BadImport, Entry, parse_csv, parse_entries, parse_jsonl


def line(**fields: object) -> str:
    record: dict[str, object] = {
        "id": "kb-1", "question": "社保卡丢了怎么办？", "answer": "到社保窗口挂失补办。",
        "category": "social_insurance", "valid_from": "2025-01-01", "valid_to": None, "source": "市社保中心",
    }  # fmt: skip
    record.update(fields)
    return json.dumps(record, ensure_ascii=False)


def test_the_example_base_parses_whole(example_entries: tuple[Entry, ...]) -> None:
    assert len(example_entries) == 300
    assert len({entry.id for entry in example_entries}) == 300
    assert sum(1 for entry in example_entries if entry.valid_to is not None) == 16


def test_a_jsonl_line_becomes_a_frozen_entry() -> None:
    (entry,) = parse_jsonl(line(valid_to="2025-12-31") + "\n\n")
    assert entry == Entry("kb-1", "社保卡丢了怎么办？", "到社保窗口挂失补办。", "social_insurance",
                          date(2025, 1, 1), date(2025, 12, 31), "市社保中心")  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.question = "x"  # type: ignore[misc]
    assert entry.valid_on(date(2025, 12, 31)) and not entry.valid_on(date(2026, 1, 1))
    assert not entry.valid_on(date(2024, 12, 31))


def test_every_bad_line_is_named_and_nothing_is_imported() -> None:
    text = "\n".join([
        line(id="kb-1"),
        line(id="kb-2", question=""),
        "{not json",
        line(id="kb-4", valid_from="2025-13-01", category="Social Insurance"),
        line(id="kb-5", question="问" * (MAX_QUESTION + 1)),
        line(id="kb-1"),
        line(id="kb-7", valid_from="2025-06-01", valid_to="2025-01-01"),
        line(id="kb-8", extra="x"),
        "[1, 2]",
    ])  # fmt: skip
    with pytest.raises(BadImport) as caught:
        parse_jsonl(text)
    problems = {field.path: field.message for field in caught.value.fields}
    assert set(problems) == {f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 9)}
    assert problems["line 2"] == "question: required"
    assert problems["line 3"].startswith("not JSON")
    assert "valid_from: must be an ISO date" in problems["line 4"] and "category:" in problems["line 4"]
    assert f"at most {MAX_QUESTION} characters" in problems["line 5"]
    assert problems["line 6"] == "id: kb-1 already on line 1"
    assert problems["line 7"] == "valid_to: before valid_from"
    assert problems["line 8"] == "extra: unknown field"
    assert problems["line 9"] == "not a JSON object"
    assert "nothing imported" in caught.value.message
    assert caught.value.http_status == 400


def test_csv_with_a_header_and_an_empty_valid_to() -> None:
    text = (
        "id,question,answer,category,valid_from,valid_to,source\r\n"
        'kb-1,"暖气不热，怎么办？","联系供热单位，测温。",heating,2024-10-01,,供热办\r\n'
        "kb-2,今年几号供暖？,以公告为准。,heating,2025-09-01,2026-03-31,供热办\r\n"
    )
    first, second = parse_csv(text)
    assert first.question == "暖气不热，怎么办？" and first.valid_to is None
    assert second.valid_to == date(2026, 3, 31)
    assert parse_entries("kb.CSV", ("\ufeff" + text).encode()) == (first, second)


def test_bad_csv_names_the_row() -> None:
    with pytest.raises(BadImport) as caught:
        parse_csv("id,question,answer,category,valid_from\nkb-1,问,答,heating\nkb-2,问,答,heating,2025-01-01\n")
    assert [str(field) for field in caught.value.fields] == ["line 2: 4 columns, the header has 5"]
    with pytest.raises(BadImport) as caught:
        parse_csv("id,question\nkb-1,问\n")
    assert "missing column(s) answer, category, valid_from" in str(caught.value.fields[0])


def test_unknown_format_empty_file_and_bad_encoding_are_refused() -> None:
    with pytest.raises(BadImport, match="unknown format"):
        parse_entries("kb.xlsx", b"")
    with pytest.raises(BadImport, match="no entries"):
        parse_entries("kb.jsonl", b"\n\n")
    with pytest.raises(BadImport, match="not UTF-8"):
        parse_entries("kb.jsonl", "问".encode("gbk"))
