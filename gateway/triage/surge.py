"""Surges (集中爆发, 新发高发): many contacts of one category at one place in a short time.

Pure: the decision only. Triage counts each new ticket into its category x place (the street, else
the district the gazetteer finds) over the last `window` and over the `baseline` before it
(`hg:surge:{category}:{place}`, one script: gateway/queue/scripts.py, SURGE), then asks `is_surge`:
the window's count is at least `min_count` and at least `factor` times what the baseline gives a
window on average. A surge warns the supervisors once per window and place (the wallboard's
集中爆发 list), so an incident announcement can follow.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SurgeSettings(BaseModel):
    """`[triage.surge]`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    window: float = Field(default=3600.0, ge=60, le=86_400)  # s: the recent span counted
    baseline: float = Field(default=7 * 86_400.0, ge=3600, le=90 * 86_400)  # s before it: the usual
    min_count: int = Field(default=5, ge=2, le=10_000)  # contacts in a window before a surge is one
    factor: float = Field(default=3.0, ge=1.0, le=100.0)  # times the usual count of a window


def usual(before: int, settings: SurgeSettings) -> float:
    """What the baseline gives one window on average."""
    return before * settings.window / settings.baseline


def is_surge(recent: int, before: int, settings: SurgeSettings) -> bool:
    """`recent` contacts in the window against `before` in the baseline span before it."""
    return settings.enabled and recent >= max(settings.min_count, settings.factor * usual(before, settings))
