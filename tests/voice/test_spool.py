"""The media worker's spool (gateway/voice/spool.py): durable, atomic, one worker per entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ticket import Ticket, new_ticket_id, utcnow
from gateway.voice.spool import PendingAsr, Spool, SpoolEntry
from tests.helpers import voice_ticket


def entry(pending: PendingAsr | None = None) -> SpoolEntry:
    ticket: Ticket = voice_ticket("01KCALL0000000000000000000", notes="回拨原因: store_unavailable")
    return SpoolEntry(ticket, pending)


def test_an_entry_round_trips(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    kept = entry(PendingAsr("/rec/01KCALL.wav", "asr_unavailable"))
    path = spool.put(kept)
    assert path.name == f"{kept.ticket.id}.json" and spool.entries() == [path]
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file left behind"
    with spool.claim(path) as read:
        assert read == kept


def test_entries_come_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first, second = entry(), entry()
    later = second.ticket.model_copy(update={"id": new_ticket_id(utcnow())})
    spool.put(SpoolEntry(later))
    spool.put(first)
    assert [p.stem for p in spool.entries()] == sorted([first.ticket.id, later.id])


def test_a_claimed_entry_is_not_anothers_to_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.put(entry())
    with spool.claim(path) as mine:
        assert mine is not None
        with spool.claim(path) as theirs:
            assert theirs is None, "a second worker skips an entry the first one holds"
        spool.remove(path)
    with spool.claim(path) as gone:
        assert gone is None and spool.entries() == []


def test_an_entry_that_cannot_be_read_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    broken = tmp_path / f"{new_ticket_id(utcnow())}.json"
    broken.write_bytes(b'{"version": 1, "ticket": {"id": "not a ticket"}}')
    with spool.claim(broken) as read:
        assert read is None
    assert spool.entries() == [] and broken.with_suffix(".bad").exists()
    assert "set aside as .bad" in caplog.text


def test_only_ids_the_gateway_made_name_a_file(tmp_path: Path) -> None:
    bad = entry()
    with pytest.raises(ValueError, match="ticket ids"):
        Spool(tmp_path).put(SpoolEntry(bad.ticket.model_copy(update={"id": "../../etc/x"})))


def test_a_full_spool_says_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_entries=1)
    assert not spool.full()
    spool.put(entry())
    assert spool.full()
