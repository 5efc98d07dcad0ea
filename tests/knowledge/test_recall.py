"""Top-3 recall on the paraphrased query set (queries.tsv): at least 90 %, and no expired entry."""

from __future__ import annotations

from gateway.knowledge import Entry, KnowledgeBase
from tests.knowledge.conftest import TODAY
from tests.knowledge.recall import load_queries, top3_recall


def test_the_query_set_is_large_and_paraphrased(example_entries: tuple[Entry, ...]) -> None:
    queries = load_queries()
    assert len(queries) >= 110
    questions = {entry.question for entry in example_entries}
    assert not [query.text for query in queries if query.text in questions]
    by_id = {entry.id: entry for entry in example_entries}
    expired = [query for query in queries if query.expired]
    assert len(expired) >= 8 and sum(1 for query in expired if not query.expected) == 4
    for query in expired:
        assert query.expired is not None and by_id[query.expired].valid_to is not None
    current = {entry.id for entry in example_entries if entry.valid_to is None}
    assert all(query.expected <= current for query in queries)


def test_top3_recall_is_at_least_90_percent(base: KnowledgeBase) -> None:
    result = top3_recall(load_queries(), lambda text: [hit.id for hit in base.search(text, TODAY, 3)])
    assert result.expired_returned == ()
    assert result.recall >= 0.90, f"recall {result.recall:.3f}; missed: {result.misses}"
