"""The seat page with a message ticket, the dispatch catalogue and the knowledge base, in a real
Chromium against a real gateway (triage and knowledge on): an SMS conversation with a reply kept
through a reload, sent, then 已发送 and 已送达 as the delivery news arrives; a submit refused without
a catalogue category, then filled by a 建议分类 button; knowledge suggestions and 采用此答案."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from gateway.messages import ConversationNews
from gateway.ticket import Citizen, ConversationMessage, Suggestion, Ticket, conversation_identity, utcnow
from tests.conftest import missing
from tests.helpers import queued_ticket
from tests.triage.conftest import SHARED_TRIAGE
from tests.web.console.support import GatewayThread, console_listen, log_in

CATALOGUE = SHARED_TRIAGE / "catalogue.toml"
KNOWLEDGE = SHARED_TRIAGE / "knowledge.jsonl"
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "console-seat-message.png"


@pytest.fixture
def triaged(config_factory: Any, tmp_path: Path) -> Iterator[GatewayThread]:
    """A gateway with `[triage]` (the example catalogue) and `[knowledge]` (the example base) on."""
    if not CATALOGUE.exists() or not KNOWLEDGE.exists():
        missing(f"the example catalogue and knowledge base are not in {SHARED_TRIAGE}")
    config = config_factory(
        **console_listen(),
        triage={"enabled": True, "catalogue": str(CATALOGUE)},
        knowledge={"enabled": True, "database": str(tmp_path / "kb.sqlite3"), "entries": str(KNOWLEDGE)},
    )
    with GatewayThread(config) as gateway:
        yield gateway


def claimed_on_page(page: Page, live: GatewayThread, ticket: Ticket, *later: str) -> None:
    """`ticket` queued (and the citizen's `later` messages joined to it), offered, accepted."""
    log_in(page, live)
    expect(page.locator("#connection")).to_have_text("已连接")
    queue = live.running.queue
    live.call(queue.intake(ticket, "client:test"))
    identity = conversation_identity(ticket)
    for index, text in enumerate(later):
        assert identity
        said = ConversationMessage(direction="in", id=f"{ticket.message_id}-{index}", at=utcnow(), text=text)
        assert live.call(queue.join(ticket.channel, identity, said, [said.id], "sms:test")).outcome == "joined"
    page.get_by_role("button", name="示闲").click()
    expect(page.locator("#offer")).to_contain_text(ticket.id)
    page.keyboard.press("Alt+A")
    expect(page.locator("#current .ticket-card")).to_contain_text(ticket.id)


def sms_ticket(text: str) -> Ticket:
    return queued_ticket(f"sms-{utcnow().timestamp()}", channel="sms", text=text, citizen=Citizen(phone="13812345678"))


def news(live: GatewayThread, ticket: str, reply: str, status: str, reason: str = "") -> None:
    """What the SMS channel publishes when the peer takes a reply, or the handset has it."""
    said = ConversationMessage(direction="out", id=reply, at=utcnow(), text="…", status=status, reason=reason)
    raw = ConversationNews(ticket, "a1", said).serialize()
    live.call(live.running.queue.redis.publish(live.running.queue.keys.news, raw))


def test_an_sms_conversation_with_a_reply_kept_through_a_reload_then_sent_and_delivered(
    triaged: GatewayThread, page: Page
) -> None:
    ticket = sms_ticket("小区门口的路灯坏了一个星期了")
    claimed_on_page(page, triaged, ticket, "在幸福路12号门口")
    said = page.locator("#conversation-list li")
    expect(said).to_have_count(2)
    expect(said.nth(0)).to_contain_text("小区门口的路灯坏了一个星期了")
    expect(said.nth(1)).to_contain_text("在幸福路12号门口")
    expect(said.nth(0).locator(".who")).to_contain_text("市民")
    expect(page.locator("#shortcuts-list")).to_contain_text("Ctrl+Enter")

    page.keyboard.press("Alt+M")  # to the reply box
    expect(page.get_by_label("回复市民")).to_be_focused()
    page.keyboard.type("您好，已转市政部门处理")
    page.reload()  # typed, not sent: it comes back
    expect(page.locator("#connection")).to_have_text("已连接")
    reply_box = page.get_by_label("回复市民")
    expect(reply_box).to_have_value("您好，已转市政部门处理")
    stored = triaged.call(triaged.running.queue.get(ticket.id))
    assert [message.direction for message in stored.messages] == ["in", "in"]  # nothing was sent
    assert "您好" not in page.evaluate("JSON.stringify(localStorage)")

    reply_box.focus()
    page.keyboard.press("Control+Enter")
    expect(said).to_have_count(3)
    out = said.nth(2)
    expect(out.locator(".message")).to_have_text("您好，已转市政部门处理")
    expect(out.locator(".who")).to_contain_text("坐席回复")
    expect(out.locator(".delivery")).to_have_text("排队中")
    expect(reply_box).to_have_value("")
    reply_id = out.get_attribute("data-message")
    assert reply_id
    stored = triaged.call(triaged.running.queue.get(ticket.id))
    assert [(m.direction, m.id, m.text, m.status) for m in stored.messages][-1] == (
        "out",
        reply_id,
        "您好，已转市政部门处理",
        "queued",
    )

    news(triaged, ticket.id, reply_id, "sent")
    expect(out.locator(".delivery")).to_have_text("已发送")
    news(triaged, ticket.id, reply_id, "delivered")
    expect(out.locator(".delivery")).to_have_text("已送达")
    expect(out.locator(".delivery")).to_have_attribute("data-delivery", "delivered")

    page.get_by_label("回复市民").fill("请问还有其他问题吗？")
    page.get_by_role("button", name="发送").click()
    expect(said).to_have_count(4)
    second = said.nth(3)
    second_id = second.get_attribute("data-message")
    assert second_id and second_id != reply_id
    news(triaged, ticket.id, second_id, "failed", "号码已停机")
    expect(second.locator(".delivery")).to_have_text("发送失败：号码已停机")
    expect(out.locator(".delivery")).to_have_text("已送达")  # the first one's state is its own


def test_a_submit_needs_a_catalogue_category_and_a_suggestion_fills_it(triaged: GatewayThread, page: Page) -> None:
    suggested = (
        Suggestion(category="municipal_facility", department="市城市管理局", score=0.82, evidence=("路灯", "不亮")),
        Suggestion(category="power_outage", department="国网供电公司", score=0.11, evidence=("不亮",)),
    )
    ticket = queued_ticket("web-cat-1", text="幸福路的路灯不亮已经三天了", suggestions=suggested)
    claimed_on_page(page, triaged, ticket)
    category = page.get_by_label("分类")
    option = page.locator("select#field-category option[value=municipal_facility]")  # the catalogue's
    expect(option).to_have_text("道路与市政设施（市城市管理局）")
    expect(category).to_have_value("")

    page.keyboard.press("Alt+S")
    expect(page.locator("#notices")).to_contain_text("不能提交：请从分派目录中选择分类")
    stored = triaged.call(triaged.running.queue.get(ticket.id))
    assert (stored.status, stored.category) == ("claimed", "")

    button = page.locator('#suggestions button[data-category="municipal_facility"]')
    expect(button).to_contain_text("建议分类：道路与市政设施（市城市管理局）")
    button.click()
    expect(category).to_have_value("municipal_facility")
    expect(button).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#save-state")).to_have_text("已保存")
    page.keyboard.press("Alt+S")
    expect(page.locator("#notices")).to_contain_text(f"已提交工单 {ticket.id}")
    stored = triaged.call(triaged.running.queue.get(ticket.id))
    assert (stored.status, stored.category) == ("submitted", "municipal_facility")


def test_knowledge_suggestions_show_beside_the_ticket_and_one_answers_it(triaged: GatewayThread, page: Page) -> None:
    ticket = queued_ticket("web-kb-1", text="家里暖气片不热，屋里才十几度", citizen=Citizen(phone="13912345678"))
    claimed_on_page(page, triaged, ticket)
    panel = page.locator("#knowledge")
    expect(panel).to_be_visible()
    hits = panel.locator(".hit")
    expect(hits.first).to_have_attribute("data-entry", "kb-0105")
    expect(hits.first).to_contain_text("暖气不热怎么办？")
    expect(hits.first).to_contain_text("出处：热力公司 2026年供热服务承诺")
    hits.first.get_by_role("button", name="采用此答案").click()
    answer = page.get_by_label("答复市民")
    expect(answer).to_have_value(re.compile(r"^供暖期内居民室内温度"))
    expect(page.get_by_label("知识库条目")).to_have_value("kb-0105")
    expect(hits.first.get_by_role("button", name="已采用")).to_be_visible()
    expect(page.locator("#save-state")).to_have_text("已保存")
    stored = triaged.call(triaged.running.queue.get(ticket.id))
    assert stored.answered_from == "kb-0105"
    assert stored.answer.startswith("供暖期内居民室内温度") and stored.status == "claimed"


def test_the_knowledge_panel_is_hidden_when_the_base_is_off(live: GatewayThread, page: Page) -> None:
    ticket = queued_ticket("web-kb-off", text="家里暖气片不热")
    claimed_on_page(page, live, ticket)
    expect(page.get_by_label("分类")).to_have_js_property("tagName", "INPUT")  # no catalogue: typed
    expect(page.locator("#suggestions")).to_be_hidden()
    expect(page.locator("#conversation")).to_be_hidden()  # a web form: no conversation
    panel = page.locator("#knowledge")
    expect(panel).to_have_attribute("data-answered", ticket.id)  # the page asked: the base is off
    expect(panel).to_be_hidden()


def test_the_screenshot_of_an_sms_conversation_fits_the_agents_screen(
    triaged: GatewayThread, page: Page, tmp_path: Path
) -> None:
    """docs/console-seat-message.png (written there with HG_SCREENSHOTS=1): an SMS ticket's
    conversation, a delivered reply, triage's suggestions and the knowledge base beside it."""
    suggested = (
        Suggestion(category="heating", department="热力公司（供热）", score=0.91, evidence=("暖气片", "不热")),
        Suggestion(category="property_service", department="市住房和城乡建设局", score=0.05, evidence=("小区",)),
    )
    ticket = queued_ticket(
        f"sms-shot-{utcnow().timestamp()}",
        channel="sms",
        text="你好，我家暖气片不热，屋里才十几度，孩子都冻感冒了",
        citizen=Citizen(phone="13812345678", name="陈女士"),
        suggestions=suggested,
    )
    claimed_on_page(page, triaged, ticket, "地址是幸福小区3号楼2单元501")
    expect(page.locator("#knowledge .hit").first).to_have_attribute("data-entry", "kb-0105")
    page.get_by_label("回复市民").fill("您好，已通知热力公司上门测温，请保持电话畅通。")
    page.get_by_role("button", name="发送").click()
    out = page.locator("#conversation-list li.out")
    expect(out).to_have_count(1)
    reply_id = out.get_attribute("data-message")
    assert reply_id
    news(triaged, ticket.id, reply_id, "delivered")
    expect(out.locator(".delivery")).to_have_text("已送达")
    page.get_by_label("回复市民").fill("请问您方便什么时间在家？")
    # Readable at 1366x768: nothing wider than the screen, the conversation and the knowledge in view.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    for shown in ("#conversation-list", "#reply-send", "#knowledge .hit", "#current-form"):
        box = page.locator(shown).first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1366, shown
    form, current = (page.locator(shown).bounding_box() for shown in ("#current-form", "#current"))
    assert form and current and form["x"] + form["width"] <= current["x"] + current["width"]  # inside its card
    shot = tmp_path / "console-seat-message.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("HG_SCREENSHOTS"):
        SCREENSHOT.write_bytes(shot.read_bytes())
