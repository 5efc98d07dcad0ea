"""Business hours as data: weekly hours, public holidays and 调休 make-up working days.

A calendar answers one question, :func:`is_open`, for a datetime the caller passes in; it never reads
a clock. China has one UTC offset and no DST, so a fixed ``utc_offset_hours`` replaces a tz database
(which would be file I/O): aware datetimes are converted to it, naive ones are taken as local time.

Precedence for a date: ``always_open`` > holiday (closed) > make-up working day (``makeup_hours``,
default Monday's hours) > the weekday's hours.
"""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_DAY_MINUTES = 24 * 60
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Hours(BaseModel):
    """A half-open range of minutes after midnight; written ``"08:30-12:00"`` (``"24:00"`` allowed as end)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int = Field(ge=0, lt=_DAY_MINUTES)
    end: int = Field(gt=0, le=_DAY_MINUTES)

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        match = _RANGE.match(data.strip())
        if match is None:
            raise ValueError(f"expected 'HH:MM-HH:MM', got {data!r}")
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        if m1 > 59 or m2 > 59:
            raise ValueError(f"minutes out of range in {data!r}")
        return {"start": h1 * 60 + m1, "end": h2 * 60 + m2}

    @model_validator(mode="after")
    def _ordered(self) -> Hours:
        # Overnight ranges are not supported: split them at midnight ("22:00-24:00" + "00:00-02:00").
        if self.end <= self.start:
            raise ValueError(f"range {self} ends before it starts")
        return self

    def contains(self, minute: int) -> bool:
        return self.start <= minute < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def _check_no_overlap(ranges: tuple[Hours, ...], where: str) -> None:
    ordered = sorted(ranges, key=lambda r: r.start)
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise ValueError(f"{where}: {before} overlaps {after}")


class WeeklyHours(BaseModel):
    """Open hours per weekday; a missing day is closed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mon: tuple[Hours, ...] = ()
    tue: tuple[Hours, ...] = ()
    wed: tuple[Hours, ...] = ()
    thu: tuple[Hours, ...] = ()
    fri: tuple[Hours, ...] = ()
    sat: tuple[Hours, ...] = ()
    sun: tuple[Hours, ...] = ()

    @model_validator(mode="after")
    def _no_overlaps(self) -> WeeklyHours:
        for weekday in range(7):
            _check_no_overlap(self.on(weekday), f"weekly.{_WEEKDAYS[weekday]}")
        return self

    def on(self, weekday: int) -> tuple[Hours, ...]:
        """Hours for ``weekday`` as numbered by ``date.weekday()`` (Monday = 0)."""
        ranges: tuple[Hours, ...] = getattr(self, _WEEKDAYS[weekday])
        return ranges

    def is_empty(self) -> bool:
        return not any(self.on(weekday) for weekday in range(7))


class Calendar(BaseModel):
    """One named business calendar (``[ivr.calendars.<name>]`` in the config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    always_open: bool = False
    utc_offset_hours: float = Field(default=8.0, ge=-14, le=14)
    weekly: WeeklyHours = WeeklyHours()
    holidays: frozenset[date] = frozenset()
    makeup_workdays: frozenset[date] = frozenset()
    makeup_hours: tuple[Hours, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Calendar:
        both = sorted(self.holidays & self.makeup_workdays)
        if both:
            raise ValueError(f"makeup_workdays: {', '.join(map(str, both))} also listed in holidays")
        if not self.always_open and self.weekly.is_empty() and not self.makeup_hours:
            raise ValueError("weekly: a calendar that is never open; set hours or always_open = true")
        if self.makeup_hours is not None:
            _check_no_overlap(self.makeup_hours, "makeup_hours")
        return self


ALWAYS_OPEN = Calendar(always_open=True)
"""The 7x24 calendar (the 12345 hotline itself never closes)."""


def local_time(cal: Calendar, now: datetime) -> datetime:
    """``now`` on the calendar's wall clock (naive datetimes are assumed to be local already)."""
    if now.tzinfo is None:
        return now
    return now.astimezone(timezone(timedelta(hours=cal.utc_offset_hours))).replace(tzinfo=None)


def hours_on(cal: Calendar, day: date) -> tuple[Hours, ...]:
    """The open ranges of ``day`` after applying holidays and make-up working days."""
    if day in cal.holidays:
        return ()
    if day in cal.makeup_workdays:
        return cal.makeup_hours if cal.makeup_hours is not None else cal.weekly.mon
    return cal.weekly.on(day.weekday())


def is_open(cal: Calendar, now: datetime) -> bool:
    """Whether the calendar is open at ``now``."""
    if cal.always_open:
        return True
    local = local_time(cal, now)
    minute = local.hour * 60 + local.minute
    return any(r.contains(minute) for r in hours_on(cal, local.date()))
