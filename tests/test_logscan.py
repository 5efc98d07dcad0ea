"""The log scanner finds what must never be logged, and passes what may be."""

from __future__ import annotations

import logging

import pytest

from gateway.ticket import mask_phone
from peers.gateway_config import API_KEY
from tests.logscan import _scanner, assert_no_leaks, leaks_in


@pytest.mark.parametrize(
    "line",
    [
        "intake from 13812345678",
        "caller +8613812345678 queued",
        "sip:13912345678@127.0.0.1",
        "citizen id 11010519491231002X",
        f"Authorization: Bearer {API_KEY}",
        f"bad header {API_KEY[:40]}",  # the whole key, cut where a log would cut it
    ],
)
def test_leaks_are_found(line: str) -> None:
    assert leaks_in(line)


@pytest.mark.parametrize(
    "line",
    [
        f"intake from {mask_phone('13812345678')}",
        "stream entry 1764748800000-0 offered",  # a Redis stream id: 13 digits
        "ticket 01KBX3A9G7M2Q8R4T6V0W1Y3Z5 queued",
        "worker w1 pid 4012345 on 127.0.0.1:5070",
        "Bearer realm=hotline-gateway",
    ],
)
def test_what_may_be_logged_passes(line: str) -> None:
    assert not leaks_in(line)


def test_a_leaking_log_record_is_recorded_against_the_test_without_its_secret() -> None:
    start = len(_scanner.leaks)
    logging.getLogger("gateway.test").info("citizen phone %s", "13812345678")
    leaked = _scanner.leaks[start:]
    del _scanner.leaks[start:]  # this test's leak is deliberate; the autouse check must not fail it
    assert [leak.kinds for leak in leaked] == [("a mobile number",)]
    assert "13812345678" not in leaked[0].line


def test_process_output_is_checked_line_by_line() -> None:
    assert_no_leaks("ready\nintake from 138****5678\n", "a process")
    with pytest.raises(AssertionError, match="a mobile number") as failure:
        assert_no_leaks("ready\nintake from 13812345678\n", "a process")
    assert "13812345678" not in str(failure.value)
