"""Malformed HTTP requests carry keys and personal data: none of it reaches a log or an answer."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.config import GatewayConfig
from peers.gateway_config import API_KEY
from tests.web.http_support import http_server, raw_exchange, split_response

PHONE = "13812345678"
ID_NUMBER = "110101199003077777"

# What aiohttp's parser refuses, each carrying the key, the phone or the ID number in its bytes.
HOSTILE = [
    # an over-long Authorization header: the whole key in the line aiohttp quotes
    f"POST /api/v1/intake HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}{'k' * 9000}\r\n\r\n",
    # a header value with a control character
    f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Citizen: {PHONE}\x01{ID_NUMBER}\r\n\r\n",
    # a header name that is not a token
    f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization {API_KEY}: {PHONE}\r\n\r\n",
    # a request target with a control character
    f"GET /api/v1/tickets/{ID_NUMBER}\x02{PHONE} HTTP/1.1\r\nHost: x\r\n\r\n",
    # not HTTP at all
    f"{PHONE} {ID_NUMBER} {API_KEY}\r\n\r\n",
    # a bad HTTP version
    f"GET /{PHONE} HTTP/9.{ID_NUMBER}\r\nHost: x\r\n\r\n",
    # a body whose chunked encoding is broken
    f"POST /api/v1/intake HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
    f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nz{PHONE}\r\n{ID_NUMBER}\r\n",
    # a Content-Length that is not a number
    f"POST /api/v1/intake HTTP/1.1\r\nHost: x\r\nContent-Length: {PHONE}x{ID_NUMBER}\r\n\r\n",
]


def secrets_in(text: str) -> list[str]:
    """Which of the key (or a 16-character piece of it, as a log might cut it), the phone and the
    ID number appear in `text`."""
    found = [name for name, value in (("phone", PHONE), ("ID number", ID_NUMBER)) if value in text]
    if API_KEY[:16] in text or API_KEY[-16:] in text:
        found.append("API key")
    return found


@pytest.mark.parametrize("request_text", HOSTILE, ids=range(len(HOSTILE)))
async def test_malformed_requests_leak_nothing(
    config: GatewayConfig, caplog: pytest.LogCaptureFixture, request_text: str
) -> None:
    caplog.set_level(logging.DEBUG)  # more than operators run: aiohttp logs some of these at DEBUG
    async with http_server(config) as server:
        raw = await raw_exchange(server.address, request_text.encode("latin-1"))
        status, headers, body = split_response(raw)
        assert 400 <= status < 500 and headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "invalid"
        assert not secrets_in(raw.decode("latin-1")), "echoed in the answer"
        # The server is still serving after it.
        assert split_response(await raw_exchange(server.address, b"GET /healthz HTTP/1.0\r\n\r\n"))[0] == 200
    logged = "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''} {record.exc_info or ''}"
        for record in caplog.records
    )
    assert not secrets_in(logged), f"logged: {secrets_in(logged)}"
    assert any("malformed HTTP requests refused" in record.getMessage() for record in caplog.records), (
        "the refusal itself is logged, without the bytes"
    )


async def test_the_intake_log_line_masks_the_phone(config: GatewayConfig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with http_server(config) as server:
        body = f'{{"text": "路灯", "citizen": {{"phone": "{PHONE}"}}}}'.encode()
        head = (
            f"POST /api/v1/intake HTTP/1.0\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        status, _, _ = split_response(await raw_exchange(server.address, head.encode() + body))
        assert status == 202
    assert "138****5678" in caplog.text and not secrets_in(caplog.text)
