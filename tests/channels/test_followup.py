"""回访 (follow-up): the answer goes to the citizen with the satisfaction question, their reply is
read as a rating and recorded on the ticket, 不满意 reopens it (重办), silence is recorded as no
answer after `[followup] timeout` (time injected). SMPP and CMPP over real TCP, real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from gateway.channels import followup
from gateway.channels.followup import Outcome, Rating, question, read_rating, route
from gateway.intake import IntakeRequest
from gateway.messages import ConversationNews
from gateway.queue.desk import Source
from gateway.shell.app import Gateway
from gateway.ticket import Channel, Ticket, utcnow
from tests.channels.sms_stack import (
    CITIZEN,
    PASSWORD_ENV,
    PROTOCOLS,
    Peer,
    Protocol,
    SmsDesk,
    claimed_sms_ticket,
    sms_desk,
    sms_gateway,
    sms_peer,
)
from tests.helpers import Seat, running_gateway

ANSWER = "您反映的幸福路路灯已由市政部门修复, 感谢您的监督。"
MOBILE = "13900139000"


@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ("1", "satisfied"),
        ("１", "satisfied"),
        (" 2 ", "basic"),
        ("３。", "unsatisfied"),
        ("满意", "satisfied"),
        ("满意！", "satisfied"),
        ("非常满意", "satisfied"),
        ("满意的", "satisfied"),
        ("基本满意", "basic"),
        ("不满意", "unsatisfied"),
        ("不太满意…", "unsatisfied"),
        ("「很不满意」", "unsatisfied"),
        ("1 满意", "satisfied"),
        ("3不满意", "unsatisfied"),
        ("1 不满意", None),  # a digit and a word that disagree: no rating
        ("13", None),
        ("路灯还是不亮", None),
        ("", None),
    ],
)
def test_a_reply_is_read_as_a_rating_or_as_a_comment(reply: str, rating: Rating | None) -> None:
    assert read_rating(reply) == rating
    assert followup.outcome_of(reply) == (rating or "unrated")


def ticket(channel: Channel, **fields: Any) -> Ticket:
    return Ticket(
        id="01J0000000000000000000000A", channel=channel, message_id="m", received_at=utcnow(), queue="q", **fields
    )


@pytest.mark.parametrize(
    ("channel", "citizen", "enabled", "expected"),
    [
        ("sms", {"phone": CITIZEN}, {"sms"}, ("sms", CITIZEN, "")),
        ("sms", {"phone": CITIZEN}, set(), (None, "", "sms_disabled")),
        ("voice", {"phone": "+86" + MOBILE}, {"sms"}, ("sms", MOBILE, "")),
        ("voice", {"phone": "053112345678"}, {"sms"}, (None, "", "no_mobile_number")),
        ("voice", {"phone": MOBILE}, set(), (None, "", "sms_disabled")),
        ("web", {"phone": MOBILE}, {"sms"}, (None, "", "no_channel_back")),
    ],
)
def test_the_answer_goes_back_on_the_citizens_channel_and_a_voice_ticket_by_sms(
    channel: Channel, citizen: dict[str, str], enabled: set[Channel], expected: tuple[Any, ...]
) -> None:
    where = route(ticket(channel, citizen=citizen), frozenset(enabled))
    assert (where.channel, where.identity, where.reason) == expected


@pytest.mark.parametrize("outcome", ["satisfied", "basic", "unrated", "unsatisfied"])
def test_only_unsatisfied_reopens_and_clears_the_answer(outcome: Outcome) -> None:
    after = followup.answered(ticket("sms", answer=ANSWER, flags=("urgent",)), outcome)
    reopened = outcome == "unsatisfied"
    assert after.satisfaction == outcome
    assert after.flags == (("urgent", "reopened") if reopened else ("urgent",))
    assert after.answer == ("" if reopened else ANSWER)
    assert followup.answered(after, outcome).flags == after.flags  # flagged once


def test_silence_is_overdue_after_the_timeout_only() -> None:
    now = utcnow()
    assert followup.overdue_before(now, 3600) == now - timedelta(hours=1)
    assert followup.unanswered(ticket("sms")).satisfaction == "no_answer"


# --- over the wire ---------------------------------------------------------------------------------


@asynccontextmanager
async def news_of(gateway: Gateway) -> AsyncIterator[Any]:
    """The `hg:news` channel: a reply's delivery states, also for a ticket no seat holds any more."""
    pubsub = gateway.redis.pubsub()
    await pubsub.subscribe(gateway.queue.keys.news)
    try:
        yield pubsub
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def delivery_news(pubsub: Any, status: str) -> ConversationNews:
    async with asyncio.timeout(10):
        while True:
            # None for a subscribe confirmation (ignored) as for a quiet second: read on.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            news = ConversationNews.parse(message["data"]) if message else None
            if news is not None and news.message.status == status:
                return news


