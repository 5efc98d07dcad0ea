"""The shipped IVR flow for tests and benchmarks, optionally with values replaced (shorter timeouts)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLOW = ROOT / "config" / "flows" / "12345.toml"

# Shorter than production so a test call takes seconds: menu timeout 5 -> 2 s, position every 30 -> 4 s.
FAST = {
    "\ntimeout_seconds = 5\n": "\ntimeout_seconds = 2\n",  # the menu's, not confirm_timeout_seconds
    "position_interval_seconds = 30": "position_interval_seconds = 4",
}


def write_flow(path: Path, replacements: dict[str, str]) -> Path:
    text = DEFAULT_FLOW.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, f"the default flow no longer contains {old!r}"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path
