"""The seat page in a real Chromium against a real gateway and Redis: an offer rings and shows the
ticket, accept, edits autosaved through a reload, submit; a voice ticket's live transcript; the
seats' server restarted under the page; the citizen's earlier tickets (历史工单) and the repeat mark."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from playwright.sync_api import Page, expect

from gateway.config import LiveConfig, TriageConfig
from gateway.messages import ConversationNews, Escalated, TriageNews
from gateway.ticket import (
    Attachment,
    Citizen,
    ConversationMessage,
    DeadlineClock,
    SensitiveAlert,
    Ticket,
    TranscriptSegment,
    conversation_identity,
    utcnow,
)
from gateway.triage.merge import MergeSettings
from gateway.triage.service import Triage, build_triager
from gateway.voice.link import VoiceLink
from tests.helpers import handled, queued_ticket, voice_ticket
from tests.triage.conftest import SHARED_TRIAGE
from tests.triage.merge_contacts import MANHOLE
from tests.triage.test_merge_service import MERGE, citizen_ticket
from tests.web.console.support import GatewayThread, log_in
from tests.web.console.test_console_message import claimed_on_page, sms_ticket

RINGING = re.compile(r"\bringing\b")


def ready_seat(page: Page, live: GatewayThread) -> None:
    log_in(page, live)
    expect(page.locator("#connection")).to_have_text("已连接")
    page.get_by_role("button", name="示闲").click()
    expect(page.locator("#state-label")).to_have_text("示闲")


def test_an_offer_rings_and_an_edit_survives_a_reload_until_it_is_submitted(live: GatewayThread, page: Page) -> None:
    ready_seat(page, live)
    citizen = {"phone": "13812345678", "name": "陈先生"}
    ticket_id = live.intake({"citizen": citizen, "text": "幸福路12号路灯不亮已经三天了", "flags": ["urgent"]})
    offer = page.locator("#offer")
    expect(offer).to_be_visible()
    expect(page.locator("body")).to_have_class(RINGING)
    expect(page.locator("body")).to_have_attribute("data-rings", "1")
    for shown in ("幸福路12号路灯不亮已经三天了", "陈先生", "13812345678", "紧急", ticket_id):
        expect(offer).to_contain_text(shown)  # the agent sees the full number
    page.keyboard.press("Alt+A")
    current = page.locator("#current")
    expect(current).to_be_visible()
    expect(offer).to_be_hidden()
    expect(page.locator("body")).not_to_have_class(RINGING)
    page.get_by_label("地址").fill("芝罘区幸福路12号")
    page.get_by_label("分类").fill("市政设施")
    expect(page.locator("#save-state")).to_have_text("已保存")

    page.reload()  # mid-ticket: the claimed ticket and its saved edits come back
    expect(page.locator("#connection")).to_have_text("已连接")
    expect(page.get_by_label("地址")).to_have_value("芝罘区幸福路12号")
    expect(page.get_by_label("分类")).to_have_value("市政设施")
    expect(page.get_by_label("联系电话")).to_have_value("13812345678")
    page.get_by_label("备注").fill("已联系市政处理")
    page.keyboard.press("Alt+S")  # the unsaved note goes with the submit
    expect(page.locator("#notices")).to_contain_text(f"已提交工单 {ticket_id}")
    expect(current).to_be_hidden()

    stored = live.call(live.running.queue.get(ticket_id))
    assert (stored.status, stored.agent) == ("submitted", "a1")
    assert (stored.address, stored.category, stored.notes) == ("芝罘区幸福路12号", "市政设施", "已联系市政处理")


def test_a_voice_tickets_transcript_grows_live_on_the_page(live: GatewayThread, page: Page) -> None:
    ready_seat(page, live)
    call = voice_ticket("call-console-1", called="12345", ivr_path="20")
    live.call(live.running.queue.intake(call, "worker:w1"))
    offer = page.locator("#offer")
    expect(offer).to_contain_text("电话")
    expect(offer).to_contain_text("12345 / 20")  # called number and IVR path
    lines = offer.locator(".transcript li")
    expect(lines).to_have_count(0)
    voice = VoiceLink(live.running.queue)
    partial = TranscriptSegment(text="我家门口", start=0, end=1, confidence=0.5, final=False)
    live.call(voice.publish_transcript(call.id, partial))
    expect(lines).to_have_text(["市民：我家门口"])
    expect(lines.first).to_have_class(re.compile(r"\bpartial\b"))
    said = TranscriptSegment(text="我家门口路灯坏了", start=0, end=1.5, confidence=0.9)
    live.call(voice.publish_transcript(call.id, said))  # the final words replace the partial ones
    expect(lines).to_have_text(["市民：我家门口路灯坏了"])
    expect(lines.first).not_to_have_class(re.compile(r"\bpartial\b"))
    live.call(voice.publish_transcript(call.id, TranscriptSegment(text="三天了", start=2, end=3, confidence=0.9)))
    expect(lines).to_have_text(["市民：我家门口路灯坏了", "市民：三天了"])


def test_the_page_reconnects_after_the_seats_server_restarts_and_shows_its_ticket(
    live: GatewayThread, page: Page
) -> None:
    ready_seat(page, live)
    ticket_id = live.intake({"citizen": {"phone": "13912345678"}, "text": "小区噪音扰民"})
    expect(page.locator("#offer")).to_be_visible()
    page.get_by_role("button", name="接受").click()
    expect(page.locator("#current")).to_be_visible()
    page.get_by_label("地址").fill("莱山区观海路8号")
    expect(page.locator("#save-state")).to_have_text("已保存")
    expect(page.locator("body")).to_have_attribute("data-connects", "1")

    async def restart() -> None:
        await live.running.seat_server.stop()  # every seat's socket drops (1001)
        await live.running.seat_server.start()

    live.call(restart())
    expect(page.locator("body")).to_have_attribute("data-connects", "2")
    expect(page.locator("#connection")).to_have_text("已连接")
    expect(page.locator("#current .ticket-card")).to_contain_text(ticket_id)
    expect(page.get_by_label("地址")).to_have_value("莱山区观海路8号")
    expect(page.locator("#notices")).to_contain_text("已恢复处理中的工单 1 张")
    stored = live.call(live.running.queue.get(ticket_id))
    assert (stored.status, stored.agent, stored.address) == ("claimed", "a1", "莱山区观海路8号")


def test_deadline_colours_and_a_sensitive_word_alert_show_on_the_seat(live: GatewayThread, page: Page) -> None:
    ready_seat(page, live)
    now = utcnow()
    clocks = (  # received an hour ago: a third of 3 h used, 6/7 of 70 min, and overdue
        DeadlineClock(name="contact", limit="2h", due=now + timedelta(hours=2)),
        DeadlineClock(name="reply", limit="1wd", due=now + timedelta(minutes=10)),
        DeadlineClock(name="resolve", limit="5wd", due=now - timedelta(minutes=1)),
    )
    ticket = queued_ticket(
        "m-alert", text="公司被拖欠货款", flags=("enterprise",), clocks=clocks, received_at=now - timedelta(hours=1)
    )
    live.call(live.running.queue.intake(ticket, "client:test"))
    offer = page.locator("#offer")
    expect(offer).to_contain_text("政企通")
    deadlines = offer.locator(".deadline")
    expect(deadlines).to_have_count(3)
    for index, colour in enumerate(("green", "yellow", "red")):
        expect(deadlines.nth(index)).to_have_attribute("data-colour", colour)
    expect(offer).to_contain_text("联系时限")
    alert = SensitiveAlert(word="跳楼", category="self_harm", severity=3, context="再不给钱我就跳楼", at=now)
    news = TriageNews(ticket.id, "triaged", 9, ("enterprise", "sensitive", "sensitive_critical"), alerts=(alert,))
    live.call(live.running.queue.redis.publish(live.running.queue.keys.triage_news, news.serialize()))
    expect(page.locator("#notices")).to_contain_text("敏感词预警（自伤自杀，3级）")
    expect(offer.locator(".alert")).to_have_text("自伤自杀（3级）“跳楼”：再不给钱我就跳楼")


def test_a_calls_recording_plays_from_the_seat_page(live: GatewayThread, page: Page) -> None:
    recordings = live.config.resolve(live.config.voice.recordings_dir)
    recordings.mkdir(parents=True, exist_ok=True)
    audio = bytes(range(256)) * 32
    (recordings / "call-console-rec.wav").write_bytes(audio)
    attachment = Attachment(
        kind="recording", path=str(recordings / "call-console-rec.wav"), mime="audio/wav", seconds=2
    )
    ready_seat(page, live)
    call = voice_ticket("call-console-rec", attachments=(attachment,))
    live.call(live.running.queue.intake(call, "worker:w1"))
    player = page.locator("#offer audio")
    expect(player).to_have_attribute("src", f"/console/api/recording?ticket={call.id}&n=0")
    expect(page.locator("#offer")).to_contain_text("录音（2 秒）")
    # What the audio element asks when it seeks: a range, with the page's own session.
    part = page.request.get(
        f"{live.http}/console/api/recording?ticket={call.id}&n=0", headers={"Range": "bytes=512-1023"}
    )
    assert (part.status, part.body()) == (206, audio[512:1024])


def test_a_ticket_taken_back_while_the_page_was_disconnected_is_said_not_dropped(
    live: GatewayThread, page: Page
) -> None:
    ready_seat(page, live)
    ticket_id = live.intake({"citizen": {"phone": "13912345678"}, "text": "楼道灯不亮"})
    expect(page.locator("#offer")).to_be_visible()
    page.get_by_role("button", name="接受").click()
    expect(page.locator("#current")).to_be_visible()
    page.get_by_role("button", name="示忙").click()  # no offer of it again after the reconnect
    expect(page.locator("#state-label")).to_have_text("示忙")

    async def taken_back_meanwhile() -> None:
        await live.running.seat_server.stop()
        await live.running.queue.release(ticket_id, "a1", "agent_gone", "claimed")
        await live.running.seat_server.start()

    live.call(taken_back_meanwhile())
    expect(page.locator("body")).to_have_attribute("data-connects", "2")
    expect(page.locator("#notices")).to_contain_text(f"工单 {ticket_id} 在断线期间已收回或关闭")
    expect(page.locator("#current")).to_be_hidden()


def test_a_child_ticket_shows_its_parent_and_is_split_from_the_page(live: GatewayThread, page: Page) -> None:
    merge = TriageConfig(enabled=True, catalogue=str(SHARED_TRIAGE / "catalogue.toml"), merge=MergeSettings(**MERGE))
    config = live.config.model_copy(update={"triage": merge})
    queue = live.running.queue
    older, newer = (citizen_ticket(n, MANHOLE[n], "web") for n in range(2))
    child, parent = (live.call(queue.intake(ticket, "test")).ticket_id for ticket in (older, newer))
    consumer = Triage(LiveConfig(config), queue, build_triager(config), name="beside")
    live.call(consumer.triage(parent))  # triaged first: the 主单; the older one joins it
    live.call(consumer.triage(child))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    ready_seat(page, live)
    offer = page.locator("#offer")
    expect(offer).to_contain_text(f"主单 {parent}")  # the oldest waiting is offered first: the 子单
    page.keyboard.press("Alt+A")
    current = page.locator("#current")
    expect(current).to_contain_text(f"主单 {parent}")
    current.get_by_role("button", name="拆分").click()
    expect(page.locator("#notices")).to_contain_text(f"工单 {child} 已拆分为独立工单")
    expect(current.get_by_role("button", name="拆分")).to_have_count(0)
    assert live.call(queue.get(child)).parent == ""
    assert not errors, errors


async def _journaled(live: GatewayThread, agent: str, length: int) -> None:
    """Until the agent's journal holds `length` frames: while no page is connected, what the
    gateway did for the seat shows only there."""
    redis, key = live.running.queue.redis, live.running.queue.keys.journal(agent)
    async with asyncio.timeout(10):
        while await redis.xlen(key) < length:
            await asyncio.sleep(0.01)


async def _seat_gone(live: GatewayThread, agent: str) -> None:
    async with asyncio.timeout(10):
        while agent in live.running.dispatcher.sessions:
            await asyncio.sleep(0.01)


async def _citizen_writes(live: GatewayThread, ticket: Ticket, text: str, number: int = 1) -> None:
    """The citizen's follow-up joined to the ticket, and its news published, as the SMS channel does."""
    queue = live.running.queue
    said = ConversationMessage(direction="in", id=f"{ticket.message_id}-{number}", at=utcnow(), text=text)
    identity = conversation_identity(ticket)
    assert identity
    joined = await queue.join(ticket.channel, identity, said, [said.id], "sms:test")
    assert joined.outcome == "joined"
    await queue.redis.publish(queue.keys.news, ConversationNews(ticket.id, "a1", said).serialize())


