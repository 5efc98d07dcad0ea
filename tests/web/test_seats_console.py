"""The seat page's server side beside the seats (gateway/web/console.py, seats.py): a submit checked
against the dispatch catalogue, and the console's catalogue, knowledge and earlier-tickets (历史工单)
endpoints (who may read them: no session, a supervisor, another agent's ticket)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import GatewayConfig, hash_secret
from gateway.errors import InvalidRequest
from gateway.shell.app import Bound, Gateway
from gateway.ticket import Citizen, ConversationMessage, Ticket, TranscriptSegment, utcnow
from gateway.triage.catalogue import load_catalogue
from gateway.web.console import COOKIE, earlier_tickets, knowledge_query
from gateway.web.seat_protocol import check_category
from peers.gateway_config import AGENT_TOKENS
from tests.conftest import ConfigFactory, missing
from tests.helpers import Seat, handled, queued_ticket, running_gateway
from tests.triage.conftest import SHARED_TRIAGE
from tests.web.console.support import console_listen

CATALOGUE = SHARED_TRIAGE / "catalogue.toml"
KNOWLEDGE = SHARED_TRIAGE / "knowledge.jsonl"
SUPERVISOR_TOKEN = "token-s1-" + "q" * 24
SUPERVISORS = [{"id": "s1", "name": "赵班长", "token_hash": hash_secret(SUPERVISOR_TOKEN)}]
PHONE = "13812345678"  # the citizen of `claimed`
DAY = 86400


# --- pure --------------------------------------------------------------------------------------


def test_a_category_outside_the_catalogue_is_refused_by_its_field() -> None:
    check_category("", frozenset())  # no catalogue: anything goes, even nothing
    check_category("自填分类", frozenset())
    check_category("heating", frozenset({"heating", "noise"}))
    for wrong, message in (("", "required"), ("暖气", "not a category")):
        with pytest.raises(InvalidRequest) as refused:
            check_category(wrong, frozenset({"heating", "noise"}))
        assert [field.path for field in refused.value.fields] == ["fields.category"]
        assert refused.value.fields[0].message.startswith(message)


def test_the_knowledge_query_is_the_text_then_the_newest_words_of_the_citizen() -> None:
    now = utcnow()
    ticket = queued_ticket(
        "kq-1",
        channel="sms",
        text="暖气不热",
        transcript=(
            TranscriptSegment(text="屋里才十几度", start=0, end=1, confidence=0.9),
            TranscriptSegment(text="您好请讲", speaker="agent", start=1, end=2, confidence=0.9),
            TranscriptSegment(text="还没说完", start=2, end=3, confidence=0.5, final=False),
        ),
        messages=(
            ConversationMessage(direction="in", id="m1", at=now, text="暖气不热"),
            ConversationMessage(direction="out", id="1-0", at=now, text="请留下地址", status="sent"),
            ConversationMessage(direction="in", id="m2", at=now, text="幸福小区3号楼"),
        ),
    )
    assert knowledge_query(ticket) == "暖气不热\n幸福小区3号楼\n屋里才十几度"
    assert knowledge_query(ticket, limit=6) == "暖气不热\n幸"


def test_the_earlier_tickets_are_those_before_newest_first_once_each_with_the_repeat_mark() -> None:
    now = utcnow()

    def before(n: int, days: float, **fields: Any) -> Ticket:
        return queued_ticket(f"p-{n}", received_at=now - timedelta(days=days), citizen=Citizen(phone=PHONE), **fields)

    ticket = before(0, 0)
    answered = before(1, 3, status="submitted", answer="答" * 100, text="问" * 100, category="heating")
    words = (TranscriptSegment(text="路灯坏了", start=0, end=1, confidence=0.9),)
    said = before(2, 1, channel="voice", transcript=words)
    later = before(3, -1)
    found = [later, answered, ticket, said, answered]  # any order; under two identities, twice
    listed = earlier_tickets(ticket, found, repeat_window=2 * DAY)
    assert (listed["ticket"], listed["repeat"], listed["repeat_count"]) == (ticket.id, True, 1)
    assert listed["earlier"] == [
        {
            "id": said.id,
            "channel": "voice",
            "received_at": said.received_at.isoformat(),
            "status": "queued",
            "category": "",
            "text": "路灯坏了",  # a call's words, when it has no text
        },
        {
            "id": answered.id,
            "channel": "web",
            "received_at": answered.received_at.isoformat(),
            "status": "submitted",
            "category": "heating",
            "text": "问" * 80,
            "answer": "答" * 80,
        },
    ]
    assert earlier_tickets(ticket, found, repeat_window=DAY / 2)["repeat"] is False  # the newest came a day before
    assert earlier_tickets(ticket, found, repeat_window=5 * DAY)["repeat_count"] == 2
    assert [one["id"] for one in earlier_tickets(ticket, found, DAY, limit=1)["earlier"]] == [said.id]
    alone = {"ticket": ticket.id, "repeat": False, "repeat_count": 0, "earlier": []}
    assert earlier_tickets(ticket, [ticket, later], DAY) == alone


# --- a real gateway ------------------------------------------------------------------------------


def triage_on(tmp_path: Path) -> dict[str, Any]:
    if not CATALOGUE.exists() or not KNOWLEDGE.exists():
        missing(f"the example catalogue and knowledge base are not in {SHARED_TRIAGE}")
    return {
        "triage": {"enabled": True, "catalogue": str(CATALOGUE)},
        "knowledge": {"enabled": True, "database": str(tmp_path / "kb.sqlite3"), "entries": str(KNOWLEDGE)},
    }


@pytest.fixture
def with_catalogue(config_factory: ConfigFactory, tmp_path: Path) -> GatewayConfig:
    return config_factory(**console_listen(), **triage_on(tmp_path), supervisors=SUPERVISORS)


@pytest.fixture
def without_catalogue(config_factory: ConfigFactory) -> GatewayConfig:
    return config_factory(**console_listen())


async def claimed(gateway: Gateway, bound: Bound, seat: Seat, text: str = "家里暖气片不热，屋里才十几度") -> str:
    ticket = queued_ticket(f"c-{utcnow().timestamp()}", text=text, citizen=Citizen(phone="13812345678"))
    await gateway.queue.intake(ticket, "client:test")
    assert (await seat.expect("offer"))["ticket"]["id"] == ticket.id
    await seat.send(type="accept", ticket=ticket.id)
    assert (await seat.expect("ack"))["status"] == "claimed"
    await seat.expect("ticket")
    return ticket.id


def agents_history(ticket: Ticket) -> list[tuple[str, str]]:
    return [(entry.actor, entry.action) for entry in ticket.history if entry.actor != "triage"]


async def test_a_submit_needs_a_category_of_the_catalogue_and_changes_nothing_without(
    with_catalogue: GatewayConfig,
) -> None:
    ids = {category.id for category in load_catalogue(CATALOGUE)}
    assert "heating" in ids
    async with running_gateway(with_catalogue) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        ticket_id = await claimed(gateway, bound, seat)
        before = await gateway.queue.get(ticket_id)
        for fields in ({}, {"category": "暖气不热"}, {"category": "", "notes": "已联系"}):
            sent = await seat.send(type="submit", ticket=ticket_id, fields=fields)
            error = await seat.expect("error")
            assert (error["re"], error["code"]) == (sent, "invalid")
            assert [field["path"] for field in error["fields"]] == ["fields.category"]
            after = await gateway.queue.get(ticket_id)
            assert (after.status, after.category, after.notes) == ("claimed", before.category, "")
            assert agents_history(after) == agents_history(before)  # triage may amend meanwhile; the agent did nothing
        await seat.send(type="submit", ticket=ticket_id, fields={"category": "heating"})
        assert (await seat.expect("ack"))["status"] == "submitted"
        stored = await gateway.queue.get(ticket_id)
        assert (stored.status, stored.category) == ("submitted", "heating")

        # A category saved earlier by an update counts: a submit without fields goes through.
        second = await claimed(gateway, bound, seat, "小区噪音扰民")
        await seat.send(type="update", ticket=second, fields={"category": "heating"})
        await seat.expect("ack")
        await seat.send(type="submit", ticket=second)
        assert (await seat.expect("ack"))["status"] == "submitted"
        await seat.close()


async def test_without_a_catalogue_any_category_is_submitted(without_catalogue: GatewayConfig) -> None:
    async with running_gateway(without_catalogue) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        ticket_id = await claimed(gateway, bound, seat)
        await seat.send(type="submit", ticket=ticket_id)
        assert (await seat.expect("ack"))["status"] == "submitted"
        assert (await gateway.queue.get(ticket_id)).category == ""
        await seat.close()


@asynccontextmanager
async def console_client(bound: Bound, who: str | None, token: str = "") -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client logged in to the console as agent `who` (s1: the supervisor; None: nobody)."""
    origin = f"http://{bound.http[0]}:{bound.http[1]}"
    async with aiohttp.ClientSession(base_url=origin, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        if who is not None:
            path, body = (
                ("/console/api/supervisor/login", {"supervisor": who, "token": token})
                if who == "s1"
                else ("/console/api/login", {"agent": who, "token": AGENT_TOKENS[who]})
            )
            async with client.post(path, json=body, headers={"Origin": origin}) as response:
                assert response.status == 200
            assert any(cookie.key == COOKIE for cookie in client.cookie_jar)
        yield client


async def get(client: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with client.get(path) as response:
        if response.status == 200:
            assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json()


async def test_the_catalogue_endpoint_needs_an_agents_session(with_catalogue: GatewayConfig) -> None:
    expected = [{"id": c.id, "name": c.name, "department": c.department} for c in load_catalogue(CATALOGUE)]
    async with running_gateway(with_catalogue) as (_gateway, bound):
        async with console_client(bound, None) as nobody:
            status, body = await get(nobody, "/console/api/catalogue")
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        async with console_client(bound, "s1", SUPERVISOR_TOKEN) as supervisor:
            status, body = await get(supervisor, "/console/api/catalogue")
            assert (status, body["error"]["code"]) == (403, "forbidden")
        async with console_client(bound, "a1") as agent:
            status, body = await get(agent, "/console/api/catalogue")
            assert (status, body) == (200, {"categories": expected})


async def test_no_catalogue_without_triage_and_no_knowledge_when_it_is_off(without_catalogue: GatewayConfig) -> None:
    async with running_gateway(without_catalogue) as (_gateway, bound), console_client(bound, "a1") as agent:
        assert await get(agent, "/console/api/catalogue") == (200, {"categories": []})
        assert await get(agent, "/console/api/knowledge?ticket=x") == (200, {"enabled": False, "results": []})


async def test_knowledge_suggestions_only_for_a_ticket_the_agent_holds(with_catalogue: GatewayConfig) -> None:
    async with running_gateway(with_catalogue) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        mine = await claimed(gateway, bound, seat)
        boss = await Seat.connect(bound, "boss")
        theirs = queued_ticket("c-boss", text="家里暖气不热", citizen=Citizen(phone="13912345678"))
        await gateway.queue.intake(theirs, "client:test")
        assert (await boss.expect("offer"))["ticket"]["id"] == theirs.id  # offered to boss, not a1
        async with console_client(bound, None) as nobody:
            status, body = await get(nobody, f"/console/api/knowledge?ticket={mine}")
            assert status == 401
        async with console_client(bound, "s1", SUPERVISOR_TOKEN) as supervisor:
            status, body = await get(supervisor, f"/console/api/knowledge?ticket={mine}")
            assert status == 403
        async with console_client(bound, "a1") as agent:
            status, body = await get(agent, f"/console/api/knowledge?ticket={mine}")
            assert status == 200 and body["enabled"] is True
            first = body["results"][0]
            assert set(first) == {"id", "question", "answer", "category", "source", "score"}
            assert (first["id"], first["category"], first["source"]) == (
                "kb-0105",
                "heating",
                "热力公司 2026年供热服务承诺",
            )
            for other in (theirs.id, "T" + "9" * 70, "no-such-ticket", ""):
                status, body = await get(agent, f"/console/api/knowledge?ticket={other}")
                assert (status, body["error"]["code"]) == (404, "not_found"), other
        async with console_client(bound, "boss") as holder:
            status, body = await get(holder, f"/console/api/knowledge?ticket={theirs.id}")
            assert status == 200 and body["results"][0]["id"] == "kb-0105"
            status, _ = await get(holder, f"/console/api/knowledge?ticket={mine}")
            assert status == 404
        await seat.close()
        await boss.close()


async def test_earlier_tickets_across_channels_only_for_the_ticket_held_or_a_supervisor(
    config_factory: ConfigFactory,
) -> None:
    config = config_factory(**console_listen(), supervisors=SUPERVISORS, history={"repeat_window": 2 * DAY})
    now = utcnow()
    answer = "您反映的饭店油烟问题已转市生态环境局核查，经现场检查该饭店已安装油烟净化设备并承诺按时清洗。" * 2
    sms = queued_ticket(
        "e-sms", channel="sms", received_at=now - timedelta(days=5), citizen=Citizen(phone=PHONE), text="楼下饭店油烟"
    )
    form = queued_ticket(  # in a queue a1 does not serve: it stays queued
        "e-form", queue="housing", received_at=now - timedelta(days=1), citizen=Citizen(phone=PHONE), text="油烟还是大"
    )
    stranger = queued_ticket("e-other", queue="housing", channel="wechat", citizen=Citizen(wechat_openid="oOther"))
    async with running_gateway(config) as (gateway, bound):
        await handled(gateway.queue, sms, "boss", category="环境保护", answer=answer)
        for ticket in (form, stranger):
            await gateway.queue.intake(ticket, "test")
        seat = await Seat.connect(bound, "a1")
        mine = await claimed(gateway, bound, seat)  # the same number, by the web form
        later = queued_ticket("e-later", queue="housing", citizen=Citizen(phone=PHONE), text="再反映一次")
        await gateway.queue.intake(later, "test")
        async with console_client(bound, "a1") as agent:
            status, body = await get(agent, f"/console/api/earlier?ticket={mine}")
            assert status == 200 and (body["ticket"], body["repeat"], body["repeat_count"]) == (mine, True, 1)
            listed = [(one["id"], one["channel"], one["status"]) for one in body["earlier"]]
            assert listed == [(form.id, "web", "queued"), (sms.id, "sms", "submitted")]  # newest first, no later one
            assert "answer" not in body["earlier"][0]
            assert (body["earlier"][1]["category"], body["earlier"][1]["answer"]) == ("环境保护", answer[:80])
            assert datetime.fromisoformat(body["earlier"][1]["received_at"]) == sms.received_at
            for other in (later.id, "T" + "9" * 70, "no-such-ticket", ""):  # not held: as the knowledge's
                status, body = await get(agent, f"/console/api/earlier?ticket={other}")
                assert (status, body["error"]["code"]) == (404, "not_found"), other
        async with console_client(bound, None) as nobody:
            status, body = await get(nobody, f"/console/api/earlier?ticket={mine}")
            assert (status, body["error"]["code"]) == (401, "unauthorized")
        async with console_client(bound, "s1", SUPERVISOR_TOKEN) as supervisor:  # any ticket, as a recording
            status, body = await get(supervisor, f"/console/api/earlier?ticket={form.id}")
            assert (status, body["repeat"], [one["id"] for one in body["earlier"]]) == (200, False, [sms.id])
            status, body = await get(supervisor, f"/console/api/earlier?ticket={later.id}")
            assert [one["id"] for one in body["earlier"]] == [mine, form.id, sms.id] and body["repeat_count"] == 2
            status, body = await get(supervisor, f"/console/api/earlier?ticket={stranger.id}")
            assert (status, body["repeat"], body["earlier"]) == (200, False, [])
        await seat.close()
