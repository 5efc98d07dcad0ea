"""主单 + 子单, pure (gateway/triage/merge.py): places from the example config's gazetteer of Yantai,
signatures and their similarity over realistic contacts, the merge decision's every condition,
the citizen's related tickets."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import TriageConfig
from gateway.ticket import Citizen, Suggestion, Ticket, utcnow
from gateway.triage.catalogue import LABELLED, Category, load_examples
from gateway.triage.dispatch import suggest, train
from gateway.triage.merge import (
    Candidate,
    District,
    Gazetteer,
    MergeSettings,
    Similarity,
    categories_of,
    category_of,
    category_weights,
    identities,
    lanes,
    merge_target,
    related,
    signature,
    similarity,
)
from tests.triage.conftest import EXAMPLE_CONFIG
from tests.triage.merge_contacts import MANHOLE, OTHER_PROBLEM, OTHER_STREET, STREET

SETTINGS = TriageConfig.model_validate(tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["triage"]).merge
GAZETTEER = Gazetteer(SETTINGS.districts)


@pytest.fixture(scope="module")
def measure(catalogue: tuple[Category, ...]) -> Similarity:
    return category_weights(train(catalogue, load_examples(LABELLED, catalogue)))


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("芝罘区南大街有个井盖坏了", "芝罘区/南大街"),
        ("南大街井盖坏了", "芝罘区/南大街"),  # the street alone: its district is known
        ("芝罘毓璜顶那边路灯不亮", "芝罘区/毓璜顶街道"),  # short forms of both
        ("莱山街道办门口的垃圾没人清运", "莱山区/莱山街道"),
        ("我在莱山，路灯坏了", "莱山区"),  # a district only
        ("福山区 永达街 停水了", "福山区/永达街"),
        ("牟平北关大街和正阳路路口红绿灯坏了", "牟平区/北关大街"),  # the longest street named
        ("ｎａｎ 南 大 街 井盖", "芝罘区/南大街"),  # spaces and full width folded away
        ("幸福的日子里文化宫门口", ""),  # 幸福, 文化: words, not the short forms of 幸福街道, 文化街道
        ("楼上装修太吵了", ""),
    ],
)
def test_the_place_is_the_longest_district_or_street_named(text: str, place: str) -> None:
    assert GAZETTEER.place(text) == place


def test_a_street_in_two_districts_goes_to_the_district_the_text_names() -> None:
    gazetteer = Gazetteer(
        [District(name="芝罘区", streets=["解放路"]), District(name="莱山区", aliases=["莱山"], streets=["解放路"])]
    )
    assert gazetteer.place("解放路路灯坏了") == "芝罘区/解放路"  # the first listed
    assert gazetteer.place("莱山解放路路灯坏了") == "莱山区/解放路"


def test_a_short_form_two_places_share_is_dropped() -> None:
    gazetteer = Gazetteer(
        [District(name="东山区", streets=["凤凰台街道"]), District(name="西区", streets=["凤凰台镇"])]
    )
    assert gazetteer.place("凤凰台镇的路灯") == "西区/凤凰台镇"
    assert gazetteer.place("凤凰台这边路灯坏了") == ""  # the 街道's or the 镇's? neither
    assert gazetteer.place("东山这边路灯坏了") == "东山区"


def test_the_signature_drops_places_filler_and_punctuation() -> None:
    assert signature("芝罘区南大街有个井盖坏了，我们这里很危险！", GAZETTEER) == "井盖坏里危险"
    assert len(signature("井盖" * 200, GAZETTEER)) == 100


def test_thirty_wordings_of_one_manhole_read_alike_and_other_problems_do_not(measure: Similarity) -> None:
    first = signature(MANHOLE[0], GAZETTEER)
    scores = [similarity(first, signature(text, GAZETTEER), measure.weights, measure.unseen) for text in MANHOLE]
    assert min(scores) >= SETTINGS.threshold, list(zip(scores, MANHOLE, strict=True))
    for text in OTHER_PROBLEM:
        assert similarity(first, signature(text, GAZETTEER), measure.weights, measure.unseen) < SETTINGS.threshold
    assert similarity("", first, measure.weights, measure.unseen) == 0.0


def test_words_every_category_uses_weigh_less_than_the_thing_reported(measure: Similarity) -> None:
    assert measure.weights["井盖"] > measure.weights.get("坏了", 0.0)
    assert measure.unseen >= max(measure.weights.values())


def ticket(text: str = MANHOLE[1], **fields: Any) -> Ticket:
    base: dict[str, Any] = {
        "id": "01J00000000000000000000002",
        "channel": "sms",
        "message_id": "m2",
        "received_at": utcnow(),
        "queue": "general",
        "text": text,
        "place": STREET,
        "suggestions": (Suggestion(category="municipal_facility", department="市政", score=0.9),),
    }
    return Ticket(**{**base, **fields})


def candidate(**fields: Any) -> Candidate:
    base: dict[str, Any] = {
        "id": "01J00000000000000000000001",
        "category": "municipal_facility",
        "place": STREET,
        "signature": signature(MANHOLE[0], GAZETTEER),
        "at": utcnow() - timedelta(hours=1),
    }
    return Candidate(**{**base, **fields})


MEASURE: list[Similarity] = []


@pytest.fixture(autouse=True)
def _measure(measure: Similarity) -> None:
    MEASURE[:] = [measure]


def target(new: Ticket, *candidates: Candidate, settings: MergeSettings = SETTINGS) -> str | None:
    """The parent `merge_target` finds, measured with the dispatch model's weights."""
    found = merge_target(new, signature(new.text, GAZETTEER), candidates, settings, MEASURE[0])
    return None if found is None else found[0]


