"""Sensitive words: adversarial spellings fire, near misses do not, spans point into the original text."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config import SensitiveConfig
from gateway.triage.sensitive import TRADITIONAL, SensitiveMatch, SensitiveMatcher, SensitiveWord, normalise

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gateway.toml"
SHIPPED = SensitiveConfig.model_validate(tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["sensitive"])
MATCHER = SensitiveMatcher(SHIPPED.words, context_chars=SHIPPED.context_chars, max_matches=SHIPPED.max_matches)
SIMPLIFIED_TO_TRADITIONAL = {simplified: traditional for traditional, simplified in TRADITIONAL.items()}


def words(text: str) -> list[str]:
    return [match.word for match in MATCHER.scan(text)]


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("我要跳 楼", "跳楼"),
        ("我要跳.楼了", "跳楼"),
        ("我要跳，，，楼", "跳楼"),
        ("我 要 跳 😭 楼", "跳楼"),
        ("我真的不想\u3000活了", "不想活了"),
        ("ｚｉｓｈａ算了", "自杀"),
        ("我要ＴＬ", "跳楼"),
        ("再不给钱我就zs", "自杀"),
        ("再不给钱我就 z s", "自杀"),
        ("tiao lou 算了", "跳楼"),
        ("我要从这栋樓上跳樓", "跳楼"),
        ("我殺了他", "杀了他"),
        ("大不了同歸於盡", "同归于尽"),
        ("大不了tgyj", "同归于尽"),
        ("我要把你们那个楼炸了", "炸了"),
        ("这个事我要找媒体曝光", "找媒体曝光"),
        ("隔壁小作坊用童工", "童工"),
    ],
)
def test_adversarial_spellings_fire(text: str, word: str) -> None:
    assert word in words(text)


@pytest.mark.parametrize(
    "text",
    [
        "师傅我家跳闸了一直没电",  # 跳闸 is not 跳楼
        "楼下超市跳楼价甩卖",
        "樓下超市跳樓大甩賣",  # a near miss in traditional characters stays one
        "带孩子去坐跳楼机",
        "我家水管炸了水漫出来了",
        "你们电话都打炸了也没人接",
        "今天热得不想活了空调也坏了",
        "我反映这个事怕被报复",
        "这真是个爆炸性新闻",
        "please see the title of zsxx",  # initials inside longer runs of letters
        "楼上邻居天天装修",
        "我想咨询社保的事",
    ],
)
def test_near_misses_do_not_fire(text: str) -> None:
    assert MATCHER.scan(text) == ()


def test_a_live_transcript_segment_without_punctuation() -> None:
    segment = (
        "喂你好我是幸福小区三号楼的这个事我反映好几次了再不给解决我们几十户就去北京上访"
        "到时候集体上访拉横幅你们别说我没提前讲"
    )
    found = MATCHER.scan(segment)
    assert [(m.word, m.category, m.severity) for m in found] == [
        ("去北京上访", "extreme_demand", 2),
        ("集体上访", "mass_incident", 2),
        ("拉横幅", "mass_incident", 2),
    ]
    assert all(segment[m.start : m.end] == m.found == m.word for m in found)


def test_a_match_quotes_the_original_text_around_it() -> None:
    text = "您好，我邻居家的孩子被锁 在 家里三天了，一直在哭，大人不知道去哪了，请你们赶快来看看。"
    (match,) = MATCHER.scan(text)
    assert match == SensitiveMatch(
        word="孩子被锁在家",
        category="minor_at_risk",
        severity=2,
        start=text.index("孩子"),
        end=text.index("家里") + 1,
        found="孩子被锁 在 家",
        context=text[max(0, text.index("孩子") - 20) : text.index("家里") + 1 + 20],
    )


def test_the_shipped_list_covers_every_category_and_severity() -> None:
    assert {word.category for word in SHIPPED.words} == {
        "self_harm",
        "violence",
        "mass_incident",
        "public_safety",
        "extreme_demand",
        "minor_at_risk",
    }
    assert {word.severity for word in SHIPPED.words} == {1, 2, 3}


def test_every_shipped_word_fires_as_written_and_in_traditional_characters() -> None:
    for word in SHIPPED.words:
        traditional = "".join(SIMPLIFIED_TO_TRADITIONAL.get(char, char) for char in word.word)
        assert word.word in words(f"我说{word.word}啊"), word.word
        assert word.word in words(f"我說{traditional}啊"), traditional
        for phrase in word.unless:
            assert word.word not in words(phrase), phrase


def test_the_traditional_table_maps_single_characters_to_others() -> None:
    assert all(len(key) == len(value) == 1 and key != value for key, value in TRADITIONAL.items())
    assert not set(TRADITIONAL) & set(TRADITIONAL.values())


def test_one_match_per_word_and_place_and_at_most_max_matches() -> None:
    matcher = SensitiveMatcher(SHIPPED.words, max_matches=5)
    assert len(matcher.scan("跳楼" * 100)) == 5
    # 跳楼 written once and spelled out in pinyin right after it: two places, two matches.
    assert [m.found for m in MATCHER.scan("跳楼tiaolou")] == ["跳楼", "tiaolou"]


def test_severe_first_where_two_words_start_together() -> None:
    matcher = SensitiveMatcher(
        [
            SensitiveWord(word="报复", category="violence", severity=2),
            SensitiveWord(word="报复社会", category="violence", severity=3),
        ]
    )
    assert [(m.word, m.severity) for m in matcher.scan("我要报复社会")] == [("报复社会", 3), ("报复", 2)]


def test_no_words_match_nothing() -> None:
    assert SensitiveMatcher([]).scan("跳楼") == ()


def test_normalise_keeps_where_each_character_came_from() -> None:
    folded = normalise("Ａ 跳，樓！")
    assert folded.text == "a跳楼"
    assert folded.origin == (0, 2, 4)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"word": "。。", "category": "violence", "severity": 2}, "only spaces and punctuation"),
        ({"word": "报复", "category": "violence", "severity": 2, "unless": ["报仇"]}, "does not contain"),
        ({"word": "报复", "category": "violence", "severity": 4}, "less than or equal to 3"),
        ({"word": "报复", "category": "riot", "severity": 2}, "self_harm"),
        ({"word": "自杀", "category": "self_harm", "severity": 3, "pinyin": ["z1"]}, "pattern"),
    ],
)
def test_a_bad_word_entry_is_refused_with_a_reason(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SensitiveConfig.model_validate({"words": [entry]})


def test_a_word_listed_twice_after_folding_is_refused() -> None:
    twice = [
        {"word": "跳楼", "category": "self_harm", "severity": 3},
        {"word": "跳 樓", "category": "self_harm", "severity": 2},
    ]
    with pytest.raises(ValidationError, match="listed twice"):
        SensitiveConfig.model_validate({"words": twice})


separators = st.lists(st.sampled_from([" ", "，", "。", "-", "\u3000", "*", "😭", "、"]), max_size=3).map("".join)


@given(data=st.data(), index=st.integers(min_value=0, max_value=len(SHIPPED.words) - 1))
def test_separators_between_characters_never_hide_a_word(data: st.DataObject, index: int) -> None:
    word = SHIPPED.words[index].word
    spelled = "".join(char + data.draw(separators) for char in word)
    found = MATCHER.scan(f"我说{spelled}了")
    assert word in [match.word for match in found]
    assert all(match.found.startswith(match.word[0]) for match in found if match.word == word)
