from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.ticket import Citizen, Ticket, apply_edits, is_ticket_id, mask_phone, new_ticket_id

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def ticket(**extra: object) -> Ticket:
    return Ticket(id=new_ticket_id(NOW), channel="sms", message_id="smsc-42", received_at=NOW, queue="general", **extra)


def test_ids_sort_by_time() -> None:
    later = datetime(2026, 11, 23, 9, 31, tzinfo=UTC)
    assert new_ticket_id(NOW) < new_ticket_id(later)
    assert len(new_ticket_id(NOW)) == 26


def test_round_trip_is_compact_and_exact() -> None:
    original = ticket(text="噪音扰民", citizen=Citizen(phone="+86 138-1234-5678"), flags=("urgent",))
    data = original.to_json()
    assert b'"status"' not in data, "defaults (status draft) are omitted"
    assert b"transcript" not in data and b"attachments" not in data
    assert Ticket.from_json(data) == original
    assert original.citizen.phone == "+8613812345678"


@pytest.mark.parametrize(
    "bad",
    [
        {"channel": "fax"},
        {"priority": 10},
        {"ivr_path": "12a"},
        {"text": "长" * 4001},
        {"message_id": "has space"},
        {"status": "lost"},
        {"flags": ("Not-A-Flag",)},
    ],
)
def test_validated_on_the_way_in(bad: dict[str, object]) -> None:
    data = {**ticket().model_dump(mode="json"), **bad}
    with pytest.raises(ValidationError):
        Ticket.model_validate(data)


def test_bad_phone_is_refused() -> None:
    with pytest.raises(ValidationError, match="phone number"):
        Citizen(phone="call me maybe")


def test_apply_edits() -> None:
    edited = apply_edits(ticket(text="原文"), {"category": "城市管理", "citizen_name": "王女士", "text": "改后"})
    assert (edited.category, edited.citizen.name, edited.text) == ("城市管理", "王女士", "改后")
    with pytest.raises(ValueError, match="not editable"):
        apply_edits(ticket(), {"status": "submitted"})
    with pytest.raises(ValueError):
        apply_edits(ticket(), {"citizen_phone": "nope"})


def test_mask_phone_keeps_no_full_number() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("+8613812345678") == "+86*******5678"
    assert mask_phone("65432198") == "****2198", "an 8-digit landline shows its last 4 digits only"
    assert mask_phone("12345") == "***45"
    assert mask_phone(None) == "-"


phones = st.from_regex(r"\+?[0-9]{3,20}", fullmatch=True)


@given(phones)
def test_mask_phone_hides_enough_of_every_number(phone: str) -> None:
    masked = mask_phone(phone)
    digits = [index for index, char in enumerate(phone) if char.isdigit()]
    shown = [index for index in digits if masked[index] != "*"]
    assert len(masked) == len(phone) and masked.startswith("+") == phone.startswith("+")
    assert all(masked[index] in ("*", phone[index]) for index in digits), "a shown digit is the real one"
    if len(digits) >= 11:
        assert masked[:3] == phone[:3] and masked[-4:] == phone[-4:]
        assert len(digits) - len(shown) >= 4
    else:
        assert len(shown) <= min(4, len(digits) // 2), "at least half of a short number is hidden"
        assert shown == digits[len(digits) - len(shown) :], "only its last digits are shown"


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_mask_phone_keeps_the_mobile_format(mobile: str) -> None:
    assert mask_phone(mobile) == mobile[:3] + "****" + mobile[-4:]


def test_ticket_ids_are_recognized() -> None:
    real = new_ticket_id(NOW)
    assert is_ticket_id(real)
    for bad in ("", "01ABC", real + ":h", real + "\n", real.lower(), "8" + real[1:], real[:-1] + "U"):
        assert not is_ticket_id(bad), bad
