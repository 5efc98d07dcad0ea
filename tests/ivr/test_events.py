"""Events and actions are frozen, slotted value objects; DTMF keys are checked at construction."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime

import pytest

from gateway.ivr import actions, events
from gateway.ivr.events import DTMF_DIGITS, EVENT_TYPES, Digit


def test_every_dtmf_key_is_a_digit_event() -> None:
    assert {Digit(key).digit for key in "0123456789*#"} == DTMF_DIGITS


@pytest.mark.parametrize("key", ["", "A", "10", " ", "a", "１"])
def test_non_dtmf_keys_are_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="DTMF"):
        Digit(key)


@pytest.mark.parametrize("kind", [*typing.get_args(events.Event), *typing.get_args(actions.Action)])
def test_events_and_actions_are_frozen_and_slotted(kind: type) -> None:
    params = dataclasses.fields(kind)
    assert kind.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert "__slots__" in vars(kind)
    assert all(p.name in kind.__slots__ for p in params)  # type: ignore[attr-defined]


def test_event_types_lists_the_whole_union() -> None:
    assert set(EVENT_TYPES) == set(typing.get_args(events.Event))


def test_events_compare_by_value() -> None:
    now = datetime(2026, 1, 5, 9, 0)
    assert events.Answered(now, "1", "2") == events.Answered(now, "1", "2")
    assert events.HungUp() == events.HungUp()
    with pytest.raises(dataclasses.FrozenInstanceError):
        events.TimerFired("x").name = "y"  # type: ignore[misc]


@pytest.mark.parametrize("action", ["accept", "confirm", "reject"])
def test_navigation_decisions(action: str) -> None:
    route = events.SpeechRoute(action, "housing", "住房", 0.9)  # type: ignore[arg-type]
    assert route.action == action


@pytest.mark.parametrize("action", ["", "ACCEPT", "route", "unsure"])
def test_unknown_navigation_decisions_are_rejected(action: str) -> None:
    with pytest.raises(ValueError, match="navigation decision"):
        events.SpeechRoute(action, None, "", 0.0)  # type: ignore[arg-type]


def test_navigation_recordings_are_a_recording_kind() -> None:
    assert "navigation" in typing.get_args(actions.RecordingKind)
