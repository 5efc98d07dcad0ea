"""When a media worker stops taking calls, and when it stops: Redis out of reach, or its supervisor gone.

Pure: the worker reports each heartbeat (did Redis take it, its parent's pid, its callers, the time)
and gets back what to do. Nothing here reads a clock or talks to Redis.

The rule (docs/voice.md, "Losing Redis or the supervisor"):
- `bound` (`[voice] worker_timeout`) after the last heartbeat Redis took, the core takes the worker
  for dead. The worker then *drains*: it takes no new call (503), sends the callers who wait in a
  queue to the apology and a voice message, and lets every caller finish; what a call leaves (its
  ticket, recording and transcript) goes to the worker's spool on disk when Redis cannot take it.
  Draining is one way: a worker the core may have settled never takes calls again.
- It stops (exit 1; its supervisor starts a fresh one, which files the spool once Redis answers)
  when its last caller is gone, and at the latest `drain` seconds after the bound: callers still
  on the line then are hung up, and what they leave is spooled too.
- Its supervisor gone (the parent process died: the worker was re-parented), nobody would restart
  or stop it: it stops at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

DRAIN_PROMPT_SECONDS = 60.0
"""What a draining worker allows beside the longest voice message: the apology before it, the
goodbye after it, and a caller still finishing a menu when Redis went."""


class Verdict(Enum):
    CARRY_ON = "carry_on"
    REDIS_BACK = "redis_back"  # Redis answers again after failing: worth one line (and the spool's turn)
    DRAIN = "drain"  # Redis lost for `bound`: no new calls, the waiting callers to their voice message
    STOP_REDIS_LOST = "stop_redis_lost"
    STOP_SUPERVISOR_GONE = "stop_supervisor_gone"


def drain_seconds(message_seconds: Iterable[float]) -> float:
    """How long a draining worker keeps its callers: its flows' longest voice message and the prompts
    around it (`DRAIN_PROMPT_SECONDS`)."""
    return max(message_seconds, default=0.0) + DRAIN_PROMPT_SECONDS


@dataclass(frozen=True, slots=True)
class Lifeline:
    bound: float  # seconds without a heartbeat taken before the worker drains
    drain: float  # seconds past `bound` its callers may still take, at most
    parent: int  # the pid of the process that started the worker
    last_ok: float  # when Redis last took a heartbeat (the core counts worker_timeout from there)
    failing: bool = False
    draining: bool = False

    def beat(self, redis_ok: bool, parent_now: int, now: float, *, callers: int) -> tuple[Lifeline, Verdict]:
        if parent_now != self.parent:
            return self, Verdict.STOP_SUPERVISOR_GONE
        if self.draining:
            return self._drained(redis_ok, now, callers)
        if redis_ok:
            return replace(self, last_ok=now, failing=False), Verdict.REDIS_BACK if self.failing else Verdict.CARRY_ON
        if now - self.last_ok < self.bound:
            return replace(self, failing=True), Verdict.CARRY_ON
        if callers == 0:
            return replace(self, failing=True), Verdict.STOP_REDIS_LOST
        return replace(self, failing=True, draining=True), Verdict.DRAIN

    def _drained(self, redis_ok: bool, now: float, callers: int) -> tuple[Lifeline, Verdict]:
        # `last_ok` stays the heartbeat before the outage: the drain is counted from the bound.
        line = replace(self, failing=not redis_ok)
        if callers == 0 or now - self.last_ok >= self.bound + self.drain:
            return line, Verdict.STOP_REDIS_LOST
        return line, Verdict.REDIS_BACK if self.failing and redis_ok else Verdict.CARRY_ON

    def lost_for(self, now: float) -> float:
        """Seconds since Redis last took a heartbeat, while it fails or the worker drains (else 0)."""
        return now - self.last_ok if self.failing or self.draining else 0.0
