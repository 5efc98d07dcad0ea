"""Console benchmark: an offer frame's arrival in the seat page to the ticket visible on screen; the
wallboard under load (bench/console/wall.py).

A real gateway (in this process, on its own loop: `tests/web/console/support.GatewayThread`) on an
embedded redis-server, and the seat page in Debian's chromium (headless, 1366x768) logged in as an
agent who is ready. The page is instrumented from outside (a script Chromium runs before the
page's own, the page unchanged): the time each `offer` frame reaches the page's websocket
(`performance.now()` in the first message listener), the first animation frame after the offer's
ticket card is in the document (the frame that paints it: "visible"), and, as the baseline in the
same run, the first animation frame after the frame's arrival (what the browser takes to reach a
paint with no work done). For each of N tickets: posted to the HTTP intake, offered, made visible,
accepted (Alt+A) and submitted (Alt+S), so the next one is offered to the same seat.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from bench import BenchError
from bench.common.stats import machine, summary_ms
from bench.console import wall
from bench.console.report import render as render
from gateway.config import parse_config
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from peers.gateway_config import make_raw_config
from tests.web.console.support import CHROMIUM, CHROMIUM_ARGS, GatewayThread, console_listen, log_in

NAME = "console"
TITLE = "Console: offer frame → ticket visible in the seat page"
TARGET_P99_MS = 100.0
WALL_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console-wallboard-load.png"
TARGET_BROWSER_SHARE = 0.05  # of a core, the wallboard's page under 100 events/s
# Run in the page before its own scripts: timestamps only, nothing the page reads.
INSTRUMENT = """
window.__bench = { arrived: {}, painted: {}, visible: {} };
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const at = performance.now();
      if (typeof event.data !== "string" || !event.data.startsWith('{"type":"offer"')) return;
      const id = JSON.parse(event.data).ticket.id;
      window.__bench.arrived[id] = at;
      requestAnimationFrame(() => { window.__bench.painted[id] ??= performance.now(); });
    });
  }
};
new MutationObserver(() => {
  const card = document.querySelector("#offer-ticket [data-ticket]");
  if (!card || card.closest("[hidden]")) return;
  const id = card.dataset.ticket;
  if (window.__bench.visible[id] === undefined) {
    window.__bench.visible[id] = -1;
    requestAnimationFrame(() => { window.__bench.visible[id] = performance.now(); });
  }
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


@dataclass(frozen=True)
class Options:
    offers: int = 200
    rate: int = 100  # wallboard: events per second
    seconds: float = 10.0  # wallboard: each measurement
    supervisors: tuple[int, ...] = (0, 1, 10, 50)
    screenshot: Path | None = None  # the wallboard under the load, taken at the end of its measure

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> Options:
        if args is None:
            return cls()
        # Published with the results: docs/console-wallboard-load.png, shown in the README.
        screenshot = None if getattr(args, "no_doc", False) else WALL_SCREENSHOT
        return cls(args.console_offers, args.wall_rate, args.wall_seconds, screenshot=screenshot)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("console")
    defaults = Options()
    group.add_argument("--console-offers", type=int, default=defaults.offers, help="tickets offered (%(default)s)")
    group.add_argument("--wall-rate", type=int, default=defaults.rate, help="wallboard events/s (%(default)s)")
    group.add_argument("--wall-seconds", type=float, default=defaults.seconds, help="per measurement (%(default)s)")


def progress(message: str) -> None:
    print(f"[console] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    options = Options.from_args(args)
    if options.offers < 1:
        raise BenchError("--console-offers must be at least 1")
    if not Path(CHROMIUM).exists():
        raise BenchError(f"{CHROMIUM} is missing: apt-get install chromium fonts-wqy-microhei")
    with tempfile.TemporaryDirectory(prefix="hg-bench-console-") as scratch, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            with redis_server(Path(scratch) / "seat") as url:
                config = parse_config(make_raw_config("bc", url, **console_listen()), Path(scratch))
                with GatewayThread(config) as live:
                    # bypass_csp: the page forbids eval, which waiting on its marks needs (the page is unchanged).
                    page = browser.new_page(viewport={"width": 1366, "height": 768}, locale="zh-CN", bypass_csp=True)
                    marks = offers(page, live, options.offers)
                    page.close()
            with redis_server(Path(scratch) / "wall") as url:
                config = wall.wall_config(url, Path(scratch))
                with GatewayThread(config) as live:
                    progress(f"wallboard: {wall.AGENTS} agents, {wall.QUEUES} queues, {options.rate} events/s")
                    walls = wall.measure(
                        live, config, browser, options.rate, options.seconds, options.supervisors, options.screenshot
                    )
        finally:
            browser.close()
    visible = [round((marks["visible"][i] - marks["arrived"][i]) * 1e6) for i in marks["arrived"]]
    painted = [round((marks["painted"][i] - marks["arrived"][i]) * 1e6) for i in marks["arrived"]]
    summary = summary_ms(visible)
    baseline = summary_ms(painted)
    progress(f"offer → visible p99 {summary['p99']} ms (next paint alone: p99 {baseline['p99']} ms)")
    idle = walls["0"]["gateway_cpu_share"]
    per_supervisor = {
        count: round((walls[count]["gateway_cpu_share"] - idle) / int(count), 5)
        for count in walls
        if count not in {"0", "browser"}
    }
    progress(f"wallboard: browser {walls['browser']['cpu_share']:.1%} of a core; per supervisor {per_supervisor}")
    return {
        "bench": NAME,
        **machine(),
        "offers": len(visible),
        "visible_ms": summary,
        "next_paint_ms": baseline,
        "ratio_p50": round(summary["p50"] / baseline["p50"], 2) if baseline["p50"] else None,
        "wall": {
            "agents": wall.AGENTS,
            "queues": wall.QUEUES,
            "rate": options.rate,
            "seconds": options.seconds,
            "runs": walls,
            "per_supervisor_cpu_share": per_supervisor,
        },
        "targets": {
            "visible_p99_ms": {"target": TARGET_P99_MS, "met": summary["p99"] <= TARGET_P99_MS},
            "browser_cpu_share": {
                "target": TARGET_BROWSER_SHARE,
                "met": walls["browser"]["cpu_share"] < TARGET_BROWSER_SHARE,
            },
        },
        "ok": True,
    }


@contextlib.contextmanager
def redis_server(data_dir: Path) -> Iterator[str]:
    server = EmbeddedRedis(port=free_port(), data_dir=data_dir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def offers(page: Page, live: GatewayThread, count: int) -> dict[str, dict[str, float]]:
    """Offer `count` tickets one after another to the logged-in, ready seat; the page's marks (ms)."""
    page.add_init_script(INSTRUMENT)
    log_in(page, live)
    page.wait_for_function("document.querySelector('#connection')?.textContent === '已连接'")
    page.get_by_role("button", name="示闲").click()
    page.wait_for_function("document.querySelector('#state-label')?.textContent === '示闲'")
    for n in range(count):
        ticket = live.intake({"text": f"第{n}号：小区路灯不亮，已经好几天了", "citizen": {"phone": "13812345678"}})
        try:
            page.wait_for_function("id => window.__bench.visible[id] > 0 && window.__bench.painted[id]", arg=ticket)
        except PlaywrightTimeout:
            raise BenchError(f"ticket {ticket} was never shown; marks: {page.evaluate('window.__bench')}") from None
        page.keyboard.press("Alt+A")
        page.wait_for_function(
            "id => document.querySelector(`#current:not([hidden]) [data-ticket='${id}']`)", arg=ticket
        )
        page.keyboard.press("Alt+S")
        page.wait_for_function(
            "id => !document.querySelector(`#current:not([hidden]) [data-ticket='${id}']`)", arg=ticket
        )
        if (n + 1) % 50 == 0:
            progress(f"{n + 1} offers")
    marks: dict[str, dict[str, float]] = page.evaluate("window.__bench")
    return marks
