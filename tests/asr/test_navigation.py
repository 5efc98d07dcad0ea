from __future__ import annotations

import pytest

from gateway.asr.engine import Segment
from gateway.asr.navigation import Thresholds, decide, find_keyword
from gateway.asr.settings import DEFAULT_TABLE

T = Thresholds(accept=0.5, confirm=0.12, margin=0.15)


def seg(text: str, confidence: float, final: bool = True) -> Segment:
    return Segment(text, text, 0.0, 1.0, confidence, final)


def test_longest_phrase_wins() -> None:
    assert find_keyword("我要企业服务", DEFAULT_TABLE) == ("enterprise", "企业服务")
    assert find_keyword("人工服务", DEFAULT_TABLE) == ("human", "人工服务")
    assert find_keyword("今天天气怎么样", DEFAULT_TABLE) is None


def test_confident_keyword_is_accepted() -> None:
    d = decide([seg("我要住房", 0.9)], DEFAULT_TABLE, T)
    assert (d.action, d.target, d.keyword, d.confidence) == ("accept", "housing", "住房", 0.9)
    assert d.evidence["reason"] == "confident"


def test_unsure_keyword_is_confirmed() -> None:
    d = decide([seg("交税", 0.3)], DEFAULT_TABLE, T)
    assert (d.action, d.target) == ("confirm", "tax")
    assert d.evidence["reason"] == "unsure"


def test_weak_keyword_and_out_of_domain_are_rejected() -> None:
    assert decide([seg("交通", 0.05)], DEFAULT_TABLE, T).action == "reject"
    d = decide([seg("今天天气怎么样", 0.9)], DEFAULT_TABLE, T)
    assert (d.action, d.target, d.evidence["reason"]) == ("reject", None, "no_keyword")


def test_silence_is_rejected_as_no_speech() -> None:
    d = decide([], DEFAULT_TABLE, T)
    assert (d.action, d.evidence["reason"]) == ("reject", "no_speech")


def test_partials_do_not_count() -> None:
    assert decide([seg("住房", 0.99, final=False)], DEFAULT_TABLE, T).action == "reject"


def test_two_close_targets_are_confirmed_not_guessed() -> None:
    d = decide([seg("住房", 0.8), seg("交通", 0.75)], DEFAULT_TABLE, T)
    assert (d.action, d.target, d.evidence["reason"]) == ("confirm", "housing", "ambiguous")


def test_best_utterance_counts_per_target() -> None:
    d = decide([seg("住房", 0.2), seg("物业", 0.9), seg("交通", 0.1)], DEFAULT_TABLE, T)
    assert (d.action, d.target, d.keyword) == ("accept", "housing", "物业")


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Thresholds(accept=0.2, confirm=0.5)