async def submitted_with_answer(seat: Seat, ticket_id: str, answer: str = ANSWER) -> None:
    await seat.send(type="accept", ticket=ticket_id)
    await seat.expect("ticket")
    await seat.send(type="submit", ticket=ticket_id, fields={"answer": answer})
    while (await seat.expect("ack")).get("status") != "submitted":
        pass  # the accept's


async def sms_ticket_answered(peer: Peer, seat: Seat, text: str = "路灯坏了") -> str:
    """A citizen's SMS, claimed and submitted with the answer; its ticket id."""
    await peer.deliver(text)
    ticket_id = str((await seat.expect("offer"))["ticket"]["id"])
    await submitted_with_answer(seat, ticket_id)
    return ticket_id


def actions(ticket: Ticket) -> list[str]:
    return [entry.action for entry in ticket.history]


async def test_the_answer_goes_out_with_the_question_and_3_reopens_the_ticket_with_its_history(desk: SmsDesk) -> None:
    peer, gateway, seat = desk.peer, desk.gateway, desk.seat
    async with news_of(gateway) as news:
        ticket_id = await sms_ticket_answered(peer, seat)
        ((text, part_ids, _),) = await peer.sent_to(CITIZEN)
        assert text == question(ANSWER) and "1 满意" in text and "3 不满意" in text
        sent = await delivery_news(news, "sent")
        for part_id in part_ids:
            peer.receipt(part_id)
        assert (await delivery_news(news, "delivered")).message.id == sent.message.id
    answered = await gateway.queue.get(ticket_id)
    assert answered.status == "submitted" and answered.answer == ANSWER
    (out,) = [m for m in answered.messages if m.direction == "out"]
    assert (out.text, out.status) == (question(ANSWER), "delivered")
    assert actions(answered)[-4:] == ["submitted", "followup_asked", "sent", "delivered"]

    await peer.deliver("３")
    offer = (await seat.expect("offer"))["ticket"]
    assert offer["id"] == ticket_id and offer["status"] == "offered"
    assert "reopened" in offer["flags"] and offer["satisfaction"] == "unsatisfied"
    offered = Ticket.model_validate(offer)
    assert actions(offered)[-3:] == ["followup_answered", "reopened", "offered"]
    assert offered.history[-2].detail == {"reason": "followup_unsatisfied", "answer": ANSWER}
    assert offered.history[-3].detail == {"rating": "unsatisfied", "text": "３"}
    assert offered.answer == "" and "submitted" in actions(offered)  # its whole history
    assert await gateway.redis.xlen(gateway.queue.keys.created) == 1  # the answer is no new ticket
    assert [m.text for m in offered.messages if m.direction == "in"] == ["路灯坏了"]  # nor a message

    await peer.deliver("在幸福路十二号")  # the reopened ticket is the citizen's conversation again
    assert (await seat.expect("message"))["ticket"] == ticket_id


