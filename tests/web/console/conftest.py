"""Playwright (pytest-playwright, synchronous) driving Debian's chromium: never a downloaded
browser. A missing chromium fails the tests (CI installs it: .ci/run).

pytest-playwright keeps one Playwright for the whole session, and its synchronous API holds an
event loop running in the main thread while it lives: every asyncio test after it would fail
("cannot be called from a running event loop"). Here Playwright and the browser live for this
package only, so the suite's asyncio tests run before or after it as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserType, Playwright, expect, sync_playwright

from tests.web.console.support import CHROMIUM, CHROMIUM_ARGS, GatewayThread, console_listen

expect.set_options(timeout=10_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-wqy-microhei (.ci/run does)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright) -> BrowserType:
    return playwright.chromium


@pytest.fixture(scope="package")
def launch_browser(browser_type_launch_args: dict[str, Any], browser_type: BrowserType) -> Callable[..., Browser]:
    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def browser_context_args() -> dict[str, Any]:
    # The agents' screens: 1366x768, Chinese. (Not the plugin's: it asks its session Playwright.)
    return {"viewport": {"width": 1366, "height": 768}, "locale": "zh-CN"}


@pytest.fixture
def live(config_factory: Any) -> Iterator[GatewayThread]:
    """A real gateway (real Redis); tests request it before `page`, so the page closes first."""
    with GatewayThread(config_factory(**console_listen())) as gateway:
        yield gateway
