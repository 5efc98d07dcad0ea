"""The knowledge base on a real SQLite file: versions, expiry, synonyms, long texts."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.knowledge import BadImport, Entry, KnowledgeBase
from gateway.knowledge.text import (
    BUILTIN_SYNONYMS,
    build_query,
    build_synonyms,
    parse_synonyms,
    query_words,
    segmenter,
)
from tests.knowledge.conftest import TODAY

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def entry(id_: str, question: str, answer: str = "按规定办理。", **fields: object) -> Entry:
    base = Entry(id_, question, answer, "social_insurance", date(2025, 1, 1), None, "test")
    return replace(base, **fields)  # type: ignore[arg-type]


def ids(kb: KnowledgeBase, text: str, limit: int = 3, today: date = TODAY) -> list[str]:
    return [hit.id for hit in kb.search(text, today, limit)]


def test_expired_entries_are_never_returned_even_on_their_own_question(
    base: KnowledgeBase, example_entries: tuple[Entry, ...]
) -> None:
    expired = [entry for entry in example_entries if entry.valid_to is not None]
    assert len(expired) == 16
    for old in expired:
        found = ids(base, old.question, limit=20)
        assert old.id not in found, old.question
        assert found, f"nothing at all for {old.question}"
        # The day it was still valid, the same question finds it first.
        assert ids(base, old.question, today=old.valid_to or TODAY)[0] == old.id


def test_an_entry_not_yet_valid_is_not_returned(tmp_path: Path) -> None:
    with KnowledgeBase(tmp_path / "kb.sqlite3") as kb:
        kb.import_entries([entry("a", "供暖什么时候开始", valid_from=date(2027, 1, 1))], "a.jsonl", NOW)
        assert ids(kb, "供暖什么时候开始") == []
        assert ids(kb, "供暖什么时候开始", today=date(2027, 1, 1)) == ["a"]


def test_a_reimport_is_a_new_version_that_replaces_changed_entries(tmp_path: Path) -> None:
    with KnowledgeBase(tmp_path / "kb.sqlite3") as kb:
        first = kb.import_entries([entry("a", "社保卡丢了怎么补办"), entry("b", "公积金怎么提取")], "v1.jsonl", NOW)
        assert (first.version.number, first.added, first.version.entries) == (1, 2, 2)
        second = kb.import_entries(
            [entry("a", "社保卡遗失如何挂失"), entry("b", "公积金怎么提取"), entry("c", "暖气不热找谁")], "v2.csv", NOW
        )
        assert (second.added, second.changed, second.unchanged) == (1, 1, 1)
        assert second.version.number == 2 and second.version.entries == 3 and second.version.imported == 3
        assert [v.source for v in kb.versions()] == ["v1.jsonl", "v2.csv"]
        current = kb.current()
        assert current is not None and current.number == 2
        # The current version answers with the new text only; the old text is gone from search.
        hits = kb.search("社保卡丢了", TODAY)
        assert [(hit.id, hit.question) for hit in hits] == [("a", "社保卡遗失如何挂失")]
        assert [e.question for e in kb.entries(1) if e.id == "a"] == ["社保卡丢了怎么补办"]
        assert {e.id for e in kb.entries()} == {"a", "b", "c"}
        # Back to version 1: its text, and no entry c.
        assert kb.use(1).number == 1
        assert [hit.question for hit in kb.search("社保卡", TODAY)] == ["社保卡丢了怎么补办"]
        assert ids(kb, "暖气不热") == []
        with pytest.raises(KeyError):
            kb.use(9)


def test_the_current_version_survives_reopening(tmp_path: Path, knowledge_path: Path) -> None:
    with KnowledgeBase(tmp_path / "kb.sqlite3") as kb:
        kb.import_file(knowledge_path, NOW)
    with KnowledgeBase(tmp_path / "kb.sqlite3") as kb:
        current = kb.current()
        assert current is not None and (current.number, current.entries, current.source) == (1, 300, "knowledge.jsonl")
        assert ids(kb, "暖气片不热")[0] == "kb-0105"


def test_a_bad_file_imports_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "question": "问", "answer": "答", "category": "tax", "valid_from": "2025-01-01"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"id": "b", "question": "问"}\n')
    with KnowledgeBase(tmp_path / "kb.sqlite3") as kb:
        kb.import_file(good, NOW)
        with pytest.raises(BadImport) as caught:
            kb.import_file(bad, NOW)
        assert str(caught.value.fields[0]).startswith("line 2: answer: required")
        assert [v.number for v in kb.versions()] == [1]
        assert [e.id for e in kb.entries()] == ["a"]


def test_synonyms_widen_recall(tmp_path: Path) -> None:
    entries = [entry("fund", "住房公积金租房提取"), entry("heat", "供暖温度不达标")]
    with KnowledgeBase(tmp_path / "plain.sqlite3", synonyms=build_synonyms([])) as plain:
        plain.import_entries(entries, "kb.jsonl", NOW)
        assert ids(plain, "公基金怎么取") == []
        assert ids(plain, "暖气不热") == []
    with KnowledgeBase(tmp_path / "synonyms.sqlite3") as kb:
        kb.import_entries(entries, "kb.jsonl", NOW)
        assert ids(kb, "公基金怎么取") == ["fund"]  # a speech homophone, then 公积金 / 住房公积金
        (hit,) = kb.search("暖气不热", TODAY)
        assert hit.id == "heat" and "供暖" in hit.terms


def test_a_synonyms_file_extends_the_table(tmp_path: Path) -> None:
    groups = parse_synonyms("# 口语\n俺家, 我家\n拆迁 / 征收 / 征迁  # 官方\n孤词\n")
    assert groups == [("俺家", "我家"), ("拆迁", "征收", "征迁")]
    table = build_synonyms([*BUILTIN_SYNONYMS, *groups])
    assert table.of("拆迁") == {"征收", "征迁"} and "社会保险" in table.of("社保")


def test_query_building_is_capped_rarest_first() -> None:
    synonyms = build_synonyms([("社保", "社会保险")])
    doc_freq = {"社保": 50, "社会保险": 10, "补缴": 3, "断缴": 1, "怎么": 0}
    query = build_query(["社保", "补缴", "断缴", "未知"], synonyms, doc_freq, max_terms=3)
    assert query is not None
    assert query.terms == ("断缴", "补缴", "社保")  # the text's own words first, rarest first
    assert query.match == '"断缴" OR "补缴" OR "社保"'
    query = build_query(["社保"], synonyms, doc_freq, max_terms=3)
    assert query is not None and query.terms == ("社保", "社会保险")
    assert build_query(["未知"], synonyms, doc_freq, max_terms=3) is None
    # Bounded rows: after the rarest word, words that would pass the bound are left out.
    query = build_query(["社保", "补缴", "断缴"], synonyms, doc_freq, max_terms=9, max_postings=20)
    assert query is not None and query.terms == ("断缴", "补缴", "社会保险")
    query = build_query(["社保"], synonyms, doc_freq, max_terms=9, max_postings=5)
    assert query is not None and query.terms == ("社保",)


def test_query_words_drop_stop_words_and_punctuation() -> None:
    found = query_words(segmenter(), "请问，我想问一下：社保卡丢了怎么办？？", build_synonyms(BUILTIN_SYNONYMS))
    assert "社保卡" in found and "丢" in found
    assert not {"请问", "我", "怎么办", "？", "，"} & set(found)


def test_a_long_text_is_capped_and_stays_fast(base: KnowledgeBase, example_entries: tuple[Entry, ...]) -> None:
    ticket = "。".join(entry.answer for entry in example_entries[:40]) * 3
    assert len(ticket) > base.max_text_chars
    started = time.perf_counter()
    hits = base.search(ticket, TODAY, 5)
    assert time.perf_counter() - started < 0.5
    assert len(hits) == 5 and all(len(hit.terms) <= base.max_terms for hit in hits)


def test_nothing_to_search_answers_nothing(base: KnowledgeBase) -> None:
    assert base.search("", TODAY) == []
    assert base.search("？？？！！", TODAY) == []
    assert base.search("社保", TODAY, limit=0) == []
