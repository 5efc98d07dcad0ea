from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.config import GatewayConfig
from gateway.errors import Forbidden, InvalidRequest
from gateway.intake import IntakeRequest, parse_intake, route, to_ticket

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_parse_reports_every_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_intake(b'{"text": "", "channel": "fax", "citizen": {"phone": "x"}}')
    assert {f.path for f in caught.value.fields} == {"text", "channel", "citizen.phone"}


def test_route_by_queue_channel_default_and_flags(config_factory) -> None:  # type: ignore[no-untyped-def]
    config: GatewayConfig = config_factory(routing={"default_queue": "general", "by_channel": {"sms": "housing"}})
    assert route(IntakeRequest(text="x"), config) == ("general", 0)
    assert route(IntakeRequest(text="x", channel="sms"), config) == ("housing", 0)
    assert route(IntakeRequest(text="x", queue="enterprise"), config) == ("enterprise", 7)
    assert route(IntakeRequest(text="x", flags=["urgent"]), config) == ("general", 5)
    assert route(IntakeRequest(text="x", flags=["urgent", "enterprise"], priority=2), config) == (
        "general",
        7,
    )
    with pytest.raises(InvalidRequest):
        route(IntakeRequest(text="x", queue="nope"), config)


def test_to_ticket_uses_message_id_then_idempotency_key(config: GatewayConfig) -> None:
    explicit = to_ticket(IntakeRequest(text="x", message_id="m-1"), config, NOW, "key-1")
    from_header = to_ticket(IntakeRequest(text="x"), config, NOW, "key-1")
    neither = to_ticket(IntakeRequest(text="x", flags=["urgent", "urgent"]), config, NOW, None)
    assert (explicit.message_id, from_header.message_id) == ("m-1", "key-1")
    assert neither.message_id == neither.id and neither.flags == ("urgent",)
    assert explicit.status == "queued" and explicit.received_at == NOW
    with pytest.raises(InvalidRequest):
        to_ticket(IntakeRequest(text="x"), config, NOW, "bad key with spaces")
    with pytest.raises(Forbidden):
        to_ticket(IntakeRequest(text="x", channel="sms"), config, NOW, None, ["web"])