def busy_with_sms(page: Page, live: GatewayThread, text: str) -> Ticket:
    """A citizen's SMS claimed on the page, the seat then busy (offered nothing else meanwhile)."""
    ticket = sms_ticket(text)
    claimed_on_page(page, live, ticket)
    page.get_by_role("button", name="示忙").click()
    expect(page.locator("#state-label")).to_have_text("示忙")
    return ticket


def shows_one_missed_message(page: Page, count: int, text: str) -> None:
    """The conversation has `count` messages, the last `text`, and the page says one came meanwhile."""
    said = page.locator("#conversation-list li")
    expect(said).to_have_count(count)
    expect(said.nth(count - 1)).to_contain_text(text)
    expect(page.locator("#notices")).to_contain_text("断线期间收到市民新消息 1 条，已补上")


def test_news_missed_while_the_seats_server_restarted_is_replayed_by_position(live: GatewayThread, page: Page) -> None:
    ticket = busy_with_sms(page, live, "楼下饭店油烟太大")
    expect(page.locator("body")).to_have_attribute("data-connects", "1")
    said = page.locator("#conversation-list li")
    expect(said).to_have_count(1)
    journal = live.call(live.running.queue.redis.xlen(live.running.queue.keys.journal("a1")))

    async def written_meanwhile() -> None:
        await live.running.seat_server.stop()  # every seat's socket drops (1001)
        await _seat_gone(live, "a1")
        await _citizen_writes(live, ticket, "晚上十点以后还在排烟")
        await _journaled(live, "a1", journal + 1)
        await live.running.seat_server.start()

    live.call(written_meanwhile())
    expect(page.locator("body")).to_have_attribute("data-connects", "2")
    shows_one_missed_message(page, 2, "晚上十点以后还在排烟")