@pytest.mark.parametrize(
    ("protocol", "reply", "outcome"),
    [("smpp", "满意！", "satisfied"), ("cmpp", "满意！", "satisfied"), ("smpp", "修得挺快, 谢谢师傅", "unrated")],
)
async def test_a_rating_or_a_comment_is_recorded_once_and_the_next_message_is_a_new_ticket(
    protocol: Protocol, reply: str, outcome: Outcome, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_desk(protocol, config_factory, monkeypatch) as desk:
        peer, gateway, seat = desk.peer, desk.gateway, desk.seat
        ticket_id = await sms_ticket_answered(peer, seat)
        await peer.sent_to(CITIZEN)
        await peer.deliver(reply)
        await peer.answers(2)  # answered only once recorded
        rated = await gateway.queue.get(ticket_id)
        assert (rated.status, rated.satisfaction, rated.flags) == ("submitted", outcome, ())  # not reopened
        assert rated.history[-1].action == "followup_answered"
        assert rated.history[-1].detail == {"rating": outcome, "text": reply}
        assert await gateway.redis.zcard(gateway.queue.keys.followups) == 0
        await peer.deliver("另外, 小区门口的垃圾没人清")  # not asked again: a message of its own
        offer = (await seat.expect("offer"))["ticket"]
        assert offer["id"] != ticket_id and offer["text"] == "另外, 小区门口的垃圾没人清"
        assert (await gateway.queue.get(ticket_id)).history == rated.history


async def test_no_answer_is_recorded_after_the_timeout(config_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with sms_desk("smpp", config_factory, monkeypatch) as desk:
        peer, gateway, seat = desk.peer, desk.gateway, desk.seat
        asked = utcnow()
        ticket_id = await sms_ticket_answered(peer, seat)
        timeout = gateway.config.followup.timeout
        assert timeout == 48 * 3600
        assert await gateway.followups.expire(asked + timedelta(seconds=timeout - 60)) == 0  # not yet
        assert await gateway.followups.expire(utcnow() + timedelta(seconds=timeout + 1)) == 1
        silent = await gateway.queue.get(ticket_id)
        assert (silent.status, silent.satisfaction) == ("submitted", "no_answer")
        assert silent.history[-1].action == "followup_unanswered"
        assert await gateway.followups.expire(utcnow() + timedelta(seconds=timeout + 2)) == 0  # once
        await peer.deliver("1")  # too late: an ordinary message
        assert (await seat.expect("offer"))["ticket"]["text"] == "1"
        assert (await gateway.queue.get(ticket_id)).satisfaction == "no_answer"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_voice_tickets_answer_goes_by_sms_to_the_callers_mobile(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_gateway(protocol, config_factory, monkeypatch) as (peer, gateway, bound_at):
        call = IntakeRequest(channel="voice", citizen={"phone": "+86" + MOBILE}, text="来电: 路灯坏了")  # type: ignore[arg-type]
        accepted = await gateway.desk.submit(call, Source("worker:w1", None, frozenset({"voice"})))
        seat = await Seat.connect(bound_at, "a1")
        assert (await seat.expect("offer"))["ticket"]["id"] == accepted.ticket_id
        await submitted_with_answer(seat, accepted.ticket_id)
        ((text, _, _),) = await peer.sent_to(MOBILE)
        assert text == question(ANSWER)
        await peer.deliver("2", source=MOBILE)
        await peer.answers(1)
        rated = await gateway.queue.get(accepted.ticket_id)
        assert (rated.channel, rated.satisfaction) == ("voice", "basic")
        assert await gateway.redis.xlen(gateway.queue.keys.created) == 1
        await seat.close()


async def test_a_web_ticket_has_no_channel_back_and_says_so(config: Any) -> None:
    async with running_gateway(config) as (gateway, bound_at):
        form = IntakeRequest(channel="web", citizen={"phone": MOBILE}, text="网上留言: 路灯坏了")  # type: ignore[arg-type]
        accepted = await gateway.desk.submit(form, Source("client:portal", "portal", frozenset({"web"})))
        seat = await Seat.connect(bound_at, "a1")
        await seat.expect("offer")
        await submitted_with_answer(seat, accepted.ticket_id)
        done = await gateway.queue.get(accepted.ticket_id)
        assert done.history[-1].action == "followup_not_sent"
        assert done.history[-1].detail == {"reason": "no_channel_back"}
        assert await gateway.redis.zcard(gateway.queue.keys.followups) == 0
        assert await gateway.redis.exists(gateway.queue.keys.outbox("web")) == 0
        await seat.close()


async def test_a_full_outbox_refuses_the_submit_and_the_ticket_stays_claimed(
    config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_peer("smpp") as peer:
        monkeypatch.setenv(PASSWORD_ENV, peer.secret)
        config = config_factory(channels={"sms": peer.channel_config()}, redis={"outbox_maxlen": 1})
        async with running_gateway(config) as (gateway, bound_at):
            seat = await Seat.connect(bound_at, "a1")
            ticket_id = await claimed_sms_ticket(peer, seat)
            await peer.server.close()  # the reply below waits in the outbox: it is full
            await seat.send(type="reply", ticket=ticket_id, text="收到, 已转市政")
            while "outbox" not in await seat.expect("ack"):
                pass
            await seat.send(type="submit", ticket=ticket_id, fields={"answer": ANSWER})
            error = await seat.expect("error")
            assert error["code"] == "unavailable" and "outbox" in error["message"]
            kept = await gateway.queue.get(ticket_id)
            assert (kept.status, kept.answer, actions(kept)[-1]) == ("claimed", "", "replied")
            assert await gateway.redis.zcard(gateway.queue.keys.followups) == 0
            await seat.close()


async def test_an_answer_saved_before_a_plain_submit_still_goes_out_and_a_submit_without_one_reads_nothing(
    config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_desk("smpp", config_factory, monkeypatch) as desk:
        peer, gateway, seat = desk.peer, desk.gateway, desk.seat
        ticket_id = await claimed_sms_ticket(peer, seat)
        await seat.send(type="update", ticket=ticket_id, fields={"answer": ANSWER})  # autosaved earlier
        await seat.expect("ticket")
        await seat.send(type="submit", ticket=ticket_id)  # no last edits: Redis finds the answer
        while (await seat.expect("ack")).get("status") != "submitted":
            pass
        ((text, _, _),) = await peer.sent_to(CITIZEN)
        assert text == question(ANSWER)
        assert actions(await gateway.queue.get(ticket_id))[-2:] == ["submitted", "followup_asked"]

        await peer.deliver("另一件事", source="13900000001")  # another citizen: no answer written
        other = str((await seat.expect("offer"))["ticket"]["id"])
        await seat.send(type="accept", ticket=other)
        await seat.expect("ticket")
        await seat.send(type="submit", ticket=other)
        while (await seat.expect("ack")).get("status") != "submitted":
            pass
        plain = await gateway.queue.get(other)
        assert plain.status == "submitted" and plain.answer == ""
        assert not [a for a in actions(plain) if a.startswith("followup")]  # no 回访 asked, none refused
