"""What the caller said pre-fills the ticket: address, call-back number, time."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.ticket import Ticket, TranscriptSegment
from gateway.voice.policy import prefilled

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def said(text: str, final: bool = True) -> TranscriptSegment:
    return TranscriptSegment(text=text, start=0, end=1, confidence=0.9, final=final)


def test_address_phone_and_time_from_speech() -> None:
    ticket = Ticket(id="01K", channel="voice", message_id="c1", received_at=NOW, queue="general")
    filled = prefilled(
        ticket,
        [
            said("我家住在莱山区观海路十七号三单元五零二室"),
            said("我的电话号码是一三八五三五七二四六九"),
            said("每天晚上十一点以后很吵", final=False),
        ],
    )
    assert filled.address.startswith("莱山区观海路17号")
    assert "回拨号码: 13853572469" in filled.notes
    assert "时间" not in filled.notes, "partial segments are not used"
    again = prefilled(filled, [said("我的电话号码是一三八五三五七二四六九"), said("芝罘区二马路")])
    assert again.notes.count("13853572469") == 1 and again.address == filled.address, "kept, not repeated"
