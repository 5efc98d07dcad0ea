"""The console's login in a real Chromium: a wrong token, a login, an expired session, CSRF attempts
and a seat websocket opened from another origin (gateway/web/console.py, the seats' hook)."""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Cookie, Page, expect

from gateway.web.console import COOKIE, digest
from peers.gateway_config import AGENT_TOKENS
from tests.redis_typed import texts
from tests.web.console.support import GatewayThread, foreign_site, log_in, site_url


def session_cookie(context: BrowserContext) -> Cookie | None:
    return next((cookie for cookie in context.cookies() if cookie.get("name") == COOKIE), None)


def console_keys(live: GatewayThread, kind: str) -> list[str]:
    keys = live.running.queue.keys
    prefix = keys.console_session("") if kind == "session" else keys.console_ticket("")
    return texts(live.call(live.running.redis.keys(prefix + "*")))


def test_a_wrong_token_is_told_in_chinese_and_sets_no_cookie(live: GatewayThread, page: Page) -> None:
    log_in(page, live, token="not-the-token")
    expect(page.locator("#login-error")).to_have_text("工号或令牌不正确，请重新输入")
    expect(page.locator("#seat-view")).to_be_hidden()
    assert session_cookie(page.context) is None
    assert console_keys(live, "session") == []
    assert page.get_by_label("令牌").input_value() == ""  # the token is not kept in the form either


def test_a_login_opens_the_seat_page_with_a_strict_cookie_and_no_token_anywhere(
    live: GatewayThread, page: Page
) -> None:
    log_in(page, live)
    expect(page.locator("#agent-name")).to_have_text("张敏（a1）")
    expect(page.locator("#connection")).to_have_text("已连接")
    expect(page.locator("#state-label")).to_have_text("离开")
    cookie = session_cookie(page.context)
    assert cookie is not None
    assert (cookie.get("httpOnly"), cookie.get("sameSite"), cookie.get("path")) == (True, "Strict", "/console")
    assert cookie.get("expires", -1) > 0  # Max-Age: it expires
    # The session is in Redis under the cookie's digest, not the cookie itself.
    assert console_keys(live, "session") == [live.running.queue.keys.console_session(digest(cookie.get("value", "")))]
    token = AGENT_TOKENS["a1"]
    stored = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])")
    assert token not in stored and token not in page.url and "csrf" not in stored
    # The strict policy came with the page.
    response = page.request.get(f"{live.http}/console/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe-inline" not in policy
    assert re.search(r"connect-src 'self' ws://127\.0\.0\.1:\d+;", policy)
    # The states are there and switch.
    page.keyboard.press("Alt+R")
    expect(page.locator("#state-label")).to_have_text("示闲")
    expect(page.get_by_role("button", name="示闲")).to_have_attribute("aria-pressed", "true")


def test_an_expired_session_goes_back_to_the_login(live: GatewayThread, page: Page) -> None:
    log_in(page, live)
    expect(page.locator("#connection")).to_have_text("已连接")
    (key,) = console_keys(live, "session")
    assert live.call(live.running.redis.pexpire(key, 0))  # what session_ttl does, now (0 expires at once)
    page.reload()
    expect(page.locator("#login-error")).to_have_text("登录已过期，请重新登录")
    expect(page.locator("#seat-view")).to_be_hidden()
    answer = page.request.post(
        f"{live.http}/console/api/seat-ticket", headers={"Origin": live.http, "X-CSRF-Token": "x"}
    )
    assert answer.status == 401 and answer.json()["error"]["code"] == "session_expired"


def test_csrf_attempts_are_refused_and_change_nothing(live: GatewayThread, page: Page) -> None:
    log_in(page, live)
    expect(page.locator("#connection")).to_have_text("已连接")
    csrf = page.evaluate("() => fetch('/console/api/session').then((r) => r.json()).then((s) => s.csrf)")
    tickets_before = console_keys(live, "ticket")
    api = f"{live.http}/console/api"
    # The page's own origin without the header, and the header from a foreign origin.
    for headers in ({"Origin": live.http}, {"Origin": "http://evil.example", "X-CSRF-Token": csrf}, {}):
        for path in ("seat-ticket", "logout"):
            answer = page.request.post(f"{api}/{path}", headers=headers)
            assert answer.status == 403, (path, headers, answer.status)
            assert answer.json()["error"]["code"] == "forbidden"
    # A page of another origin (the same site: the cookie goes along) posts with the agent's cookie.
    site = live.call(foreign_site())
    try:
        other = page.context.new_page()
        other.goto(site_url(site))
        for path in ("seat-ticket", "logout"):
            other.evaluate(
                "(url) => fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'}).catch(() => null)",
                f"{api}/{path}",
            )
        other.close()
    finally:
        live.call(site.cleanup())
    # Nothing changed: the session lives on, no seat ticket was issued, the seat stayed connected.
    assert len(console_keys(live, "session")) == 1
    assert console_keys(live, "ticket") == tickets_before
    assert page.request.get(f"{api}/session").status == 200
    expect(page.locator("#connection")).to_have_text("已连接")


def test_a_seat_websocket_from_another_origin_is_refused(live: GatewayThread, page: Page) -> None:
    log_in(page, live)
    expect(page.locator("#connection")).to_have_text("已连接")
    session = page.request.get(f"{live.http}/console/api/session").json()
    answer = page.request.post(
        f"{live.http}/console/api/seat-ticket", headers={"Origin": live.http, "X-CSRF-Token": session["csrf"]}
    )
    ticket = answer.json()["ticket"]
    site = live.call(foreign_site())
    try:
        other = page.context.new_page()
        other.goto(site_url(site))
        closed = other.evaluate(
            """([url, ticket]) => new Promise((resolve) => {
                 const socket = new WebSocket(url);
                 socket.onopen = () => socket.send(JSON.stringify({type: "hello", agent: "a1", token: ticket}));
                 socket.onmessage = (event) => resolve({message: event.data});
                 socket.onclose = (event) => resolve({code: event.code});
               })""",
            [session["seats_url"], ticket],
        )
        other.close()
    finally:
        live.call(site.cleanup())
    assert closed == {"code": 4001}
    # The page of the console's own origin is still the agent's one seat.
    expect(page.locator("#connection")).to_have_text("已连接")
