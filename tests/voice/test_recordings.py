from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.voice.recordings import cleanup, recording_path

WHEN = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_path_by_day(tmp_path: Path) -> None:
    path = recording_path(tmp_path, "01KCALL", WHEN)
    assert path == tmp_path.resolve() / "2026" / "11" / "23" / "01KCALL.wav"
    assert recording_path(tmp_path, "01KCALL", WHEN, leg="agent").name == "01KCALL-agent.wav"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "", ".hidden", "x" * 65, "call id", "..", "a\x00b"])
def test_no_input_can_steer_the_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        recording_path(tmp_path, bad, WHEN)
    if bad:  # an empty leg means "no leg"
        with pytest.raises(ValueError):
            recording_path(tmp_path, "ok", WHEN, leg=bad)


def test_cleanup_keeps_the_retention_window(tmp_path: Path) -> None:
    old = recording_path(tmp_path, "old", datetime(2026, 8, 1, tzinfo=UTC))
    recent = recording_path(tmp_path, "recent", datetime(2026, 11, 20, tzinfo=UTC))
    for path in (old, recent):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF")
    (tmp_path / "notes.txt").write_text("kept")
    deleted = cleanup(tmp_path, retention_days=90, today=date(2026, 11, 23))
    assert deleted == [old]
    assert recent.exists() and not old.exists() and not (tmp_path / "2026" / "08").exists()
    assert (tmp_path / "notes.txt").exists()
