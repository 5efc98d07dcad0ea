"""The knowledge tests read the example knowledge base from ../shared/triage beside the project (the
triage tests' SHARED_TRIAGE): it is never copied into the repo."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from gateway.knowledge import Entry, KnowledgeBase, parse_entries
from tests.triage.conftest import shared_file

# A day after every expired entry's valid_to and every current entry's valid_from.
TODAY = date(2026, 12, 1)
QUERIES = Path(__file__).resolve().parent / "queries.tsv"


@pytest.fixture(scope="session")
def knowledge_path() -> Path:
    return shared_file("knowledge.jsonl", "the example knowledge base")


@pytest.fixture(scope="session")
def example_entries(knowledge_path: Path) -> tuple[Entry, ...]:
    return parse_entries(knowledge_path.name, knowledge_path.read_bytes())


@pytest.fixture
def base(tmp_path: Path, knowledge_path: Path) -> Iterator[KnowledgeBase]:
    """A base holding the 300 example entries as version 1."""
    kb = KnowledgeBase(tmp_path / "knowledge.sqlite3")
    kb.import_file(knowledge_path)
    yield kb
    kb.close()
