"""The media worker's call policy (gateway/voice/policy.py): pure, tested without a call."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.ivr.machine import OUTCOME_ABANDONED, OUTCOME_COMPLETED, OUTCOME_HANGUP, OUTCOME_MESSAGE
from gateway.ticket import Attachment, TranscriptSegment, new_ticket_id
from gateway.voice import policy
from gateway.voice.policy import CallFacts, Settlement, callback_ticket, draft_ticket, settlement
from tests.conftest import ConfigFactory
from tests.ivr.test_purity import ALSO_FORBIDDEN, CLOCK_READS, FORBIDDEN, imported_modules, roots

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def facts(**changes: Any) -> CallFacts:
    base: dict[str, Any] = {
        "call_id": "01KCALL0000000000000000000",
        "worker_id": "w1",
        "caller": "13812345678",
        "called": "12345",
        "started": NOW,
        "ivr_path": "0",
        "fields": {"speech_text": "幸福路路灯不亮", "route": "housing", "route_evidence": "accept keyword=住房"},
        "transcript": (TranscriptSegment(text="我家住在莱山区观海路十七号", start=0, end=2, confidence=0.9),),
        "recording": Attachment(kind="recording", path="/rec/01KCALL.wav", mime="audio/wav"),
    }
    return CallFacts(**{**base, **changes})


def test_the_draft_ticket_is_routed_by_the_intake_rule(config: GatewayConfig) -> None:
    ticket = draft_ticket(facts(), "enterprise", 2, config, new_ticket_id(NOW))
    # enterprise's own priority (7) beats the flow node's (2): the one rule of every channel.
    assert (ticket.queue, ticket.priority) == ("enterprise", 7)
    general = draft_ticket(facts(), "general", 1, config, new_ticket_id(NOW))
    assert (general.queue, general.priority) == ("general", 1)
    assert general.message_id == "01KCALL0000000000000000000" and general.channel == "voice"
    assert (general.text, general.route, general.ivr_path) == ("幸福路路灯不亮", "housing", "0")
    assert general.attachments[0].path == "/rec/01KCALL.wav"
    assert general.address.startswith("莱山区观海路17号"), "pre-filled from what the caller said"
    assert general.voice is not None and general.voice.worker == "w1"


def test_a_call_from_a_registered_company_is_on_the_enterprise_line(config_factory: ConfigFactory) -> None:
    routing = {"default_queue": "general", "enterprise_phones": ["13812345678"]}
    config: GatewayConfig = config_factory(routing=routing)
    ticket = draft_ticket(facts(), "general", 1, config, new_ticket_id(NOW))
    # The flow chose the queue; the number makes it an enterprise ticket: flagged (2110), first.
    assert (ticket.queue, ticket.priority, ticket.flags) == ("general", 7, ("enterprise",))
    other = draft_ticket(facts(caller="13900000000"), "general", 1, config, new_ticket_id(NOW))
    assert (other.priority, other.flags) == (1, ())


@pytest.mark.parametrize(
    ("caller", "phone"),
    [("13812345678", "13812345678"), ("+8613812345678", "+8613812345678"), ("alice", None), ("12", None), ("", None)],
)
def test_only_a_number_becomes_the_citizens_phone(caller: str, phone: str | None, config: GatewayConfig) -> None:
    assert policy.caller_phone(caller) == phone
    assert draft_ticket(facts(caller=caller), "general", 1, config, new_ticket_id(NOW)).citizen.phone == phone


def test_a_callback_is_one_per_call_whoever_files_it(config: GatewayConfig) -> None:
    original = draft_ticket(facts(), "general", 1, config, new_ticket_id(NOW))
    beside = callback_ticket(original, NOW, 0, "voice_message")
    assert beside.message_id == f"{original.message_id}-callback" and beside.id != original.id
    assert "callback" in beside.flags and beside.notes == "回拨原因: voice_message" and beside.priority == 0
    own = callback_ticket(original, NOW, 0, "store_unavailable", the_calls_own=True)
    assert (own.id, own.message_id) == (original.id, original.message_id), "the call's one ticket"
    assert callback_ticket(own, NOW, 0, "x").flags.count("callback") == 1


@pytest.mark.parametrize(
    ("outcome", "has_ticket", "refused", "shutting_down", "expected"),
    [
        (OUTCOME_MESSAGE, True, None, False, Settlement(callback="voice_message")),
        (OUTCOME_MESSAGE, False, "queue_full", False, Settlement(callback="voice_message")),
        (OUTCOME_ABANDONED, True, None, False, Settlement(abandon="caller_hung_up")),
        (OUTCOME_ABANDONED, True, None, True, Settlement(abandon="worker_shutdown", callback="worker_shutdown")),
        (OUTCOME_ABANDONED, False, None, False, Settlement()),
        (OUTCOME_ABANDONED, False, "queue_full", False, Settlement(callback="queue_full")),
        (OUTCOME_ABANDONED, False, "unavailable", False, Settlement(callback="store_unavailable")),
        (OUTCOME_HANGUP, False, "unavailable", False, Settlement(callback="store_unavailable")),
        (OUTCOME_COMPLETED, True, None, False, Settlement()),
        (OUTCOME_HANGUP, True, None, False, Settlement()),
    ],
)
def test_settlement(outcome: str, has_ticket: bool, refused: Any, shutting_down: bool, expected: Settlement) -> None:
    assert settlement(outcome, has_ticket=has_ticket, refused=refused, shutting_down=shutting_down) == expected


def test_abandon_reasons_and_what_still_waits() -> None:
    assert policy.abandon_reason("abandoned", False) == "caller_hung_up"
    assert policy.abandon_reason("overflow", False) == "overflow"
    assert policy.abandon_reason("overflow", True) == "worker_shutdown"
    assert policy.still_waiting("queued", False) and policy.still_waiting("offered", True)
    assert policy.still_waiting("claimed", False) and not policy.still_waiting("claimed", True)
    assert not policy.still_waiting("abandoned", False)


def test_fields_and_segments_change_a_stored_ticket(config: GatewayConfig) -> None:
    ticket = draft_ticket(facts(fields={}), "general", 1, config, new_ticket_id(NOW))
    assert policy.with_field("satisfaction", "satisfied")(ticket).satisfaction == "satisfied"
    assert policy.with_field("speech_text", "噪音扰民")(ticket).text == "噪音扰民"
    said = policy.with_field("speech_text", "别的")(ticket.model_copy(update={"text": "先说的"}))
    assert said.text == "先说的", "a spoken request only fills an empty text"
    segment = TranscriptSegment(text="我的电话号码是一三八五三五七二四六九", start=0, end=1, confidence=0.9)
    assert "回拨号码: 13853572469" in policy.with_segment(ticket, segment).notes


def test_the_policy_does_no_io_and_reads_no_clock() -> None:
    source = Path(policy.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    assert not roots(imported_modules(tree)) & (FORBIDDEN | ALSO_FORBIDDEN)
    calls = {
        node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not calls & CLOCK_READS
