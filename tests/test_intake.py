from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import GatewayConfig
from gateway.errors import ConfigError, Forbidden, InvalidRequest
from gateway.intake import (
    IntakeCitizen,
    IntakeRequest,
    clean_text,
    fingerprint,
    has_visible_text,
    parse_intake,
    route,
    to_ticket,
)
from gateway.jsonwire import MAX_DEPTH
from gateway.ticket import Citizen
from peers.gateway_config import make_raw_config
from tests.conftest import ConfigFactory

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def test_parse_reports_every_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_intake(b'{"text": "", "channel": "fax", "citizen": {"phone": "x"}}')
    assert {f.path for f in caught.value.fields} == {"text", "channel", "citizen.phone"}


def test_route_by_queue_channel_default_and_flags(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(routing={"default_queue": "general", "by_channel": {"sms": "housing"}})
    assert route(IntakeRequest(text="x"), config) == ("general", 0, ())
    assert route(IntakeRequest(text="x", channel="sms"), config) == ("housing", 0, ())
    assert route(IntakeRequest(text="x", queue="enterprise"), config) == ("enterprise", 7, ())
    assert route(IntakeRequest(text="x", flags=["urgent"]), config) == ("general", 5, ("urgent",))
    assert route(IntakeRequest(text="x", flags=["urgent", "enterprise"], priority=2), config) == (
        "general",
        7,
        ("urgent", "enterprise"),
    )
    with pytest.raises(InvalidRequest):
        route(IntakeRequest(text="x", queue="nope"), config)


def test_the_enterprise_line_by_number_by_flag_and_by_its_queue(config_factory: ConfigFactory) -> None:
    """政企通: a registered number, the mini program's flag or the line's own queue (a DID's flow
    routes there) all make an enterprise ticket: its queue, its priority, its flag (2110 clocks)."""
    raw = make_raw_config("x", "redis://127.0.0.1:1/0")
    queues = [{**queue, "flags": ["enterprise"]} if queue["name"] == "enterprise" else queue for queue in raw["queues"]]
    routing = {"default_queue": "general", "flag_queue": {"enterprise": "enterprise"},
               "enterprise_phones": ["13900001111"]}  # fmt: skip
    config: GatewayConfig = config_factory(queues=queues, routing=routing)
    company = IntakeRequest(text="x", citizen=IntakeCitizen(phone="13900001111"))
    assert route(company, config) == ("enterprise", 7, ("enterprise",))
    assert route(IntakeRequest(text="x", flags=["enterprise"]), config) == ("enterprise", 7, ("enterprise",))
    assert route(IntakeRequest(text="x", queue="enterprise"), config) == ("enterprise", 7, ("enterprise",))
    citizen = IntakeRequest(text="x", citizen=IntakeCitizen(phone="13900002222"))
    assert route(citizen, config) == ("general", 0, ())
    assert to_ticket(company, config, NOW, None).flags == ("enterprise",)
    with pytest.raises(ConfigError, match=r"routing\.flag_queue\.enterprise"):
        config_factory(queues=queues, routing={**routing, "flag_queue": {"enterprise": "nope"}})


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


def test_every_problem_in_one_error() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_intake(b'{"text": "", "queue": "nope"}', {"general", "housing"})
    assert {f.path for f in caught.value.fields} == {"text", "queue"}
    with pytest.raises(InvalidRequest) as caught:
        parse_intake(b'{"text": "ok", "priority": 99}', {"general"}, idempotency_key="has space")
    assert {f.path for f in caught.value.fields} == {"Idempotency-Key", "priority"}
    assert parse_intake(b'{"text": "ok", "queue": "housing"}', {"general", "housing"}).queue == "housing"


def test_nesting_is_bounded_with_a_clear_error() -> None:
    for levels in (MAX_DEPTH + 1, 300, 5000):
        body = b'{"text": "x", "attachments": ' + b"[" * levels + b"]" * levels + b"}"
        with pytest.raises(InvalidRequest) as caught:
            parse_intake(body)
        problems = [(f.path, f.message) for f in caught.value.fields]
        assert problems == [("body", f"nested deeper than {MAX_DEPTH} levels")]


def test_clean_text_strips_controls_and_bidi_but_keeps_lines() -> None:
    assert clean_text("路灯\r\n不亮\r三天\n\t了") == "路灯\n不亮\n三天\n\t了"
    assert clean_text("\x1b[2J\x1b]0;pwned\x07清屏") == "[2J]0;pwned清屏"
    assert clean_text("\x9b31m红\x85字\x00\x7f") == "31m红字"
    assert clean_text("abc\u202edcba\u2066x\u2069\u202a\u202c") == "abcdcbax"
    assert clean_text("👨\u200d👩\u200d👧 家") == "👨\u200d👩\u200d👧 家", "zero-width joiners inside text stay"


def test_invisible_text_is_recognized() -> None:
    for invisible in ("", " \n\t", "\u200b\u200c\u200d\u2060\ufeff", "\u3000\u00a0", "\u3164\u115f", "\u0301\u0302"):
        assert not has_visible_text(invisible), repr(invisible)
    for visible in ("路", " a ", "\u200b1", "😀", "\u3164。"):
        assert has_visible_text(visible), repr(visible)


@given(st.text())
def test_clean_text_leaves_no_control(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    for char in cleaned:
        assert char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cs"), repr(char)
        assert char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert [c for c in text if c.isprintable() and c not in BIDI] == [c for c in cleaned if c.isprintable()]


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize(
    "field",
    [
        ("text",),
        ("citizen", "name"),
        ("citizen", "wechat_openid"),
        ("attachments", 0, "path"),
        ("attachments", 0, "media_id"),
        ("attachments", 0, "mime"),
    ],
)
def test_every_free_text_field_is_cleaned_and_must_be_visible(field: tuple[str | int, ...]) -> None:
    def body(value: str) -> bytes:
        data: dict[str, object] = {"text": "路灯不亮", "citizen": {}, "attachments": [{"kind": "file"}]}
        target: object = data
        for step in field[:-1]:
            target = target[step]  # type: ignore[index]
        target[field[-1]] = value  # type: ignore[index]
        return json.dumps(data).encode()

    path = ".".join(str(step) if isinstance(step, str) else f"[{step}]" for step in field).replace(".[", "[")
    for invisible in ("\u200b\u200b", "\x1b\x07", "\u202e ", ""):
        with pytest.raises(InvalidRequest) as caught:
            parse_intake(body(invisible))
        assert [f.path for f in caught.value.fields] == [path], repr(invisible)
    request = parse_intake(body("\u202e\x1b[2J 有字\r\n"))
    value: object = request.model_dump()
    for step in field:
        value = value[step]  # type: ignore[index]
    assert value == "[2J 有字"


def test_the_ticket_carries_the_cleaned_text(config: GatewayConfig) -> None:
    request = parse_intake('{"text": "\\u202e幸福路\\r\\n路灯", "citizen": {"name": "陈\\u0000先生"}}'.encode())
    ticket = to_ticket(request, config, NOW, None)
    assert (ticket.text, ticket.citizen.name) == ("幸福路\n路灯", "陈先生")
    assert type(ticket.citizen) is Citizen


def test_fingerprint_tells_a_retry_from_another_request() -> None:
    first = parse_intake(b'{"text": "\\u8def\\u706f", "message_id": "m-1", "citizen": {"phone": "13812345678"}}')
    again = parse_intake('{"citizen": {"phone": "138 1234 5678"},  "text": "路灯"}'.encode())
    other = parse_intake('{"text": "路灯", "citizen": {"phone": "13812345679"}}'.encode())
    assert fingerprint(first) == fingerprint(again), "re-encoded JSON and the message id do not count"
    assert fingerprint(first) != fingerprint(other)
