"""The exception tree's table (gateway/errors.py's docstring) is the classes' own codes."""

from __future__ import annotations

import re

import gateway.errors as errors
from gateway.errors import GatewayError


def documented() -> dict[str, tuple[int | None, int | None, int | None]]:
    rows: dict[str, tuple[int | None, int | None, int | None]] = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^\s+[│├└─ ]*(\w+)\s{2,}(\d{3})?", line)
        if not match or not match[2]:
            continue
        close = re.search(r"close (\d{4})", line)
        sip = re.search(r"SIP (\d{3})", line)
        rows[match[1]] = (int(match[2]), int(close[1]) if close else None, int(sip[1]) if sip else None)
    return rows


def test_every_error_class_is_in_the_table_with_its_codes() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, GatewayError) and name not in ("ConfigError", "PeerError")
    }
    table = documented()
    assert set(table) == set(classes)
    for name, cls in classes.items():
        assert table[name] == (cls.http_status, cls.close_code, cls.sip_status), name


def test_no_two_errors_close_a_seat_with_the_same_code() -> None:
    declared = [
        cls.__dict__["close_code"]
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, GatewayError) and "close_code" in cls.__dict__
    ]
    closing = [code for code in declared if code is not None]
    assert len(closing) == len(set(closing)) == 4  # 1011, 4001, 1009, 1013
    assert 4003 not in closing  # a seat speaking another protocol version (seat_protocol.CLOSE_BAD_VERSION)