def test_a_similar_open_ticket_of_the_same_category_at_the_same_street_is_the_parent() -> None:
    assert target(ticket(), candidate()) == "01J00000000000000000000001"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"category": "sanitation"}, "another category"),
        ({"place": "芝罘区/北马路"}, "another street"),
        ({"status": "submitted"}, "the parent is closed"),
        ({"status": ""}, "the parent is gone"),
        ({"parent": "01J00000000000000000000000"}, "a 子单 never becomes a parent"),
        ({"at": utcnow() - timedelta(days=4)}, "outside the window (3 days)"),
        ({"signature": signature(OTHER_PROBLEM[0], GAZETTEER)}, "another problem"),
        ({"id": "01J00000000000000000000002"}, "itself"),
    ],
)
def test_no_parent_when(change: dict[str, Any], why: str) -> None:
    assert target(ticket(), candidate(**change)) is None, why


def test_no_parent_without_a_street_a_category_or_with_merging_off() -> None:
    assert target(ticket(place="芝罘区"), candidate(place="芝罘区")) is None  # a district is too wide
    assert target(ticket(suggestions=()), candidate()) is None
    assert target(ticket(), candidate(), settings=SETTINGS.model_copy(update={"enabled": False})) is None


def test_the_agents_category_decides_else_any_suggestion() -> None:
    second = (
        Suggestion(category="water_outage", department="水务", score=0.9),
        Suggestion(category="municipal_facility", department="市政", score=0.1),
    )
    assert categories_of(ticket(suggestions=second)) == ("water_outage", "municipal_facility")
    assert category_of(ticket(suggestions=second)) == "water_outage"
    assert target(ticket(suggestions=second), candidate()) == "01J00000000000000000000001"
    assert target(ticket(suggestions=second, category="water_outage"), candidate()) is None


def test_the_most_similar_wins_and_the_older_on_a_tie() -> None:
    older = candidate(id="01J0000000000000000000000A", at=utcnow() - timedelta(hours=2))
    newer = candidate(id="01J0000000000000000000000B")
    closer = candidate(id="01J0000000000000000000000C", signature=signature(MANHOLE[1], GAZETTEER))
    assert target(ticket(), newer, older) == older.id
    assert target(ticket(), older, newer, closer) == closer.id


def test_a_parent_received_after_its_child_within_the_window_is_taken() -> None:
    assert target(ticket(), candidate(at=utcnow() + timedelta(minutes=5))) is not None


def test_the_dispatch_model_files_some_wordings_elsewhere_first(catalogue: tuple[Category, ...]) -> None:
    """Why a ticket looks under all its suggestions: some of the thirty are suggested elsewhere
    first, municipal facilities in their three."""
    model = train(catalogue, load_examples(LABELLED, catalogue))
    firsts = [suggest(model, text)[0].category for text in MANHOLE]
    assert firsts.count("municipal_facility") >= 25
    assert all("municipal_facility" in {s.category for s in suggest(model, text)} for text in MANHOLE)
    assert GAZETTEER.place(OTHER_STREET) == "芝罘区/北马路"


def test_the_citizen_is_named_by_every_identity_the_channels_give() -> None:
    both = ticket(citizen=Citizen(phone="13900139000", wechat_openid="oAbc", telegram_chat_id=7))
    assert identities(both) == ("phone:13900139000", "wechat:oAbc", "telegram:7")
    assert identities(ticket(channel="web")) == ()


def test_related_are_the_citizens_other_open_tickets_newest_first_bounded() -> None:
    others = [("a", "queued"), ("me", "queued"), ("b", "submitted"), ("c", "claimed"), ("d", "offered"), ("a", "")]
    assert related("me", others, 10) == ("a", "c", "d")
    assert related("me", others, 2) == ("a", "c")
    assert related("me", others, 0) == ()


def test_the_example_config_lists_four_districts_of_yantai() -> None:
    assert [district.name for district in SETTINGS.districts] == ["芝罘区", "莱山区", "福山区", "牟平区"]
    assert all(district.streets for district in SETTINGS.districts)


def test_settings_are_bounded() -> None:
    with pytest.raises(ValueError, match="threshold"):
        MergeSettings(threshold=0)
    with pytest.raises(ValueError, match="max_bucket"):
        MergeSettings(max_bucket=0)
    assert Path(EXAMPLE_CONFIG).exists()


def test_lanes_keep_tickets_that_could_merge_or_share_a_citizen_in_order() -> None:
    keyed = [
        ("t1", ("street:芝罘区/南大街",)),
        ("t2", ("phone:13800000001",)),
        ("t3", ()),
        ("t4", ("phone:13800000002", "street:芝罘区/南大街")),
        ("t5", ("phone:13800000001", "street:莱山区/观海路")),
        ("t6", ("phone:13800000002", "street:莱山区/观海路")),  # ties t4's lane and t5's lane
        ("t7", ("street:福山区/福海路",)),
    ]
    assert lanes(keyed) == [["t1", "t4", "t2", "t5", "t6"], ["t3"], ["t7"]]
    assert lanes([("a", ()), ("b", ())]) == [["a"], ["b"]], "tied to nothing: a lane each"