def test_a_page_that_comes_back_asks_for_what_it_missed_since_the_position_it_kept(
    live: GatewayThread, page: Page
) -> None:
    ticket = busy_with_sms(page, live, "公交站台的顶棚漏雨")
    live.call(_citizen_writes(live, ticket, "就在人民路站"))  # seen live: the page keeps its position
    said = page.locator("#conversation-list li")
    expect(said).to_have_count(2)
    seat_url = page.url
    page.goto("about:blank")  # the agent leaves the page; the claim waits for reconnect_grace
    live.call(_seat_gone(live, "a1"))
    live.call(_citizen_writes(live, ticket, "下雨天根本没法等车", number=2))
    page.goto(seat_url)
    expect(page.locator("#connection")).to_have_text("已连接")
    # Only what came after the kept position is new to the page: one message, not two.
    shows_one_missed_message(page, 3, "下雨天根本没法等车")


def test_a_repeat_contact_is_marked_on_the_offer_and_its_earlier_tickets_listed_after_the_accept(
    live: GatewayThread, page: Page
) -> None:
    phone, now, queue = "13812345678", utcnow(), live.running.queue
    citizen = Citizen(phone=phone)
    answer = "您反映的饭店油烟问题已转市生态环境局核查，该店已加装油烟净化设备。"
    three_days_ago, yesterday = now - timedelta(days=3), now - timedelta(days=1)
    sms = queued_ticket("r-sms", channel="sms", received_at=three_days_ago, citizen=citizen, text="油烟太大")
    call = voice_ticket("call-repeat-1", caller=phone, received_at=yesterday, text="饭店油烟还是很大")
    live.call(handled(queue, sms, "boss", category="环境保护", answer=answer))
    live.call(handled(queue, call, "boss", category="环境保护"))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    ready_seat(page, live)
    form = live.intake({"citizen": {"phone": phone}, "text": "饭店油烟第三次反映了"})  # the web form, the same number
    offer = page.locator("#offer")
    expect(offer).to_contain_text(form)
    expect(page.locator("#offer-repeat")).to_have_text("重复诉求（此前 2 次）")  # seen before the accept
    page.keyboard.press("Alt+A")
    panel = page.get_by_role("region", name="历史工单")
    expect(panel).to_be_visible()
    items = panel.locator(".earlier-item")
    expect(items).to_have_count(2)
    assert [items.nth(n).get_attribute("data-ticket") for n in range(2)] == [call.id, sms.id]  # newest first
    expect(items.locator(".channel")).to_have_text(["电话", "短信"])
    expect(items.locator(".status")).to_have_text(["已提交", "已提交"])
    expect(items.nth(0)).to_contain_text("饭店油烟还是很大")
    expect(items.nth(0).locator(".answer")).to_have_count(0)
    expect(items.nth(1).locator(".answer")).to_have_text(f"答复：{answer}")
    expect(page.locator("#earlier-repeat")).to_have_text("重复诉求（此前 2 次）")
    # Beside the ticket, inside the agents' 1366x768 screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    shown, current = panel.bounding_box(), page.locator("#current").bounding_box()
    assert shown and current and shown["x"] >= current["x"] + current["width"] and shown["x"] + shown["width"] <= 1366
    page.keyboard.press("Alt+S")
    expect(page.locator("#notices")).to_contain_text(f"已提交工单 {form}")
    expect(panel).to_be_hidden()
    again = voice_ticket("call-repeat-2", caller=phone, text="还是油烟")
    live.call(queue.intake(again, "worker:w1"))  # now a call: 重复来电, the form counted too
    expect(offer).to_contain_text(again.id)
    expect(page.locator("#offer-repeat")).to_have_text("重复来电（此前 3 次）")
    assert not errors, errors


