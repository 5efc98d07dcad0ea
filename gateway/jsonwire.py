"""JSON from peers, parsed with a bound on nesting depth.

Python's `json` recurses once per nesting level: a frame of a thousand `[` raises `RecursionError`
deep inside the parser (an uncaught error, a traceback per frame). Every JSON parser that faces a
peer (seats, HTTP, channels) goes through `loads` here, or through pydantic's own parser, whose
limit is lower than ours (jiter refuses past ~200 levels).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32  # no frame or body we accept nests deeper than a handful of levels

# Strings (escapes included) or brackets: brackets inside strings must not count.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class TooDeep(ValueError):
    """The document nests deeper than allowed."""


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (0 for a scalar); malformed input gets
    some number, and the parser that follows reports the real problem."""
    level = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            level += 1
            deepest = max(deepest, level)
        elif token in (b"]", b"}"):
            level -= 1
    return deepest


def loads(raw: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing documents nested deeper than `max_depth` (`TooDeep`) before parsing.

    Raises `ValueError` (`json.JSONDecodeError`, `UnicodeDecodeError`, `TooDeep`) for anything it
    will not return.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > max_depth and depth(data) > max_depth:
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return json.loads(data)
