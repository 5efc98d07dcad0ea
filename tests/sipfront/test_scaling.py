"""The pool's scaling decision (pure): spare caller slots kept ready, slow and gentle scale-down."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.sipfront.scaling import Limits, Plan, Slot, State, decide, wanted_workers

LIMITS = Limits(min_workers=1, max_workers=4, callers_per_worker=2, spare_callers=1, scale_down_after=30.0)


def slots(*states: tuple[State, int]) -> list[Slot]:
    return [Slot(f"w{n + 1}", state, busy) for n, (state, busy) in enumerate(states)]


def test_wanted_workers_keeps_the_spare_and_stays_within_the_bounds() -> None:
    assert wanted_workers(LIMITS, 0) == 1  # 1 spare caller: one worker
    assert wanted_workers(LIMITS, 1) == 1  # 1 busy + 1 spare = 2 = one worker's worth
    assert wanted_workers(LIMITS, 2) == 2
    assert wanted_workers(LIMITS, 5) == 3
    assert wanted_workers(LIMITS, 100) == 4  # never above max


def test_a_full_worker_starts_the_next_stopped_slot_in_pool_order() -> None:
    plan = decide(LIMITS, slots(("serving", 2), ("stopped", 0), ("stopped", 0), ("stopped", 0)), None, 0.0)
    assert plan == Plan(start=("w2",))


def test_a_draining_worker_is_switched_back_on_before_a_new_one_starts() -> None:
    state = slots(("serving", 2), ("serving", 2), ("draining", 1), ("stopped", 0))
    assert decide(LIMITS, state, None, 0.0) == Plan(resume=("w3",))


def test_a_burst_starts_several_at_once() -> None:
    limits = Limits(1, 10, 2, spare_callers=6, scale_down_after=30.0)
    stopped: tuple[State, int] = ("stopped", 0)
    state = slots(("serving", 2), *[stopped] * 9)
    assert decide(limits, state, None, 0.0).start == ("w2", "w3", "w4")  # (2 busy + 6 spare) / 2 = 4 workers


def test_surplus_drains_one_worker_only_after_it_lasted_scale_down_after() -> None:
    state = slots(("serving", 1), ("serving", 0), ("serving", 0), ("stopped", 0))
    first = decide(LIMITS, state, None, 100.0)
    assert first == Plan(surplus_since=100.0)
    assert decide(LIMITS, state, first.surplus_since, 129.9) == Plan(surplus_since=100.0)
    later = decide(LIMITS, state, first.surplus_since, 130.0)
    assert later.drain == ("w3",)  # idle, and last in pool order
    assert later.surplus_since == 130.0  # the next drain waits another period


def test_the_least_busy_worker_drains() -> None:
    limits = Limits(1, 4, 4, spare_callers=0, scale_down_after=1.0)
    state = slots(("serving", 1), ("serving", 3), ("serving", 2))  # 6 busy / 4 per worker -> 2 wanted
    assert decide(limits, state, 0.0, 5.0).drain == ("w1",)


def test_a_drained_worker_stops_and_a_busy_one_keeps_draining() -> None:
    state = slots(("serving", 0), ("draining", 0), ("draining", 1))
    assert decide(LIMITS, state, None, 0.0) == Plan(stop=("w2",))


def test_a_load_that_returns_cancels_the_surplus_clock() -> None:
    state = slots(("serving", 2), ("serving", 1))  # 3 + 1 spare = 2 workers: exactly enough
    assert decide(LIMITS, state, 50.0, 100.0) == Plan()


def test_a_starting_worker_counts_as_capacity_so_it_is_not_started_twice() -> None:
    state = slots(("serving", 2), ("starting", 0), ("stopped", 0))
    assert decide(LIMITS, state, None, 0.0) == Plan()


STATES: list[State] = ["stopped", "starting", "serving", "draining"]


@given(
    st.lists(st.tuples(st.sampled_from(STATES), st.integers(0, 2)), min_size=4, max_size=4),
    st.one_of(st.none(), st.floats(0, 100)),
    st.floats(0, 200),
)
def test_any_plan_keeps_the_pool_within_its_bounds_and_never_stops_a_busy_worker(
    raw: list[tuple[State, int]], since: float | None, now: float
) -> None:
    state = slots(*raw)
    plan = decide(LIMITS, state, since, now)
    by_id = {slot.worker_id: slot for slot in state}
    assert all(by_id[w].state == "draining" and by_id[w].busy == 0 for w in plan.stop)
    assert all(by_id[w].state == "stopped" for w in plan.start)
    assert all(by_id[w].state == "draining" for w in plan.resume)
    assert all(by_id[w].state == "serving" for w in plan.drain)
    assert len(plan.drain) <= 1
    taking = sum(1 for slot in state if slot.state in ("starting", "serving"))
    after = taking + len(plan.start) + len(plan.resume) - len(plan.drain)
    if plan.drain:
        assert after >= LIMITS.min_workers
    if plan.start or plan.resume:
        assert after <= LIMITS.max_workers