def test_a_duban_event_on_a_held_ticket_is_said_on_the_seat(live: GatewayThread, page: Page) -> None:
    ready_seat(page, live)
    ticket_id = live.intake({"citizen": {"phone": "13912345678"}, "text": "社保断缴了怎么补缴"})
    expect(page.locator("#offer")).to_be_visible()
    page.get_by_role("button", name="接受").click()
    expect(page.locator("#current")).to_be_visible()
    due = utcnow() - timedelta(days=1)
    queue = live.running.queue
    for kind in ("reminder", "report"):
        event = Escalated(ticket_id, "general", "resolve", kind, due, utcnow())
        live.call(queue.redis.publish(queue.keys.escalation_news, event.serialize()))
    notices = page.locator("#notices")
    expect(notices).to_contain_text(f"督办提醒：工单 {ticket_id} 的办结时限已超期")
    expect(notices.locator(".error")).to_contain_text(f"督办通报：工单 {ticket_id} 的办结时限已超期")


def test_the_tickets_history_is_there_to_open_in_the_agents_words(live: GatewayThread, page: Page) -> None:
    ready_seat(page, live)
    ticket_id = live.intake({"citizen": {"phone": "13912345678"}, "text": "小区路灯不亮"})
    expect(page.locator("#offer")).to_be_visible()
    page.get_by_role("button", name="接受").click()
    record = page.locator("#current details.history")
    expect(record.locator("summary")).to_have_text(re.compile(r"处理记录（[0-9]+ 条）"))
    record.locator("summary").click()
    lines = record.locator("li")
    expect(lines.first).to_contain_text("接口 webform")
    expect(lines.first).to_contain_text("进入队列")
    expect(record).to_contain_text("坐席 a1  坐席受理")
    assert live.call(live.running.queue.get(ticket_id)).status == "claimed"
