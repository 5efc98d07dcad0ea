"""When a media worker drains and stops (gateway/voice/lifeline.py), pure: heartbeats in, verdicts out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.voice.lifeline import DRAIN_PROMPT_SECONDS, Lifeline, Verdict, drain_seconds

PARENT = 4242
DRAIN = 60.0


def start(at: float = 100.0) -> Lifeline:
    return Lifeline(bound=5.0, drain=DRAIN, parent=PARENT, last_ok=at)


def test_heartbeats_taken_carry_on_and_move_the_last_good_one() -> None:
    line, verdict = start().beat(True, PARENT, 101.0, callers=1)
    assert verdict is Verdict.CARRY_ON and line.last_ok == 101.0 and line.lost_for(101.0) == 0.0


def test_redis_lost_stops_an_idle_worker_once_the_bound_has_passed_since_the_last_good_heartbeat() -> None:
    line = start()
    verdicts = []
    for now in (101.0, 102.0, 104.9, 105.0):
        line, verdict = line.beat(False, PARENT, now, callers=0)
        verdicts.append(verdict)
    assert verdicts == [Verdict.CARRY_ON] * 3 + [Verdict.STOP_REDIS_LOST]
    assert line.lost_for(105.0) == 5.0  # counted from the last heartbeat Redis took, as the core counts


def test_redis_lost_with_callers_drains_until_they_are_gone() -> None:
    line, verdict = start().beat(False, PARENT, 105.0, callers=2)
    assert verdict is Verdict.DRAIN and line.draining
    line, verdict = line.beat(False, PARENT, 130.0, callers=1)
    assert verdict is Verdict.CARRY_ON, "a caller leaving a message is not cut off"
    line, verdict = line.beat(False, PARENT, 131.0, callers=0)
    assert verdict is Verdict.STOP_REDIS_LOST and line.lost_for(131.0) == 31.0


def test_a_drain_ends_at_its_bound_with_callers_still_on_the_line() -> None:
    line, _ = start().beat(False, PARENT, 105.0, callers=1)
    line, verdict = line.beat(False, PARENT, 100.0 + 5.0 + DRAIN - 0.1, callers=1)
    assert verdict is Verdict.CARRY_ON
    _, verdict = line.beat(False, PARENT, 100.0 + 5.0 + DRAIN, callers=1)
    assert verdict is Verdict.STOP_REDIS_LOST


def test_redis_back_while_draining_is_said_once_but_the_drain_goes_on() -> None:
    line, _ = start().beat(False, PARENT, 105.0, callers=1)
    line, verdict = line.beat(True, PARENT, 106.0, callers=1)
    assert verdict is Verdict.REDIS_BACK and line.draining and not line.failing
    line, verdict = line.beat(True, PARENT, 107.0, callers=1)
    assert verdict is Verdict.CARRY_ON and line.draining, "one way: the core may have settled this worker"
    _, verdict = line.beat(True, PARENT, 108.0, callers=0)
    assert verdict is Verdict.STOP_REDIS_LOST


def test_redis_back_within_the_bound_is_said_once_and_the_count_starts_again() -> None:
    line, _ = start().beat(False, PARENT, 103.0, callers=1)
    line, verdict = line.beat(True, PARENT, 104.0, callers=1)
    assert verdict is Verdict.REDIS_BACK and not line.failing
    line, verdict = line.beat(True, PARENT, 105.0, callers=1)
    assert verdict is Verdict.CARRY_ON
    line, verdict = line.beat(False, PARENT, 108.0, callers=1)  # 3 s after the last good one: not yet
    assert verdict is Verdict.CARRY_ON


def test_a_new_parent_means_the_supervisor_died_whatever_redis_says() -> None:
    for redis_ok in (True, False):
        _, verdict = start().beat(redis_ok, 1, 100.5, callers=1)  # re-parented to init
        assert verdict is Verdict.STOP_SUPERVISOR_GONE


def test_the_drain_is_the_longest_voice_message_and_its_prompts() -> None:
    assert drain_seconds([120.0, 60.0]) == 120.0 + DRAIN_PROMPT_SECONDS
    assert drain_seconds([]) == DRAIN_PROMPT_SECONDS


@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=3.0)), max_size=40))
def test_an_idle_worker_stops_exactly_when_redis_has_been_silent_for_the_bound(beats: list[tuple[bool, float]]) -> None:
    line, now, last_ok = start(0.0), 0.0, 0.0
    for ok, gap in beats:
        now += gap
        line, verdict = line.beat(ok, PARENT, now, callers=0)
        if ok:
            last_ok = now
            continue
        assert (verdict is Verdict.STOP_REDIS_LOST) == (now - last_ok >= 5.0)


@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=9.0), st.integers(0, 2)), max_size=60))
def test_no_worker_runs_past_the_bound_and_the_drain_without_redis(beats: list[tuple[bool, float, int]]) -> None:
    line, now = start(0.0), 0.0
    for ok, gap, callers in beats:
        now += gap
        line, verdict = line.beat(ok, PARENT, now, callers=callers)
        if verdict is Verdict.STOP_REDIS_LOST:
            return
        assert now - line.last_ok < 5.0 + DRAIN, "past its bound and drain, a worker stops"
        if line.draining:
            assert callers > 0, "a draining worker with no caller left stops"
