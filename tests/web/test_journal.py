"""Each agent's journal: a seat that comes back (a refresh, a dropped network, another gateway
process) is sent what it missed after the last position it saw, by position, not by time."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from gateway.config import GatewayConfig
from gateway.messages import TriageNews
from gateway.shell.app import Bound, Gateway
from gateway.ticket import SensitiveAlert, TranscriptSegment, utcnow
from gateway.web import seat_protocol as proto
from gateway.web.journal import after, journaled, position
from tests.conftest import ConfigFactory
from tests.helpers import Seat, post_intake, running_gateway


def test_which_frames_are_journaled_and_how_positions_order() -> None:
    final = TranscriptSegment(text="好的", start=0, end=1, confidence=0.9, final=True)
    partial = TranscriptSegment(text="好", start=0, end=1, confidence=0.5, final=False)
    assert journaled(proto.Transcript("01KT", final)) and not journaled(proto.Transcript("01KT", partial))
    assert journaled(proto.Revoked("01KT", "caller_hung_up"))
    assert not journaled(proto.OfferRevoked("01KT", "no_answer")) and not journaled(proto.Pong(1, "now"))
    assert position("1700000000000-12") == (1700000000000, 12)
    assert after("1700000000001-0", "1700000000000-99") and after("5-10", "5-9") and after("1-0", "")
    assert not after("5-9", "5-10") and not after("5-9", "5-9")


async def claim(bound: Bound, seat: Seat, text: str) -> str:
    _, body = await post_intake(bound, {"text": text})
    offer = await seat.expect("offer")
    assert offer["ticket"]["id"] == body["ticket_id"]
    await seat.send(type="accept", ticket=body["ticket_id"])
    await seat.expect("ticket")
    return str(body["ticket_id"])


async def say(gateway: Gateway, ticket: str, text: str, final: bool = True) -> None:
    segment = TranscriptSegment(text=text, start=0, end=1, confidence=0.9, final=final)
    message = json.dumps({"ticket": ticket, "segment": segment.model_dump(mode="json")}, ensure_ascii=False)
    await gateway.redis.publish(gateway.voice.keys.transcripts, message)


async def until(check: Any, what: str) -> None:
    """Until `check()` holds: what the gateway does for a seat that is away is seen only in Redis."""
    async with asyncio.timeout(5):
        while not await check():
            await asyncio.sleep(0.01)
    assert await check(), what


async def away(gateway: Gateway, seat: Seat, agent: str = "a1") -> None:
    await seat.close()
    await until(lambda: _gone(gateway, agent), "the gateway saw the seat go")


async def _gone(gateway: Gateway, agent: str) -> bool:
    return agent not in gateway.dispatcher.sessions


def journal_length(gateway: Gateway, agent: str, length: int) -> Any:
    async def check() -> bool:
        return int(await gateway.redis.xlen(gateway.queue.keys.journal(agent))) >= length

    return check


async def test_a_seat_that_comes_back_is_sent_what_it_missed_after_its_position(config: GatewayConfig) -> None:
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        assert seat.welcome["seq"] == "0-0" and "gap" not in seat.welcome  # no journal yet: from the start
        ticket = await claim(bound, seat, "路灯坏了三天")
        await say(gateway, ticket, "我家门口路灯坏了")
        seen = (await seat.expect("transcript"))["seq"]
        await say(gateway, ticket, "三天", final=False)
        assert "seq" not in await seat.expect("transcript")  # a partial result is not journaled
        await away(gateway, seat)

        await say(gateway, ticket, "三天了没人修")
        await say(gateway, ticket, "晚上", final=False)  # missed for good: the final one replaces it
        alert = SensitiveAlert(word="跳楼", category="self_harm", severity=3, context="我要跳楼", at=utcnow())
        news = TriageNews(ticket, "triaged", 9, ("sensitive", "sensitive_critical"), alerts=(alert,))
        await gateway.redis.publish(gateway.queue.keys.triage_news, news.serialize())
        await until(journal_length(gateway, "a1", 4), "the news of the away seat's ticket journaled")

        back = await Seat.connect(bound, "a1", since=seen)
        welcome = back.welcome
        missed = welcome["missed"]
        assert [frame["type"] for frame in missed] == ["transcript", "triaged", "alert"]
        assert missed[0]["segment"]["text"] == "三天了没人修" and missed[2]["alerts"][0]["word"] == "跳楼"
        seqs = [seen, *(frame["seq"] for frame in missed)]
        assert all(after(later, earlier) for earlier, later in itertools.pairwise(seqs))
        assert welcome["seq"] == missed[-1]["seq"] and "gap" not in welcome
        assert [resumed["id"] for resumed in welcome["resumed"]] == [ticket]

        await say(gateway, ticket, "请尽快处理")  # live again, from the welcome's position on
        live = await back.expect("transcript")
        assert after(live["seq"], welcome["seq"])

        fresh = await Seat.connect(bound, "a1")  # a page with no past: nothing replayed, a position given
        assert "missed" not in fresh.welcome and fresh.welcome["seq"] == live["seq"]
        await fresh.close()


async def test_a_seat_away_longer_than_its_journal_keeps_is_told_of_the_gap(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(seats={"listen": "127.0.0.1:0", "journal_length": 10})
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        ticket = await claim(bound, seat, "噪音扰民")
        await say(gateway, ticket, "第0句")
        seen = (await seat.expect("transcript"))["seq"]
        await away(gateway, seat)
        for number in range(1, 26):
            await say(gateway, ticket, f"第{number}句")
        await until(journal_length(gateway, "a1", 11), "journaled")
        await until(lambda: _last_said(gateway, "a1", "第25句"), "the last one journaled")
        back = await Seat.connect(bound, "a1", since=seen)
        assert back.welcome["gap"] is True
        texts = [frame["segment"]["text"] for frame in back.welcome["missed"]]
        assert texts == [f"第{number}句" for number in range(16, 26)]  # the newest journal_length
        await back.close()


async def _last_said(gateway: Gateway, agent: str, text: str) -> bool:
    newest: Any = await gateway.redis.xrevrange(gateway.queue.keys.journal(agent), count=1)
    return bool(newest) and text == json.loads(newest[0][1][b"f"])["segment"]["text"]


async def test_a_seat_that_comes_back_on_another_gateway_process_gets_what_the_first_journaled(
    config: GatewayConfig,
) -> None:
    async with running_gateway(config) as (first, first_bound), running_gateway(config) as (second, second_bound):
        seat = await Seat.connect(first_bound, "a1")
        ticket = await claim(first_bound, seat, "供暖不热")
        await say(first, ticket, "暖气不热")
        seen = (await seat.expect("transcript"))["seq"]
        await away(first, seat)
        await say(first, ticket, "家里有老人")
        await until(journal_length(first, "a1", 2), "the first process journaled for its away seat")

        back = await Seat.connect(second_bound, "a1", since=seen)
        assert [frame["segment"]["text"] for frame in back.welcome["missed"]] == ["家里有老人"]
        assert [resumed["id"] for resumed in back.welcome["resumed"]] == [ticket]
        # The second process holds the seat now; the first, told of the login, journals no more.
        await until(lambda: _not_away(first, "a1", ticket), "the first process let its away seat go")
        await say(second, ticket, "十八度")
        assert (await back.expect("transcript"))["segment"]["text"] == "十八度"
        await say(second, ticket, "谢谢")
        assert (await back.expect("transcript"))["segment"]["text"] == "谢谢"
        assert await second.redis.xlen(second.queue.keys.journal("a1")) == 4  # each once
        await back.close()


async def _not_away(gateway: Gateway, agent: str, ticket: str) -> bool:
    return agent not in gateway.seats.away_holding(ticket)
