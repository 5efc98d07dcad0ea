"""Fixtures of the channel tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.channels.sms_stack import PROTOCOLS, SmsDesk, sms_desk


@pytest.fixture(params=PROTOCOLS)
async def desk(
    request: pytest.FixtureRequest, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SmsDesk]:
    """An `SmsDesk` for each protocol: the test runs once over SMPP, once over CMPP."""
    async with sms_desk(request.param, config_factory, monkeypatch) as the_desk:
        yield the_desk
