"""Deadlines on the business calendar: weekends, public holidays, 调休 Saturdays, 2110, colours, 督办."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import DeadlinesConfig
from gateway.ivr.calendar import ALWAYS_OPEN, Calendar
from gateway.ticket import DeadlineClock, HistoryEntry
from gateway.triage.deadlines import (
    COLOUR_ORDER,
    Clock,
    Limit,
    clock_colour,
    clock_states,
    clocks_of,
    colour,
    deadline,
    escalation_step,
    escalations,
    next_escalation,
    sent_escalations,
    ticket_clocks,
)

# 2026: holidays and 调休 days from the State Council notice; office hours 08:30-17:30.
from tests.helpers import queued_ticket
from tests.ivr.test_calendar import HOLIDAYS_2026, MAKEUP_2026, OFFICE

CST = timezone(timedelta(hours=8))
ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / ".." / "shared" / "triage" / "catalogue.toml"


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=CST)


def test_working_days_skip_the_weekend() -> None:
    # Friday 6 March: the day of receipt does not count; Mon, Tue, Wed are the three working days.
    assert deadline(local(3, 6, 10), "3wd", OFFICE) == local(3, 11, 17, 30)
    # Received on a Sunday: Monday to Friday.
    assert deadline(local(3, 8, 12), "5wd", OFFICE) == local(3, 13, 17, 30)


def test_working_days_skip_a_public_holiday_and_count_the_makeup_saturday() -> None:
    # 30 September: 国庆 1-7 October are holidays, Saturday 10 October is a 调休 working day.
    assert deadline(local(9, 30, 9), "3wd", OFFICE) == local(10, 10, 17, 30)
    # Friday 13 February: Saturday 14 is a working day, 15-23 are 春节, 24 is a Tuesday.
    assert deadline(local(2, 13, 15), "1wd", OFFICE) == local(2, 14, 17, 30)
    assert deadline(local(2, 13, 15), "2wd", OFFICE) == local(2, 24, 17, 30)


def test_a_utc_receipt_is_counted_on_the_local_date() -> None:
    # 17:00 UTC on Friday is 01:00 on Saturday in the city: the day of receipt is Saturday.
    received = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)
    assert deadline(received, "1wd", OFFICE) == local(3, 9, 17, 30)


def test_hours_run_on_the_wall_clock_through_nights_and_holidays() -> None:
    assert deadline(local(10, 3, 23, 30), "2h", OFFICE) == local(10, 4, 1, 30)
    assert deadline(local(10, 3, 23, 30), "24h", OFFICE) == local(10, 4, 23, 30)


def test_every_catalogue_class_parses_and_enterprise_categories_carry_2110() -> None:
    categories = tomllib.loads(CATALOGUE.read_text(encoding="utf-8"))["category"]
    received = local(3, 6, 16)
    for category in categories:
        clocks = ticket_clocks(received, category["deadline"], category["enterprise"], OFFICE)
        assert [clock.name for clock in clocks] == (
            ["contact", "reply", "resolve"] if category["enterprise"] else ["resolve"]
        ), category["id"]
        assert all(clock.due > received for clock in clocks)
    assert {category["deadline"] for category in categories} == {"2h", "24h", "3wd", "5wd", "15wd"}


def test_2110_on_an_enterprise_ticket() -> None:
    # Friday 16:00, a complex (15wd) enterprise category (清欠): 2 hours, 1 working day, 10 working days.
    contact, reply, resolve = ticket_clocks(local(3, 6, 16), "15wd", True, OFFICE)
    assert (contact.name, contact.limit, contact.due) == ("contact", Limit(2, "h"), local(3, 6, 18))
    assert (reply.name, reply.limit, reply.due) == ("reply", Limit(1, "wd"), local(3, 9, 17, 30))
    assert (resolve.name, resolve.limit, resolve.due) == ("resolve", Limit(10, "wd"), local(3, 20, 17, 30))


def test_an_enterprise_category_shorter_than_10_working_days_keeps_its_own_limit() -> None:
    *_, resolve = ticket_clocks(local(3, 6, 16), "3wd", True, OFFICE)
    assert (resolve.limit, resolve.due) == (Limit(3, "wd"), local(3, 11, 17, 30))


def test_a_citizen_ticket_has_one_clock() -> None:
    (resolve,) = ticket_clocks(local(3, 6, 16), "5wd", False, OFFICE)
    assert (resolve.name, resolve.due) == ("resolve", local(3, 13, 17, 30))


def test_colour_changes_exactly_on_time() -> None:
    received, due = local(3, 6, 8), local(3, 6, 18)  # ten hours; yellow after eight
    assert colour(local(3, 6, 15, 59), received, due, 0.8) == "green"
    assert colour(local(3, 6, 16), received, due, 0.8) == "yellow"
    assert colour(local(3, 6, 17, 59), received, due, 0.8) == "yellow"
    assert colour(local(3, 6, 18), received, due, 0.8) == "red"


def test_a_working_day_clock_turns_red_at_the_close_not_at_midnight() -> None:
    received = local(3, 6, 10)
    due = deadline(received, "3wd", OFFICE)
    assert colour(local(3, 11, 17, 29), received, due, 0.8) == "yellow"
    assert colour(local(3, 11, 17, 30), received, due, 0.8) == "red"


def test_a_met_clock_keeps_the_colour_it_was_met_in() -> None:
    received, due = local(3, 6, 8), local(3, 6, 18)
    on_time = Clock("contact", Limit(10, "h"), received, due, met_at=local(3, 6, 9))
    late = Clock("contact", Limit(10, "h"), received, due, met_at=local(3, 6, 19))
    assert clock_colour(on_time, local(3, 9, 12), 0.8) == "green"
    assert clock_colour(late, local(3, 9, 12), 0.8) == "red"
    assert clock_colour(late, local(3, 6, 10), 0.8) == "green"  # seen before it was met


def test_escalation_reminder_the_working_day_after_and_report_five_later() -> None:
    (clock,) = ticket_clocks(local(3, 6, 10), "5wd", False, OFFICE)  # due Friday 13 March 17:30
    assert escalations((clock,), local(3, 16, 8, 29), OFFICE) == ()
    (reminder,) = escalations((clock,), local(3, 16, 8, 30), OFFICE)
    assert (reminder.key, reminder.at) == ("resolve:reminder", local(3, 16, 8, 30))
    assert escalations((clock,), local(3, 23, 8, 29), OFFICE) == (reminder,)
    _, report = escalations((clock,), local(3, 23, 8, 30), OFFICE)
    assert (report.key, report.at) == ("resolve:report", local(3, 23, 8, 30))


def test_escalation_steps_over_a_holiday() -> None:
    # Due 30 September's close: the next working day is 8 October (国庆); five more are 9, the 调休
    # Saturday 10, 12, 13 and 14 October.
    (clock,) = ticket_clocks(local(9, 25, 10), "3wd", False, OFFICE)  # 25-27 中秋; 28, 29, 30
    assert clock.due == local(9, 30, 17, 30)
    reminder, report = escalations((clock,), local(12, 1, 0), OFFICE)
    assert (reminder.at, report.at) == (local(10, 8, 8, 30), local(10, 14, 8, 30))


def test_no_escalation_for_a_clock_met_on_time_and_none_after_a_late_meeting() -> None:
    (clock,) = ticket_clocks(local(3, 6, 10), "5wd", False, OFFICE)
    met = Clock(clock.name, clock.limit, clock.received_at, clock.due, met_at=clock.due)
    assert escalations((met,), local(4, 30, 12), OFFICE) == ()
    late = Clock(clock.name, clock.limit, clock.received_at, clock.due, met_at=local(3, 18, 12))
    assert [event.kind for event in escalations((late,), local(4, 30, 12), OFFICE)] == ["reminder"]


def test_a_ticket_is_first_looked_at_when_its_first_escalation_could_fall_due() -> None:
    # Received Tuesday 10 March, 3 working days: due Friday's close; the reminder opens Monday.
    (resolve,) = ticket_clocks(local(3, 10, 10), "3wd", False, OFFICE)
    assert resolve.due == local(3, 13, 17, 30)
    assert next_escalation((resolve,), OFFICE) == local(3, 16, 8, 30), "over the weekend"
    # Due Wednesday 30 September: 国庆 1-7 October, so the working day after opens on the 8th.
    (holiday,) = ticket_clocks(local(9, 25, 10), "3wd", False, OFFICE)
    assert next_escalation((holiday,), OFFICE) == local(10, 8, 8, 30), "over the holiday"
    # Due Friday 13 February's close (the 调休 Saturday 14 counts): 春节 to the 23rd, reminder the 24th.
    (spring,) = ticket_clocks(local(2, 10, 10), "3wd", False, OFFICE)
    assert spring.due == local(2, 13, 17, 30)
    assert next_escalation((spring,), OFFICE) == local(2, 14, 8, 30), "the make-up Saturday is a working day"
    # 2110: the contact clock (2 h from Friday 16:00) owes first, on Monday's opening.
    enterprise = ticket_clocks(local(3, 6, 16), "15wd", True, OFFICE)
    assert next_escalation(enterprise, OFFICE) == local(3, 9, 8, 30)
    contact, reply, _ = enterprise
    met = Clock(contact.name, contact.limit, contact.received_at, contact.due, met_at=local(3, 6, 17))
    assert next_escalation((met, reply), OFFICE) == local(3, 10, 8, 30), "the contact met in time: the reply's"
    assert next_escalation((met,), OFFICE) is None, "met in time: nothing to schedule"


def test_the_loops_step_sends_what_is_due_once_and_looks_again_at_the_next() -> None:
    (clock,) = ticket_clocks(local(3, 10, 10), "3wd", False, OFFICE)
    friday_evening = escalation_step((clock,), frozenset(), local(3, 13, 18), OFFICE)
    assert (friday_evening.send, friday_evening.next_at) == ((), local(3, 16, 8, 30))
    monday = escalation_step((clock,), frozenset(), local(3, 16, 8, 30), OFFICE)
    assert [e.key for e in monday.send] == ["resolve:reminder"] and monday.next_at == local(3, 23, 8, 30)
    again = escalation_step((clock,), frozenset({"resolve:reminder"}), local(3, 16, 9), OFFICE)
    assert (again.send, again.next_at) == ((), local(3, 23, 8, 30)), "sent before: not again"
    report = escalation_step((clock,), frozenset({"resolve:reminder"}), local(3, 23, 8, 30), OFFICE)
    assert [e.key for e in report.send] == ["resolve:report"] and report.next_at is None, "nothing more can be owed"
    # A loop that was away over both sends both at once.
    late = escalation_step((clock,), frozenset(), local(4, 1, 12), OFFICE)
    assert [e.key for e in late.send] == ["resolve:reminder", "resolve:report"] and late.next_at is None
    # Met (the ticket submitted) on Wednesday 18 March: the reminder was owed, the report is not.
    met = Clock(clock.name, clock.limit, clock.received_at, clock.due, met_at=local(3, 18, 12))
    assert escalation_step((met,), frozenset({"resolve:reminder"}), local(3, 18, 13), OFFICE).next_at is None
    in_time = Clock(clock.name, clock.limit, clock.received_at, clock.due, met_at=local(3, 13, 12))
    never = escalation_step((in_time,), frozenset(), local(4, 1, 12), OFFICE)
    assert (never.send, never.next_at) == ((), None), "met in time: never escalated"


def test_a_tickets_clocks_show_the_escalations_its_history_says_it_was_sent() -> None:
    received = local(3, 10, 10)
    (clock,) = ticket_clocks(received, "3wd", False, OFFICE)
    stored = DeadlineClock(name="resolve", limit="3wd", due=clock.due)
    sent = HistoryEntry(at=local(3, 16, 8, 31), actor="triage", action="escalated",
                        detail={"clock": "resolve", "kind": "reminder"})  # fmt: skip
    other = HistoryEntry(at=local(3, 16, 9), actor="agent:a1", action="escalated", detail={"kind": "report"})
    ticket = queued_ticket("m-esc", received_at=received, clocks=(stored,), history=(sent, other))
    assert clocks_of(ticket) == (clock,)
    assert list(sent_escalations(ticket)) == ["resolve:reminder"], "only triage's lines count"
    (state,) = clock_states(ticket, local(3, 16, 10), 0.8)
    assert state.colour == "red"
    assert state.as_dict()["escalations"] == [{"kind": "reminder", "at": local(3, 16, 8, 31).isoformat()}]


@pytest.mark.parametrize("text", ["", "5", "wd", "0h", "5d", "1.5h", "5 wd", "10000h"])
def test_a_malformed_deadline_class_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="deadline class"):
        Limit.parse(text)


def test_the_config_refuses_a_calendar_without_working_days() -> None:
    assert DeadlinesConfig().yellow_share == 0.8
    with pytest.raises(ValueError, match="always_open"):
        DeadlinesConfig.model_validate({"calendar": ALWAYS_OPEN.model_dump()})
    with pytest.raises(ValueError, match="yellow_share"):
        DeadlinesConfig.model_validate({"yellow_share": 1.0})


def test_a_calendar_closed_for_a_year_is_an_error_not_a_hang() -> None:
    closed = Calendar.model_validate({"weekly": {"mon": ["09:00-17:00"]}, "holidays": _all_mondays(2026)})
    with pytest.raises(ValueError, match="no working day"):
        deadline(local(1, 1, 9), "1wd", closed)


def test_the_example_config_counts_2026s_holidays_and_makeup_days() -> None:
    raw = tomllib.loads((ROOT / "config" / "gateway.toml").read_text(encoding="utf-8"))
    calendar = DeadlinesConfig.model_validate(raw["deadlines"]).calendar
    assert calendar.holidays == frozenset(HOLIDAYS_2026)
    assert calendar.makeup_workdays == frozenset(MAKEUP_2026)
    assert calendar.weekly == OFFICE.weekly


def _all_mondays(year: int) -> list[str]:
    day = datetime(year, 1, 1)
    days = [day + timedelta(days=offset) for offset in range(800)]
    return [d.date().isoformat() for d in days if d.weekday() == 0]


receipts = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 1), timezones=st.just(CST))
classes = st.sampled_from(["2h", "24h", "1wd", "3wd", "5wd", "10wd", "15wd"])


@given(received=receipts, deadline_class=classes)
def test_due_is_never_before_received(received: datetime, deadline_class: str) -> None:
    assert deadline(received, deadline_class, OFFICE) > received


@given(
    received=receipts,
    deadline_class=classes,
    first=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    share=st.floats(min_value=0.05, max_value=0.95),
)
def test_colour_never_goes_back(
    received: datetime, deadline_class: str, first: timedelta, later: timedelta, share: float
) -> None:
    due = deadline(received, deadline_class, OFFICE)
    before = colour(received + first, received, due, share)
    after = colour(received + first + later, received, due, share)
    assert COLOUR_ORDER[before] <= COLOUR_ORDER[after]


def test_a_tickets_clocks_turn_colour_with_time_and_stop_when_its_history_meets_them() -> None:
    received = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    clocks = (
        DeadlineClock(name="contact", limit="2h", due=received + timedelta(hours=2)),
        DeadlineClock(name="resolve", limit="24h", due=received + timedelta(hours=24)),
    )
    claimed = HistoryEntry(at=received + timedelta(hours=1), actor="agent:a1", action="claimed")
    ticket = queued_ticket("m1", received_at=received, clocks=clocks)
    at = received + timedelta(hours=1, minutes=45)  # 87.5 % of the contact clock, 7 % of resolve
    assert [(s.name, s.colour) for s in clock_states(ticket, at, 0.8)] == [("contact", "yellow"), ("resolve", "green")]
    late = received + timedelta(hours=30)
    assert [s.colour for s in clock_states(ticket, late, 0.8)] == ["red", "red"]
    met = ticket.model_copy(update={"history": (claimed,)})
    states = clock_states(met, late, 0.8)
    assert [(s.colour, s.met_at) for s in states] == [("green", claimed.at), ("red", None)], "met in time stays green"
    assert states[0].as_dict()["met_at"] == claimed.at.isoformat() and "met_at" not in states[1].as_dict()
