"""How many media workers to run: a pure decision over the pool's slots, their load and the clock.

Each slot is one worker id and SIP port. Its state:
- `stopped`: no process; listed disabled in Kamailio's dispatcher.
- `starting`: process started, no heartbeat yet; still disabled (a call sent now would wait for
  fr_timer and fail over).
- `serving`: switched on in the dispatcher; takes new calls.
- `draining`: switched off in the dispatcher; finishes the calls it holds, then is stopped.

The rule keeps `spare_callers` free caller slots on the serving (and starting) workers: fewer, and
workers are added at once (a draining one is switched back on first: it is already running); more
than a whole worker's worth for `scale_down_after` seconds, and the least busy serving worker
drains. One drain per period keeps a burst that just ended from tearing the pool down at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

State = Literal["stopped", "starting", "serving", "draining"]
TAKES_CALLS: tuple[State, ...] = ("starting", "serving")


@dataclass(frozen=True, slots=True)
class Limits:
    min_workers: int
    max_workers: int
    callers_per_worker: int
    spare_callers: int
    scale_down_after: float


@dataclass(frozen=True, slots=True)
class Slot:
    worker_id: str
    state: State
    busy: int = 0  # callers it holds


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[str, ...] = ()  # stopped -> starting
    resume: tuple[str, ...] = ()  # draining -> serving
    drain: tuple[str, ...] = ()  # serving -> draining
    stop: tuple[str, ...] = ()  # draining with no call left -> stopped
    surplus_since: float | None = None  # carried to the next decision

    @property
    def changes(self) -> bool:
        return bool(self.start or self.resume or self.drain or self.stop)


def wanted_workers(limits: Limits, busy: int) -> int:
    """Workers that hold `busy` callers with `spare_callers` free, within [min, max]."""
    needed = math.ceil((busy + limits.spare_callers) / max(1, limits.callers_per_worker))
    return max(limits.min_workers, min(limits.max_workers, needed))


def decide(limits: Limits, slots: list[Slot], surplus_since: float | None, now: float) -> Plan:
    """What to change now. `slots` are in pool order (w1 first); `surplus_since` is the previous
    plan's (None at first)."""
    stop = tuple(s.worker_id for s in slots if s.state == "draining" and s.busy == 0)
    taking = [s for s in slots if s.state in TAKES_CALLS]
    wanted = wanted_workers(limits, sum(s.busy for s in taking))
    if wanted > len(taking):
        missing = wanted - len(taking)
        draining = [s for s in slots if s.state == "draining"]
        resume = tuple(s.worker_id for s in sorted(draining, key=lambda s: -s.busy)[:missing])
        stopped = [s.worker_id for s in slots if s.state == "stopped"]
        start = tuple(stopped[: missing - len(resume)])
        return Plan(start=start, resume=resume, stop=tuple(w for w in stop if w not in resume))
    if wanted == len(taking):
        return Plan(stop=stop)
    if surplus_since is None or now - surplus_since < limits.scale_down_after:
        return Plan(stop=stop, surplus_since=now if surplus_since is None else surplus_since)
    serving = [s for s in slots if s.state == "serving"]
    if not serving:
        return Plan(stop=stop, surplus_since=surplus_since)
    # The least busy; among equals the last in pool order, so the pool shrinks from its end.
    idlest = min(reversed(serving), key=lambda s: s.busy)
    return Plan(drain=(idlest.worker_id,), stop=stop, surplus_since=now)
