"""Several tabs of one agent (issue #14, item 7), two pages in one browser context against a real
gateway: one leads (the only seat socket, the ring), the other follows, says so and acts through
the leader; closing the leader hands over, and the offer ringing there is offered to the new one."""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Page, expect

from tests.web.console.support import GatewayThread, log_in

LEADER = "本页为主页面"
FOLLOWER = re.compile("跟随中")


def test_one_tab_leads_the_other_follows_and_closing_the_leader_loses_no_offer(
    live: GatewayThread, page: Page, context: BrowserContext
) -> None:
    log_in(page, live)
    expect(page.locator("#tab-role")).to_have_text(LEADER)
    expect(page.locator("#connection")).to_have_text("已连接")

    follower = context.new_page()
    follower.goto(f"{live.http}/console/")
    expect(follower.locator("#tab-role")).to_have_text(FOLLOWER)
    expect(follower.locator("#connection")).to_have_text("已连接")  # the leader's connection, mirrored
    follower.get_by_role("button", name="示闲").click()  # sent through the leader's seat
    expect(page.locator("#state-label")).to_have_text("示闲")
    expect(follower.locator("#state-label")).to_have_text("示闲")
    assert list(live.running.dispatcher.sessions) == ["a1"]  # one seat socket for both tabs
    assert follower.locator("body").get_attribute("data-connects") is None  # the follower opened none

    ticket_id = live.intake({"citizen": {"phone": "13812345678"}, "text": "两个标签页的工单"})
    expect(page.locator("#offer")).to_contain_text(ticket_id)
    expect(follower.locator("#offer")).to_contain_text(ticket_id)
    expect(page.locator("body")).to_have_attribute("data-rings", "1")
    assert follower.locator("body").get_attribute("data-rings") is None  # only the leader rings

    page.close()  # the leader goes while the offer rings
    expect(follower.locator("#tab-role")).to_have_text(LEADER)
    expect(follower.locator("body")).to_have_attribute("data-connects", "1")
    expect(follower.locator("#offer")).to_contain_text(ticket_id)  # offered again to the new leader
    expect(follower.locator("body")).to_have_attribute("data-rings", "1")
    follower.keyboard.press("Alt+A")
    expect(follower.locator("#current")).to_be_visible()
    stored = live.call(live.running.queue.get(ticket_id))
    assert (stored.status, stored.agent) == ("claimed", "a1")
    follower.close()
