"""Paging the supervisors (issue #15, item 4): sensitive words at the top severity page their
phones at once, by SMS through the channel's outbox, to a real SMSC / ISMG peer; each page once,
its states in the ticket's history, never in the citizen's conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import PagingSettings
from gateway.errors import ConfigError
from gateway.ticket import SensitiveAlert, utcnow
from gateway.triage.paging import page_text, pages
from tests.channels.sms_stack import PASSWORD_ENV, PROTOCOLS, Protocol, sms_peer
from tests.conftest import ConfigFactory
from tests.helpers import Seat, queued_ticket, running_gateway
from tests.triage.conftest import SHIPPED_SENSITIVE

SUPERVISORS = ("13900001111", "13900002222")
CITIZEN = "13812345678"  # not the peer's sender: what a page must never carry


def alert(severity: int, category: str = "self_harm", word: str = "跳楼") -> SensitiveAlert:
    return SensitiveAlert(word=word, category=category, severity=severity, context=f"我要{word}", at=utcnow())


def test_only_the_top_severity_pages_and_the_text_keeps_the_citizen_out() -> None:
    settings = PagingSettings(enabled=True, phones=SUPERVISORS)
    threat = queued_ticket("p1", text="再不解决我就跳楼", citizen={"phone": CITIZEN}, alerts=(alert(3), alert(2)))
    paged = pages(threat, settings)
    assert [page.citizen.phone for page in paged] == list(SUPERVISORS)
    made = {(page.kind, page.agent, page.channel, page.ticket) for page in paged}
    assert made == {("page", "triage", "sms", threat.id)}
    text = paged[0].text
    assert "自伤自杀3级" in text and threat.id[-8:] in text and "general" in text
    assert len(text) <= 70, "one SMS part"
    assert CITIZEN not in text and "跳楼" not in text, "neither the citizen's number nor words cross the carrier"
    worrying = threat.model_copy(update={"alerts": (alert(2, "violence", "砍人"),)})
    assert pages(worrying, settings) == ()
    assert len(pages(worrying, settings.model_copy(update={"min_severity": 2}))) == 2
    assert pages(threat, PagingSettings(enabled=True)) == () and pages(threat, PagingSettings(phones=SUPERVISORS)) == ()
    several = threat.model_copy(update={"alerts": (alert(3), alert(3, "mass_incident", "集体上访"))})
    assert "自伤自杀、群体性事件3级" in page_text(several, several.alerts)


def test_paging_needs_mobile_numbers_and_an_sms_channel(config_factory: ConfigFactory, catalogue_path: Path) -> None:
    with pytest.raises(ValidationError, match="mainland mobile"):
        PagingSettings(enabled=True, phones=("0535-6123456",))
    triage = {"enabled": True, "catalogue": str(catalogue_path), "paging": {"enabled": True, "phones": SUPERVISORS}}
    with pytest.raises(ConfigError, match=r"enable \[channels.sms\]"):
        config_factory(triage=triage)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_threat_pages_each_supervisor_once_and_the_history_keeps_each_page(
    protocol: Protocol, config_factory: ConfigFactory, catalogue_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_peer(protocol) as peer:
        monkeypatch.setenv(PASSWORD_ENV, peer.secret)
        triage: dict[str, Any] = {
            "enabled": True,
            "catalogue": str(catalogue_path),
            "paging": {"enabled": True, "phones": SUPERVISORS},
        }
        config = config_factory(channels={"sms": peer.channel_config()}, triage=triage, sensitive=SHIPPED_SENSITIVE)
        async with running_gateway(config) as (gateway, bound):
            seat = await Seat.connect(bound, "a1")
            await peer.deliver("物业再不管，我就从楼顶跳楼")  # the citizen's SMS: a conversation
            ticket_id = (await seat.expect("offer"))["ticket"]["id"]
            for phone in SUPERVISORS:
                [(text, parts, _)] = await peer.sent_to(phone)
                assert text.startswith("【12345预警】") and ticket_id[-8:] in text and "自伤自杀3级" in text
                peer.receipt(parts[0])
            queue = gateway.queue
            ticket = await queue.get(ticket_id)
            async with asyncio.timeout(10):  # the receipts are recorded as the peer sends them
                while sum(entry.action == "delivered" for entry in ticket.history) < len(SUPERVISORS):
                    await asyncio.sleep(0.02)
                    ticket = await queue.get(ticket_id)
            actions = [e.action for e in ticket.history if e.actor == "channel:sms" and e.action != "queued"]
            assert sorted(actions) == ["delivered", "delivered", "page_sent", "page_sent"]
            said = [(message.direction, message.text) for message in ticket.messages]
            assert said == [("in", "物业再不管，我就从楼顶跳楼")], "a page is no message of the conversation"
            await seat.close()
            assert await queue.redis.xlen(queue.keys.outbox("sms")) == 0, "each page left the outbox once sent"
