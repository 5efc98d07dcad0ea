"""When a media worker stops on its own (gateway/voice/lifeline.py), pure: heartbeats in, verdicts out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.voice.lifeline import Lifeline, Verdict

PARENT = 4242


def start(at: float = 100.0) -> Lifeline:
    return Lifeline(bound=5.0, parent=PARENT, last_ok=at)


def test_heartbeats_taken_carry_on_and_move_the_last_good_one() -> None:
    line, verdict = start().beat(True, PARENT, 101.0)
    assert verdict is Verdict.CARRY_ON and line.last_ok == 101.0 and line.lost_for(101.0) == 0.0


def test_redis_lost_stops_the_worker_once_the_bound_has_passed_since_the_last_good_heartbeat() -> None:
    line = start()
    verdicts = []
    for now in (101.0, 102.0, 104.9, 105.0):
        line, verdict = line.beat(False, PARENT, now)
        verdicts.append(verdict)
    assert verdicts == [Verdict.CARRY_ON] * 3 + [Verdict.STOP_REDIS_LOST]
    assert line.lost_for(105.0) == 5.0  # counted from the last heartbeat Redis took, as the core counts


def test_redis_back_within_the_bound_is_said_once_and_the_count_starts_again() -> None:
    line, _ = start().beat(False, PARENT, 103.0)
    line, verdict = line.beat(True, PARENT, 104.0)
    assert verdict is Verdict.REDIS_BACK and not line.failing
    line, verdict = line.beat(True, PARENT, 105.0)
    assert verdict is Verdict.CARRY_ON
    line, verdict = line.beat(False, PARENT, 108.0)  # 3 s after the last good one: not yet
    assert verdict is Verdict.CARRY_ON


def test_a_new_parent_means_the_supervisor_died_whatever_redis_says() -> None:
    for redis_ok in (True, False):
        _, verdict = start().beat(redis_ok, 1, 100.5)  # re-parented to init
        assert verdict is Verdict.STOP_SUPERVISOR_GONE


@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=3.0)), max_size=40))
def test_it_stops_exactly_when_redis_has_been_silent_for_the_bound(beats: list[tuple[bool, float]]) -> None:
    line, now, last_ok = start(0.0), 0.0, 0.0
    for ok, gap in beats:
        now += gap
        line, verdict = line.beat(ok, PARENT, now)
        if ok:
            last_ok = now
            continue
        assert (verdict is Verdict.STOP_REDIS_LOST) == (now - last_ok >= 5.0)
