"""The terminal seat (issue #16) against a real gateway: in-process, as a child process, and in an
interactive shell on a pseudo-terminal, the way the README tour runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from gateway.clients.seat import HELP, NO_COMMANDS, SeatClient, Terminal
from gateway.config import GatewayConfig
from gateway.shell.app import Bound
from gateway.ticket import Citizen, TranscriptSegment
from gateway.voice.link import VoiceLink
from peers.gateway_config import AGENT_TOKENS, make_raw_config
from tests.conftest import ConfigFactory
from tests.helpers import post_intake, queued_ticket, running_gateway, voice_ticket

ROOT = Path(__file__).resolve().parents[2]
SEAT = [sys.executable, "-m", "gateway.cli", "seat"]


def seat_url(bound: Bound) -> str:
    return f"ws://{bound.seats[0]}:{bound.seats[1]}"


class Lines(Terminal):
    """The client's terminal, recorded: what it printed, awaitable line by line."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.seen: list[str] = []

    def say(self, text: str) -> None:
        self.lines.put_nowait(text)

    fail = say

    async def until(self, fragment: str, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                self.seen.append(line)
                if fragment in line:
                    return line


def agents_with_phones() -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = make_raw_config("unused", "redis://unused")["agents"]
    return [{**agent, "sip_uri": f"sip:{agent['id']}@127.0.0.1:5999"} for agent in agents]


async def test_the_client_follows_every_frame_of_a_voice_ticket(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(
        seats={"listen": "127.0.0.1:0", "offer_timeout": 3}, agents=agents_with_phones()
    )
    async with running_gateway(config) as (gateway, bound):
        terminal = Lines()
        client = SeatClient(await connect(seat_url(bound)), terminal, interactive=lambda: True)
        commands: asyncio.Queue[str | None] = asyncio.Queue()
        stop = asyncio.Event()
        running = asyncio.create_task(client.run("a1", AGENT_TOKENS["a1"], commands.get, stop))
        await terminal.until("已登录")
        await terminal.until("状态: ready")
        call = voice_ticket("call-1")
        await gateway.queue.intake(call, "worker:w1")
        await terminal.until("新工单")
        assert client.view.offered == call.id
        commands.put_nowait("a")
        await terminal.until(f"已接单 {call.id}")
        assert client.view.claimed == (call.id,) and client.view.offered is None

        # What the media worker tells the seat's gateway, as it tells it (gateway/voice/link.py).
        voice = VoiceLink(gateway.queue)
        await voice.tell_seat("screen_pop", "a1", call.id)
        await terminal.until("来电振铃")
        assert client.view.calls == (call.id,)
        segment = TranscriptSegment(text="我家门口路灯坏了", start=0, end=1.5, confidence=0.9)
        await voice.publish_transcript(call.id, segment)
        await terminal.until("我家门口路灯坏了")
        await voice.tell_seat("call_ended", "a1", call.id, "worker_died")
        await terminal.until("通话已结束")
        assert client.view.calls == () and client.view.claimed == (call.id,)
        await voice.tell_seat("revoke", "a1", call.id, "caller_hung_up")
        await terminal.until("已收回")
        assert client.view.claimed == ()
        commands.put_nowait("s")  # before: a submit of the revoked ticket, answered `conflict`
        await terminal.until("没有可提交的工单")

        # An offer not taken in time: revoked, and the server sets the seat away.
        _, body = await post_intake(bound, {"text": "无人接听的工单"})
        await terminal.until("新工单")
        assert client.view.offered == body["ticket_id"]
        await terminal.until("邀请已撤回")
        await terminal.until("状态: away")
        assert client.view.offered is None and client.view.state == "away"
        stop.set()
        assert await running == 0
        assert not [line for line in terminal.seen if line.startswith(("[错误]", "ignored"))]


async def seat_process(bound: Bound, *args: str, token: str = AGENT_TOKENS["a1"]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SEAT, "--url", seat_url(bound), "--agent", "a1", "--token", token, *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip


async def read_until(stream: asyncio.StreamReader, fragment: str, timeout: float = 15.0) -> str:
    text = ""
    async with asyncio.timeout(timeout):
        while fragment not in text:
            chunk = await stream.read(4096)
            if not chunk:
                raise AssertionError(f"output ended before {fragment!r}: {text!r}")
            text += chunk.decode(errors="replace")
    return text


async def test_a_seat_without_a_terminal_shows_offers_safely_and_runs_until_told(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(seats={"listen": "127.0.0.1:0", "offer_timeout": 30})
    async with running_gateway(config) as (gateway, bound):
        seat = await seat_process(bound)  # stdin is /dev/null: before, it exited at once, silently
        assert seat.stdout is not None and seat.stderr is not None
        out = await read_until(seat.stdout, "--auto")
        assert NO_COMMANDS in out
        # Queued as stored, whatever a channel's intake cleans: the seat must not trust its input.
        hostile = queued_ticket(
            "wx-escapes",
            channel="wechat",
            citizen=Citizen(name="陈\x1b[8m先生"),
            text="清屏\x1b[2J\x1b]0;pwned\x07\x1b[31m$ sudo rm\x1b[0m\r\u202egnp.exe",
        )
        await gateway.queue.intake(hostile, "client:test")
        out = await read_until(seat.stdout, NO_COMMANDS)
        assert hostile.id in out
        assert "诉求: 清屏\\x1b[2J\\x1b]0;pwned\\x07\\x1b[31m$ sudo rm\\x1b[0m\\x0d\\u202egnp.exe" in out
        assert "来电/来信人: 陈\\x1b[8m先生" in out
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", out)
        assert seat.returncode is None  # still running, the offer on screen
        seat.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(seat.wait(), 10) == 0


async def test_a_bad_login_always_says_why_and_fails(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        seats = [await seat_process(bound, token="wrong-token") for _ in range(6)]
        results = await asyncio.gather(*(seat.communicate() for seat in seats))
        for seat, (_, err) in zip(seats, results, strict=True):
            assert seat.returncode == 1
            assert "login failed: authentication failed (close 4001)" in err.decode()
    unreachable = await seat_process(bound)
    _, err = await unreachable.communicate()
    assert unreachable.returncode == 1 and "cannot connect" in err.decode()


class Shell:
    """An interactive bash on a pseudo-terminal, with job control, as a person would use it."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        env = {**os.environ, "PS1": "$ ", "TERM": "dumb", "PY": sys.executable}
        # setsid -c: bash leads a new session whose controlling terminal is the pty.
        self.process = subprocess.Popen(
            ["setsid", "-w", "-c", "bash", "--norc", "--noprofile", "--noediting", "-i"],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
        )  # fmt: skip
        os.close(slave)
        self.output = ""
        self._read_to = 0
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.master, self._on_output)

    def _on_output(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process on the terminal has gone
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.output += data.decode(errors="replace")
        self._changed.set()

    def type(self, line: str) -> None:
        os.write(self.master, line.encode())

    async def expect(self, fragment: str, timeout: float = 15.0) -> str:
        """Output from where the last expect stopped up to and including `fragment`."""
        try:
            async with asyncio.timeout(timeout):
                while (found := self.output.find(fragment, self._read_to)) < 0:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {fragment!r} in {self.output[self._read_to :]!r}") from None
        start, self._read_to = self._read_to, found + len(fragment)
        return self.output[start : self._read_to]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        os.close(self.master)


@asynccontextmanager
async def shell() -> AsyncIterator[Shell]:
    sh = Shell()
    try:
        await sh.expect("$ ")
        yield sh
    finally:
        sh.close()


def seat_line(bound: Bound, token: str = AGENT_TOKENS["a1"]) -> str:
    return f'"$PY" -m gateway.cli seat --url {seat_url(bound)} --agent a1 --token {token}'


async def test_the_tour_seat_in_the_background_shows_offers_and_fg_answers_them(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(seats={"listen": "127.0.0.1:0", "offer_timeout": 30})
    async with running_gateway(config) as (_, bound), shell() as sh:
        sh.type(seat_line(bound) + " &\n")  # as the README tour has it
        await sh.expect("已登录")
        await sh.expect(NO_COMMANDS)  # before: `Stopped (tty input)` and nothing more
        _, body = await post_intake(bound, {"text": "后台坐席收到的工单"})
        offer = await sh.expect(NO_COMMANDS)
        assert body["ticket_id"] in offer and "后台坐席收到的工单" in offer and "Stopped" not in offer
        sh.type("fg\n")
        await sh.expect(HELP)  # in the foreground now: it reads commands
        sh.type("a\n")
        await sh.expect(f"已接单 {body['ticket_id']}")
        sh.type("s\n")
        await sh.expect(f"已提交 {body['ticket_id']}")
        sh.type("\x03")  # Ctrl-C
        await sh.expect("坐席已退出")
        sh.type("echo status=$?\n")
        await sh.expect("status=0")


async def test_q_quits_at_once_and_the_next_line_reaches_the_shell(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound), shell() as sh:
        sh.type(seat_line(bound) + "\n")
        await sh.expect(HELP)
        sh.type("q\n")
        await sh.expect("$ ")  # before: the seat waited for one more line, and swallowed it
        sh.type("echo after-q-$((40+2)) status=$?\n")
        await sh.expect("after-q-42 status=0")


async def test_a_bad_login_in_a_terminal_says_why(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound), shell() as sh:
        sh.type(seat_line(bound, token="wrong") + "; echo status=$?\n")
        said = await sh.expect("status=1")
        assert "login failed: authentication failed (close 4001)" in said
