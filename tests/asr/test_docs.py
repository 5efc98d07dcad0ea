"""docs/asr.md stays true to the code's defaults and the asserted bounds."""

from __future__ import annotations

from pathlib import Path

from gateway.asr.navigation import Thresholds
from gateway.asr.settings import DEFAULT_TABLE, AsrSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "asr.md").read_text(encoding="utf-8")


def test_defaults_in_the_doc_are_the_codes() -> None:
    s = AsrSettings()
    assert f"center = {s.confidence.center}" in DOC and f"scale = {s.confidence.scale}" in DOC
    assert f"/{s.grammar.filler_weight:g}/ <filler>" in DOC
    t = Thresholds()
    assert f"Thresholds(accept={t.accept}, confirm={t.confirm}, margin={t.margin})" in DOC
    assert f"| `streams_per_worker` | {s.pool.streams_per_worker} |" in DOC
    assert f"| `max_pending_chunks` | {s.pool.max_pending_chunks} |" in DOC
    assert f"| `workers` | {s.pool.workers} |" in DOC


def test_the_table_in_the_doc_is_the_default_table() -> None:
    for target, phrases in DEFAULT_TABLE.items():
        assert f"| {target} | {', '.join(phrases)} |" in DOC


def test_asserted_bounds_match_the_accuracy_test() -> None:
    source = (Path(__file__).parent / "test_accuracy.py").read_text(encoding="utf-8")
    for doc_bound, code in [(">= 20%", "accepted_right >= 0.20"), (">= 40%", "routed_right >= 0.40"),
                            ("<= 12%", "accepted_wrong <= 0.12"), (">= 80%", '["reject"] / n >= 0.8')]:  # fmt: skip
        assert doc_bound in DOC and code in source
