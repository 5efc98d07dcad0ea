"""When a media worker stops on its own: Redis out of reach for too long, or its supervisor gone.

Pure: the worker reports each heartbeat (did Redis take it, its parent's pid, the time) and gets
back what to do. Nothing here reads a clock or talks to Redis.

The bound is `[voice] worker_timeout`: after that long without a heartbeat the core takes the worker
for dead and settles its calls (docs/voice.md, "Shutdown order"), so a worker still cut off from
Redis by then holds calls nobody else can see; it hangs them up and exits, and a supervisor starts
it again (a worker whose Redis is back answers again at once). Its supervisor gone (the parent
process died: the worker was re-parented), nobody would restart it or stop it: it stops at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Verdict(Enum):
    CARRY_ON = "carry_on"
    REDIS_BACK = "redis_back"  # Redis answers again after failing: worth one line
    STOP_REDIS_LOST = "stop_redis_lost"
    STOP_SUPERVISOR_GONE = "stop_supervisor_gone"


@dataclass(frozen=True, slots=True)
class Lifeline:
    bound: float  # seconds without a heartbeat taken before the worker stops
    parent: int  # the pid of the process that started the worker
    last_ok: float  # when Redis last took a heartbeat (the core counts worker_timeout from there)
    failing: bool = False

    def beat(self, redis_ok: bool, parent_now: int, now: float) -> tuple[Lifeline, Verdict]:
        if parent_now != self.parent:
            return self, Verdict.STOP_SUPERVISOR_GONE
        if redis_ok:
            return replace(self, last_ok=now, failing=False), Verdict.REDIS_BACK if self.failing else Verdict.CARRY_ON
        verdict = Verdict.STOP_REDIS_LOST if now - self.last_ok >= self.bound else Verdict.CARRY_ON
        return replace(self, failing=True), verdict

    def lost_for(self, now: float) -> float:
        """Seconds since Redis last took a heartbeat, while it fails (0 while it does not)."""
        return now - self.last_ok if self.failing else 0.0
