"""What the live-audio handoff measured for one call (kept free of pjsua2, so the core can import it)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

GAPS_KEPT = 20_000  # the last gaps kept per call (the C port keeps as many)


@dataclass
class FrameStats:
    """Measured on the bridge thread: frames handed off, dropped, and the gaps between them."""

    frames: int = 0
    dropped: int = 0
    max_gap: float = 0.0
    gaps: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=GAPS_KEPT))
