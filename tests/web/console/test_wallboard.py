"""The supervisors' wallboard in a real Chromium against a real gateway and Redis: a supervisor
logs in and sees the queues; intakes, a websocket seat's accept and submit, and its state changes
reach the wall (values asserted); an agent's credentials and session cannot open it; two
supervisors get the same frames from one computation; the counters survive a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.config import hash_secret
from gateway.messages import Alerted, SurgeWarning
from gateway.ticket import DeadlineClock, SensitiveAlert, utcnow
from gateway.triage.escalate import Escalator
from peers.gateway_config import AGENT_TOKENS
from tests.helpers import Seat, queued_ticket
from tests.web.console.support import GatewayThread, console_listen, log_in

SUPERVISOR_TOKEN = "token-s1-" + "q" * 24
SUPERVISORS = [{"id": "s1", "name": "赵班长", "token_hash": hash_secret(SUPERVISOR_TOKEN)}]
CONTACT = {"citizen": {"phone": "13812345678", "name": "陈先生"}, "text": "幸福路路灯不亮"}


@pytest.fixture
def wall_config(config_factory: Any) -> Any:
    return config_factory(**console_listen(), supervisors=SUPERVISORS)


@pytest.fixture
def wall(wall_config: Any) -> Iterator[GatewayThread]:
    """A gateway with a supervisor; requested before `page`, so the page closes first."""
    with GatewayThread(wall_config) as gateway:
        yield gateway


def open_wall(page: Page, live: GatewayThread, supervisor: str = "s1", token: str = SUPERVISOR_TOKEN) -> None:
    page.goto(f"{live.http}/console/wallboard.html")
    page.get_by_label("班长工号").fill(supervisor)
    page.get_by_label("令牌").fill(token)
    page.get_by_role("button", name="登录").click()


def cell(page: Page, queue: str, field: str) -> Any:
    return page.locator(f'#queues tr[data-queue="{queue}"] td[data-field="{field}"]')


def agent_state(page: Page, agent: str) -> Any:
    return page.locator(f'#agents tr[data-agent="{agent}"] td[data-field="state"]')


def test_the_wall_follows_intakes_a_seats_accept_and_submit_and_its_states(wall: GatewayThread, page: Page) -> None:
    open_wall(page, wall)
    expect(page.locator("#connection")).to_have_text("已连接")
    for queue in ("general", "housing", "enterprise"):
        expect(cell(page, queue, "waiting")).to_have_text("0")
    expect(page.locator('#queues tr[data-queue="general"] th')).to_have_text("综合受理")
    expect(cell(page, "general", "service_level")).to_have_text("—")
    expect(agent_state(page, "a1")).to_have_text("离线")

    first, second = wall.intake(CONTACT), wall.intake({**CONTACT, "text": "第二件"})
    expect(cell(page, "general", "waiting")).to_have_text("2")
    expect(cell(page, "general", "oldest")).not_to_have_text("—")
    expect(page.locator('#intake-legend li[data-channel="web"]')).to_have_text("网页 2")
    expect(page.locator("#intake-chart rect[data-channel='web']")).to_have_count(1)  # both in this hour

    assert wall.bound is not None
    seat = wall.call(Seat.connect(wall.bound, "a1", state="away"))
    try:
        expect(agent_state(page, "a1")).to_have_text("离开")
        wall.call(seat.send(type="state", state="ready"))
        offer = wall.call(seat.expect("offer"))
        assert offer["ticket"]["id"] == first
        expect(agent_state(page, "a1")).to_have_text("示闲")
        wall.call(seat.send(type="accept", ticket=first))
        wall.call(seat.expect("ticket"))
        expect(cell(page, "general", "waiting")).to_have_text("1")  # the second still waits
        expect(cell(page, "general", "with_agents")).to_have_text("1")
        expect(cell(page, "general", "service_level")).to_have_text("100%")  # answered within 20 s
        expect(cell(page, "general", "handled")).to_have_text("0")
        wall.call(seat.send(type="submit", ticket=first, fields={"notes": "已派单"}))
        expect(cell(page, "general", "handled")).to_have_text("1")
        wall.call(seat.send(type="state", state="busy"))
        expect(agent_state(page, "a1")).to_have_text("示忙")
    finally:
        wall.call(seat.close())
    expect(agent_state(page, "a1")).to_have_text("离线")  # the seat left: off the wall
    assert second != first
    stats = wall.call(wall.running.queue.stats())["general"]
    assert (stats.answered, stats.in_service_level, stats.submitted) == (1, 1, 1)


def test_an_agents_token_or_session_cannot_open_the_wallboard(wall: GatewayThread, page: Page) -> None:
    open_wall(page, wall, supervisor="a1", token=AGENT_TOKENS["a1"])
    expect(page.locator("#login-error")).to_have_text("班长工号或令牌不正确，请重新输入")
    expect(page.locator("#wall-view")).to_be_hidden()

    log_in(page, wall)  # a real agent session, on the seat page
    expect(page.locator("#connection")).to_have_text("已连接")
    page.goto(f"{wall.http}/console/wallboard.html")
    expect(page.locator("#login-error")).to_have_text("此账号不是班长账号，请用班长工号登录")
    refused = page.evaluate(
        """() => new Promise((resolve) => {
            const socket = new WebSocket(`ws://${location.host}/console/ws/wallboard`);
            socket.onmessage = () => resolve("frame");
            socket.onclose = () => resolve("closed");
        })"""
    )
    assert refused == "closed"
    assert wall.running.wallboard.frames == 0  # nothing was computed for the agent


def test_a_wall_whose_session_ended_closes_and_asks_for_a_login(wall: GatewayThread, page: Page) -> None:
    board = wall.running.wallboard
    board.session_check = 0.2  # checked every 0.2 s here (30 s in service)
    open_wall(page, wall)
    expect(page.locator("#connection")).to_have_text("已连接")
    redis, keys = wall.running.redis, wall.running.queue.keys
    sessions = wall.call(redis.keys(keys.console_session("*")))
    assert len(sessions) == 1
    wall.call(redis.delete(*sessions))  # expired, or logged out from another tab
    expect(page.locator("#login-error")).to_have_text("登录已过期，请重新登录")
    expect(page.locator("#wall-view")).to_be_hidden()


def test_two_supervisors_get_the_same_frames_from_one_computation(wall: GatewayThread, browser: Browser) -> None:
    contexts = [browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN") for _ in range(2)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            open_wall(page, wall)
            expect(page.locator("#connection")).to_have_text("已连接")
        board = wall.running.wallboard
        for expected in ("1", "2"):
            wall.intake(CONTACT)
            for page in pages:  # the board once both counters moved (intake is counted a moment later)
                expect(cell(page, "general", "waiting")).to_have_text(expected)
                expect(page.locator('#intake-legend li[data-channel="web"]')).to_have_text(f"网页 {expected}")
            seqs = {page.locator("body").get_attribute("data-seq") for page in pages}
            assert len(seqs) == 1, seqs  # the same frame: one computation's number
        # Each tick computes once for both (twice would be one per supervisor).
        assert 0 < board.computations <= board.ticks
        assert int(seqs.pop() or 0) <= board.computations
    finally:
        for context in contexts:
            context.close()


def test_the_days_counters_survive_a_gateway_restart(wall_config: Any, page: Page) -> None:
    with GatewayThread(wall_config) as first:
        first.intake(CONTACT)
        first.intake(CONTACT)
        open_wall(page, first)
        expect(page.locator('#intake-legend li[data-channel="web"]')).to_have_text("网页 2")
        page.close()
    with GatewayThread(wall_config) as again:
        page = page.context.new_page()
        page.goto(f"{again.http}/console/wallboard.html")  # the login (in Redis) outlived the restart too
        expect(cell(page, "general", "waiting")).to_have_text("2")
        expect(page.locator('#intake-legend li[data-channel="web"]')).to_have_text("网页 2")  # counted once
        page.close()


def test_a_seat_on_another_process_and_both_processes_config_versions_reach_the_wall(
    wall: GatewayThread, config_factory: Any, page: Page
) -> None:
    with GatewayThread(config_factory(**console_listen(), supervisors=SUPERVISORS)) as other:
        assert other.bound is not None
        seat = other.call(Seat.connect(other.bound, "a2", state="busy"))  # its websocket reached the other process
        try:
            open_wall(page, wall)
            expect(agent_state(page, "a2")).to_have_text("示忙")
            expect(page.locator("#processes tbody tr")).to_have_count(2)
            expect(page.locator("#processes tbody td")).to_have_text(["v1", "v1"])
            other.intake(CONTACT)  # counted once, by whichever process's reader took it
            expect(page.locator('#intake-legend li[data-channel="web"]')).to_have_text("网页 1")
            expect(cell(page, "general", "waiting")).to_have_text("1")
        finally:
            other.call(seat.close())
        expect(agent_state(page, "a2")).to_have_text("离线")
    expect(page.locator("#processes tbody tr")).to_have_count(1)  # a stopped process leaves the wall


def test_sensitive_word_alerts_reach_the_wall_newest_first(wall: GatewayThread, page: Page) -> None:
    open_wall(page, wall)
    expect(page.locator("#connection")).to_have_text("已连接")
    rows = page.locator("#alerts tbody tr")
    expect(rows).to_have_count(0)
    queue = wall.running.queue
    now = utcnow()
    for ticket, severity, word, context in (
        ("01ALERTFIRST", 2, "砸了", "再不解决我就把物业办公室砸了"),
        ("01ALERTSECOND", 3, "跳楼", "工资不给我就去跳楼"),
    ):
        found = SensitiveAlert(word=word, category="violence" if severity == 2 else "self_harm", severity=severity,
                               context=context, at=now)  # fmt: skip
        news = Alerted(ticket, "general", 9, (found,)).serialize()
        wall.call(queue.redis.xadd(queue.keys.alerts, {"m": news}))
    wall.call(queue.redis.xadd(queue.keys.alerts, {"m": b"not an alert"}))  # logged, not shown
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-ticket", "01ALERTSECOND")
    expect(rows.nth(0)).to_contain_text("3级")
    expect(rows.nth(0)).to_contain_text("自伤自杀")
    expect(rows.nth(1)).to_contain_text("再不解决我就把物业办公室砸了")


def test_red_and_yellow_tickets_reach_the_wall_and_leave_it_when_closed(wall: GatewayThread, page: Page) -> None:
    queue = wall.running.queue
    now = utcnow()
    received = now - timedelta(hours=3)
    clocks = {  # received 3 h ago: overdue; an eighth of 24 h used; 9/10 of 3 h 20 min used
        "red": DeadlineClock(name="resolve", limit="2h", due=now - timedelta(hours=1)),
        "green": DeadlineClock(name="resolve", limit="24h", due=now + timedelta(hours=21)),
        "yellow": DeadlineClock(name="resolve", limit="24h", due=received + timedelta(hours=3, minutes=20)),
    }
    ids = {}
    for colour, clock in clocks.items():
        ticket = queued_ticket(f"late-{colour}", text="路灯不亮", clocks=(clock,), received_at=received)
        ids[colour] = wall.call(queue.intake(ticket, "test")).ticket_id
        yellow_at = received + (clock.due - received) * 0.8
        wall.call(queue.redis.zadd(queue.keys.clocks, {ids[colour]: int(yellow_at.timestamp() * 1000)}))
    open_wall(page, wall)
    rows = page.locator("#late tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-ticket", ids["red"])
    expect(rows.nth(0)).to_contain_text("已超时")
    expect(rows.nth(1)).to_have_attribute("data-colour", "yellow")
    wall.call(queue.abandon(ids["red"], "caller_hung_up"))  # closed: off the list
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_have_attribute("data-ticket", ids["yellow"])


def test_surge_warnings_reach_the_wall(wall: GatewayThread, page: Page) -> None:
    queue = wall.running.queue
    warning = SurgeWarning("municipal_facility", "芝罘区/南大街", 7, 0.5, utcnow().isoformat())
    wall.call(queue.redis.xadd(queue.keys.surges, {"m": warning.serialize()}))
    open_wall(page, wall)
    rows = page.locator("#surges tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("芝罘区 南大街")
    expect(rows.nth(0)).to_contain_text("municipal_facility")
    expect(rows.nth(0).locator("td.number").first).to_have_text("7")


def test_escalations_reach_the_wall_as_the_loop_sends_them(wall: GatewayThread, page: Page) -> None:
    cst = timezone(timedelta(hours=8))
    queue = wall.running.queue
    received = datetime(2026, 3, 10, 10, 0, tzinfo=cst)  # Tuesday; 3 working days: Friday's close
    clock = DeadlineClock(name="resolve", limit="3wd", due=datetime(2026, 3, 13, 17, 30, tzinfo=cst))
    ticket = queued_ticket("late-escalated", text="社保断缴了怎么补缴", clocks=(clock,), received_at=received)
    ticket_id = wall.call(queue.intake(ticket, "test")).ticket_id
    wall.call(queue.redis.zadd(queue.keys.escalate, {ticket_id: int(received.timestamp() * 1000)}))
    open_wall(page, wall)
    expect(page.locator("#connection")).to_have_text("已连接")
    rows = page.locator("#escalations tbody tr")
    expect(rows).to_have_count(0)
    loop = Escalator(queue.live, queue)
    assert wall.call(loop.escalate_due(datetime(2026, 3, 16, 8, 30, tzinfo=cst))) == 1  # Monday's opening
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_have_attribute("data-ticket", ticket_id)
    expect(rows.nth(0)).to_contain_text("办结时限")
    expect(rows.nth(0)).to_contain_text("督办提醒")
    assert wall.call(loop.escalate_due(datetime(2026, 3, 23, 8, 30, tzinfo=cst))) == 1  # five working days on
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-kind", "report")
    expect(rows.nth(0)).to_contain_text("督办通报")
    expect(rows.nth(1)).to_have_attribute("data-kind", "reminder")
