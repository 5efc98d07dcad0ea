"""Business-hours calendars: weekly hours, 2026 public holidays and 调休 make-up working days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from gateway.ivr.calendar import ALWAYS_OPEN, Calendar, Hours, hours_on, is_open, local_time

WORKDAY = ["08:30-12:00", "13:30-17:30"]

# 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04).
HOLIDAYS_2026 = [
    *[date(2026, 1, d) for d in (1, 2, 3)],  # 元旦
    *[date(2026, 2, d) for d in range(15, 24)],  # 春节
    *[date(2026, 4, d) for d in (4, 5, 6)],  # 清明
    *[date(2026, 5, d) for d in range(1, 6)],  # 劳动节
    *[date(2026, 6, d) for d in (19, 20, 21)],  # 端午
    *[date(2026, 9, d) for d in (25, 26, 27)],  # 中秋
    *[date(2026, 10, d) for d in range(1, 8)],  # 国庆
]
MAKEUP_2026 = [
    date(2026, 1, 4),
    date(2026, 2, 14),
    date(2026, 2, 28),
    date(2026, 5, 9),
    date(2026, 9, 20),
    date(2026, 10, 10),
]

OFFICE = Calendar.model_validate(
    {
        "weekly": {day: WORKDAY for day in ("mon", "tue", "wed", "thu", "fri")},
        "holidays": HOLIDAYS_2026,
        "makeup_workdays": MAKEUP_2026,
    }
)


def at(day: date, hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes)


def test_the_2026_makeup_days_are_weekends_and_holidays_cover_the_weekdays_off() -> None:
    assert all(day.weekday() >= 5 for day in MAKEUP_2026)
    assert date(2026, 2, 17).weekday() == 1  # 春节 (正月初一) is a Tuesday


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (at(date(2026, 3, 10), "09:00"), True),  # Tuesday morning
        (at(date(2026, 3, 10), "12:30"), False),  # lunch break
        (at(date(2026, 3, 10), "17:29"), True),
        (at(date(2026, 3, 10), "17:30"), False),  # end is exclusive
        (at(date(2026, 3, 10), "08:29"), False),
        (at(date(2026, 3, 14), "10:00"), False),  # ordinary Saturday
        (at(date(2026, 2, 16), "10:00"), False),  # Monday in 春节
        (at(date(2026, 10, 8), "10:00"), True),  # 国庆 is 10-01..10-07; the 8th is a working Thursday
    ],
)
def test_office_hours(when: datetime, expected: bool) -> None:
    assert is_open(OFFICE, when) is expected


@pytest.mark.parametrize("day", HOLIDAYS_2026)
def test_every_2026_holiday_is_closed(day: date) -> None:
    assert hours_on(OFFICE, day) == ()
    assert not is_open(OFFICE, at(day, "10:00"))


@pytest.mark.parametrize("day", MAKEUP_2026)
def test_makeup_working_days_use_mondays_hours(day: date) -> None:
    assert is_open(OFFICE, at(day, "10:00"))
    assert not is_open(OFFICE, at(day, "12:30"))


def test_makeup_hours_override() -> None:
    cal = OFFICE.model_copy(update={"makeup_hours": (Hours.model_validate("09:00-12:00"),)})
    assert not is_open(cal, at(date(2026, 2, 14), "14:00"))
    assert is_open(cal, at(date(2026, 2, 14), "09:00"))


def test_always_open_ignores_everything() -> None:
    assert is_open(ALWAYS_OPEN, at(date(2026, 2, 17), "03:00"))
    assert is_open(OFFICE.model_copy(update={"always_open": True}), at(date(2026, 2, 17), "03:00"))


def test_aware_datetimes_are_converted_to_the_calendar_offset() -> None:
    utc_morning = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
    assert local_time(OFFICE, utc_morning) == datetime(2026, 3, 10, 9, 0)
    assert is_open(OFFICE, utc_morning)
    assert not is_open(OFFICE, datetime(2026, 3, 10, 9, 0, tzinfo=timezone(timedelta(hours=-5))))


def test_until_midnight() -> None:
    late = Calendar.model_validate({"weekly": {"sat": ["20:00-24:00"]}})
    assert is_open(late, at(date(2026, 3, 14), "23:59"))
    assert str(late.weekly.sat[0]) == "20:00-24:00"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weekly": {"mon": ["9:00-12:00"]}}, "HH:MM-HH:MM"),
        ({"weekly": {"mon": ["09:75-12:00"]}}, "minutes out of range"),
        ({"weekly": {"mon": ["12:00-09:00"]}}, "ends before it starts"),
        ({"weekly": {"mon": ["25:00-26:00"]}}, "less than 1440"),
        ({"weekly": {"mon": ["08:00-12:00", "11:00-13:00"]}}, "weekly.mon: 08:00-12:00 overlaps 11:00-13:00"),
        ({}, "never open"),
        (
            {"weekly": {"mon": WORKDAY}, "holidays": ["2026-01-04"], "makeup_workdays": ["2026-01-04"]},
            "2026-01-04",
        ),
        ({"weekly": {"funday": WORKDAY}}, "Extra inputs"),
    ],
)
def test_bad_calendars_are_rejected_with_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Calendar.model_validate(data)
