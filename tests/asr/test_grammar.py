from __future__ import annotations

from pathlib import Path

import pytest

from gateway.asr.engine import GrammarError
from gateway.asr.grammar import build_grammar, is_filler, tokenize, uncovered
from gateway.asr.settings import DEFAULT_ENDINGS, DEFAULT_LEAD_INS, DEFAULT_TABLE

LEXICON = {"住房", "企业", "服务", "人工", "我", "要", "我要", "交通", "业务", "税务"}


def test_tokenize_prefers_the_longest_dictionary_word() -> None:
    assert tokenize("我要", LEXICON) == ["我要"]
    assert tokenize("企业服务", LEXICON) == ["企业", "服务"]
    assert tokenize("物业", LEXICON) is None
    assert uncovered("物业", LEXICON) == "物业"


def test_grammar_maps_tokens_back_to_targets_and_reports_missing() -> None:
    table = {"housing": ["住房", "物业"], "enterprise": ["企业服务", "企业"], "human": ["人工"]}
    g = build_grammar(table, LEXICON, lead_ins=["我要", "请转"], endings=["业务"], filler_phones=["a", "zh"])
    assert g.keywords["企业 服务"] == ("enterprise", "企业服务")
    assert g.keywords["住房"] == ("housing", "住房")
    assert g.missing == {"物业": "物业", "请转": "请转"}
    assert "public <utt> = [<lead>] (/1/ <kw> | /1e-30/ <filler>) [<end>];" in g.jsgf
    assert "<g> = ph_a | ph_zh | ph_garbage;" in g.jsgf
    assert g.extra_words == {"ph_a": "a", "ph_zh": "zh", "ph_garbage": "+GARBAGE+"}


def test_grammar_without_filler_or_lead() -> None:
    g = build_grammar({"traffic": ["交通"]}, LEXICON)
    assert "public <utt> = <kw>;" in g.jsgf
    assert g.extra_words == {}


def test_target_with_no_known_phrase_is_an_error_naming_it() -> None:
    with pytest.raises(GrammarError, match=r"target 'housing'.*物业"):
        build_grammar({"housing": ["物业"]}, LEXICON)


def test_the_same_phrase_for_two_targets_is_an_error() -> None:
    with pytest.raises(GrammarError, match="both"):
        build_grammar({"a": ["住房"], "b": ["住房"]}, LEXICON)


def test_filler_words_carry_no_text() -> None:
    assert all(is_filler(w) for w in ("ph_a", "ph_garbage", "<sil>", "(NULL)", "[NOISE]", "++breath++"))
    assert not is_filler("住房")


def test_every_default_phrase_is_in_the_shared_dictionary(model_dir: Path) -> None:
    from gateway.asr.pocketsphinx_engine import read_dictionary

    words, phones = read_dictionary(model_dir / "mandarin_notone.dic")
    g = build_grammar(DEFAULT_TABLE, words, DEFAULT_LEAD_INS, DEFAULT_ENDINGS)
    assert g.missing == {}, f"not in the dictionary: {g.missing}"
    assert {"zh", "a", "ong"} <= set(phones)  # the filler loop is built from these
