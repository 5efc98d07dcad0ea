"""What triage decides about one ticket (pure): alerts from every piece of what the citizen said,
flags and the priority they ask for, deadlines by the chosen or suggested category."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.config import DeadlinesConfig, SensitiveConfig
from gateway.ticket import ConversationMessage, HistoryEntry, Ticket, TranscriptSegment
from gateway.triage.assess import (
    ACTION,
    ACTOR,
    AlreadyTriaged,
    Triager,
    assess,
    flagged_queue,
    raised_priority,
    reassess,
    said,
)
from gateway.triage.catalogue import LABELLED, Category, load_examples
from gateway.triage.dispatch import train
from gateway.triage.sensitive import SensitiveMatcher
from tests.conftest import ConfigFactory
from tests.helpers import queued_ticket
from tests.triage.conftest import SHIPPED_SENSITIVE

SHIPPED = SensitiveConfig.model_validate(SHIPPED_SENSITIVE)
PRIORITIES = {"urgent": 5, "enterprise": 7, "sensitive_high": 6, "sensitive_critical": 9}
# Wednesday 2026-12-02, 10:00 in Shandong (UTC+8).
WEDNESDAY = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def triager(catalogue: tuple[Category, ...]) -> Triager:
    calendar = DeadlinesConfig().calendar  # office hours Monday to Friday, Shandong's UTC+8
    return Triager(
        model=train(catalogue, load_examples(LABELLED, catalogue)),
        matcher=SensitiveMatcher(SHIPPED.words, context_chars=SHIPPED.context_chars),
        categories={category.id: category for category in catalogue},
        calendar=calendar,
        flag_priority=PRIORITIES,
    )


def test_a_threat_in_the_text_flags_the_ticket_and_raises_it_to_the_top(triager: Triager) -> None:
    ticket = queued_ticket("m1", text="拖欠工资半年了，再不给钱我就跳 楼给你们看", received_at=WEDNESDAY)
    triaged = assess(ticket, triager, WEDNESDAY)
    assert [(a.word, a.severity, a.source) for a in triaged.alerts] == [("跳楼", 3, "text")]
    assert "跳 楼给你们看" in triaged.alerts[0].context, "the context quotes the text as written"
    assert {"sensitive", "sensitive_critical"} <= set(triaged.flags)
    assert triaged.priority == 9
    assert triaged.suggestions[0].category == "wage_arrears"


def test_a_near_miss_raises_nothing(triager: Triager) -> None:
    ticket = queued_ticket("m1", text="商场搞跳楼价大甩卖，噪音太大", received_at=WEDNESDAY)
    triaged = assess(ticket, triager, WEDNESDAY)
    assert triaged.alerts == () and "sensitive" not in triaged.flags and triaged.priority == ticket.priority


def test_alerts_come_from_what_the_caller_said_and_the_citizens_later_messages(triager: Triager) -> None:
    segments = (
        TranscriptSegment(speaker="agent", text="您别激动 不想活了这种话别说", start=0, end=1, confidence=0.9),
        TranscriptSegment(speaker="caller", text="我真的不想活了", start=1, end=2, confidence=0.8),
    )
    voice = queued_ticket("v1", channel="voice", transcript=segments, received_at=WEDNESDAY)
    assert [(a.source, a.word) for a in assess(voice, triager, WEDNESDAY).alerts] == [("transcript", "不想活了")]
    messages = (
        ConversationMessage(direction="in", id="m1", at=WEDNESDAY, text="暖气不热"),
        ConversationMessage(direction="out", id="1-0", at=WEDNESDAY, text="我们已转供热公司", status="sent"),
        ConversationMessage(direction="in", id="m2", at=WEDNESDAY, text="再不来修我就去喝农药"),
    )
    sms = queued_ticket("m1", channel="sms", text="暖气不热", messages=messages, received_at=WEDNESDAY)
    assert [(a.source, a.word) for a in assess(sms, triager, WEDNESDAY).alerts] == [("message", "喝农药")]
    assert [source for source, _ in said(sms)] == ["text", "message"], "the first message is the text"


def test_priority_is_raised_never_lowered() -> None:
    assert raised_priority(0, ("sensitive", "sensitive_high"), PRIORITIES) == 6
    assert raised_priority(8, ("sensitive", "sensitive_high"), PRIORITIES) == 8
    assert raised_priority(3, ("sensitive",), PRIORITIES) == 3


def test_deadlines_follow_the_chosen_category_else_the_best_suggestion(triager: Triager) -> None:
    gas = assess(queued_ticket("m1", text="楼道里好大一股煤气味", received_at=WEDNESDAY), triager, WEDNESDAY)
    assert gas.suggestions[0].category == "gas_leak"
    assert [(c.name, c.limit, c.due) for c in gas.clocks] == [("resolve", "2h", WEDNESDAY + timedelta(hours=2))]
    chosen = queued_ticket("m2", text="楼道里好大一股煤气味", category="social_insurance", received_at=WEDNESDAY)
    clocks = assess(chosen, triager, WEDNESDAY).clocks
    # Received Wednesday: the 3rd working day after is Monday, due when its office closes.
    assert [(c.limit, c.due.astimezone(UTC).date().isoformat()) for c in clocks] == [("3wd", "2026-12-07")]


def test_the_enterprise_line_carries_the_2110_clocks(triager: Triager) -> None:
    ticket = queued_ticket("m1", text="我们公司办营业执照变更卡住了", flags=("enterprise",), received_at=WEDNESDAY)
    clocks = assess(ticket, triager, WEDNESDAY).clocks
    assert [(c.name, c.limit) for c in clocks][:2] == [("contact", "2h"), ("reply", "1wd")]
    assert clocks[0].due == WEDNESDAY + timedelta(hours=2) and clocks[2].name == "resolve"


def test_a_ticket_triaged_before_is_not_assessed_again(triager: Triager) -> None:
    entry = HistoryEntry(at=WEDNESDAY, actor=ACTOR, action=ACTION)
    ticket: Ticket = queued_ticket("m1", text="我要跳楼", history=(entry,))
    with pytest.raises(AlreadyTriaged):
        assess(ticket, triager, WEDNESDAY)


def test_the_example_configs_flags_raise_as_documented(config_factory: ConfigFactory) -> None:
    routing = config_factory().routing.flag_priority
    assert routing["sensitive_critical"] > routing["sensitive_high"] > routing["urgent"]


def test_a_category_marked_enterprise_puts_the_ticket_on_the_enterprise_line(triager: Triager) -> None:
    enterprise = next(category for category in triager.categories.values() if category.enterprise)
    ticket = queued_ticket("m1", text="我们公司的事", category=enterprise.id, received_at=WEDNESDAY)
    assessed = assess(ticket, triager, WEDNESDAY)
    assert "enterprise" in assessed.flags and assessed.priority == PRIORITIES["enterprise"]
    assert [clock.name for clock in assessed.clocks] == ["contact", "reply", "resolve"]


def test_what_the_caller_says_after_triage_adds_its_alerts_once(triager: Triager) -> None:
    call = queued_ticket("c1", channel="voice", text="小区停水两天了", received_at=WEDNESDAY)
    triaged = assess(call, triager, WEDNESDAY)
    assert triaged.alerts == () and triaged.priority == 0
    assert reassess(triaged, triager, WEDNESDAY) is None, "nothing said since: nothing to write"
    later = WEDNESDAY + timedelta(minutes=2)
    segment = TranscriptSegment(text="再没人管我就从楼上跳下去不对是跳楼", start=30, end=34, confidence=0.8)
    spoken = triaged.model_copy(update={"transcript": (segment,)})
    outcome = reassess(spoken, triager, later)
    assert outcome is not None
    amended, new = outcome
    assert [(a.word, a.source, a.severity, a.at) for a in new] == [("跳楼", "transcript", 3, later)]
    assert amended.alerts == new and amended.priority == 9
    assert {"sensitive", "sensitive_critical"} <= set(amended.flags)
    assert amended.suggestions == triaged.suggestions and amended.clocks == triaged.clocks, "only the alerts change"
    assert reassess(amended, triager, later) is None, "the same words found again are not new"
    near_miss = TranscriptSegment(text="家里跳闸了", start=40, end=41, confidence=0.9)
    quieter = amended.model_copy(update={"transcript": (segment, near_miss)})
    assert reassess(quieter, triager, later) is None


def test_a_message_after_triage_adds_to_the_alerts_it_had(triager: Triager) -> None:
    first = queued_ticket("s1", channel="sms", text="楼下小作坊一直在用童工", received_at=WEDNESDAY)
    triaged = assess(first, triager, WEDNESDAY)
    assert [a.source for a in triaged.alerts] == ["text"]
    message = ConversationMessage(direction="in", id="s1-2", at=WEDNESDAY, text="不给说法我就跳楼")
    outcome = reassess(triaged.model_copy(update={"messages": (message,)}), triager, WEDNESDAY)
    assert outcome is not None
    amended, new = outcome
    assert [(a.word, a.source) for a in new] == [("跳楼", "message")]
    assert [a.severity for a in amended.alerts] == sorted((a.severity for a in amended.alerts), reverse=True)
    assert len(amended.alerts) == len(triaged.alerts) + 1 and amended.priority == 9


def test_only_a_waiting_ticket_moves_to_the_queue_of_a_flag_triage_added() -> None:
    routes = {"enterprise": "enterprise"}
    waiting = queued_ticket("q1", text="x")
    assert flagged_queue(waiting, ("enterprise",), routes) == "enterprise"
    assert flagged_queue(waiting, ("sensitive",), routes) == "general"
    taken = waiting.model_copy(update={"status": "claimed"})
    assert flagged_queue(taken, ("enterprise",), routes) == "general", "an agent has it: it stays"
    came_flagged = waiting.model_copy(update={"flags": ("enterprise",), "queue": "housing"})
    assert flagged_queue(came_flagged, ("enterprise",), routes) == "housing", "intake routed it already"
