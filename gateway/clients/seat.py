"""`hotline-gateway seat`: a terminal agent seat speaking the seat protocol v1.

Functional core, imperative shell: `on_frame` and `on_command` decide, from a frozen `SeatView` of
what the seat holds, a `Step` (the view after, lines to print, frames to send); `SeatClient` only
does the I/O. It follows every server frame of docs/seat-protocol.md, so what it thinks it holds is
what the server says it holds (a revoked voice ticket is gone; `s` does not try to submit it). It
reads them with the server's own frame types (`seat_protocol.parse_server_frame`): a frame missing
what it must hold is reported and skipped, a type it does not know is shown as such.

Every line goes through `terminal_safe` on its way out: tickets carry citizens' text, and an escape
sequence in it must not clear the agent's screen or draw a fake prompt.

Interactive when stdin is a terminal and the seat is its foreground job: it reads commands
(`a` accept, `d` decline, `s` submit, `r TEXT` reply to the citizen, `ready`/`away`, `q` quit).
Otherwise (stdin redirected, or started with `&`) it reads nothing, prints offers and how to act on
them, and runs until SIGINT/SIGTERM; `fg` makes a background seat interactive. With --auto it
accepts and submits every offer itself (the README tour and smoke tests use that).
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from gateway.errors import InvalidRequest
from gateway.web import seat_protocol as proto
from gateway.web.seat_protocol import escape_controls, excerpt

STATES = ("ready", "away", "busy", "wrap_up")
HELP = "命令: a 接受  d 拒绝  s 提交  s 答复 提交并答复市民(回访)  r 文字 回复市民  ready/away/busy/wrap_up  q 退出"
NO_COMMANDS = (
    "本坐席不读取命令 (标准输入不是终端, 或在后台运行): 用 fg 切到前台后输入命令, "
    "或以 --auto 启动自动接单提交; Ctrl-C 或 kill 退出"
)

# Why the gateway closed a connection, for close frames that come without a reason.
_CLOSES = {
    1000: "closed",
    1001: "the gateway is shutting down",
    1009: "a frame was too large",
    1011: "internal error on the gateway",
    1013: "too many seats connected; try again later",
    4001: "authentication failed",
    4002: "authentication timeout",
    4003: "unsupported protocol version",
    4008: "replaced by a newer login of this agent",
    4009: "too slow: the seat did not read what the gateway sent",
}


def terminal_safe(text: str) -> str:
    """Text as it may be printed on a terminal: control characters (C0 but the newline, DEL, C1,
    hence every escape sequence), bidi controls and other invisible format characters escaped."""
    return escape_controls(text, keep="\n")


def _indented(text: str) -> str:
    """A peer's multi-line text, its later lines indented, so it cannot pass for our own lines."""
    return text.replace("\n", "\n      ")


def describe(ticket: dict[str, Any]) -> str:
    citizen = ticket.get("citizen") or {}
    who = citizen.get("name") or citizen.get("phone") or citizen.get("wechat_openid") or "匿名"
    reopened = "\n  重办: 市民对上次答复不满意 (见工单历史)" if "reopened" in (ticket.get("flags") or ()) else ""
    return (
        f"工单 {ticket['id']}  渠道 {ticket.get('channel', '?')}  队列 {ticket.get('queue', '?')}  "
        f"优先级 {ticket.get('priority', 0)}\n"
        f"  来电/来信人: {_indented(str(who))}\n  诉求: {_indented(str(ticket.get('text', '')))}{reopened}"
    )


@dataclass(frozen=True, slots=True)
class Mode:
    auto: bool = False
    interactive: bool = True  # reads commands now (stdin is its terminal and it is in the foreground)
    limit: int = 0  # stop after this many submitted tickets (0: never)


@dataclass(frozen=True, slots=True)
class SeatView:
    """What the seat holds, as the server last told it."""

    logged_in: bool = False
    state: str = "away"
    offered: str | None = None
    claimed: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()  # claimed voice tickets whose phone rang (screen pop) and not ended
    submitted: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    view: SeatView
    say: tuple[str, ...] = ()
    send: tuple[dict[str, Any], ...] = ()
    stop: bool = False


def _without(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(x for x in items if x != item)


def _with(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return items if item in items else (*items, item)


def _dropped(view: SeatView, ticket_id: str) -> SeatView:
    """The view once a ticket is no longer this seat's in any way."""
    return replace(
        view,
        offered=None if view.offered == ticket_id else view.offered,
        claimed=_without(view.claimed, ticket_id),
        calls=_without(view.calls, ticket_id),
    )


def _claimed_hint(mode: Mode) -> tuple[str, ...]:
    if mode.auto:
        return ()
    return ("命令: s 提交  r 文字 回复市民",) if mode.interactive else (NO_COMMANDS,)


def _welcome(view: SeatView, frame: proto.Welcome, mode: Mode) -> Step:
    resumed = tuple(str(ticket["id"]) for ticket in frame.resumed)
    lines = [f"已登录: {frame.name or frame.agent}  队列: {', '.join(frame.queues)}"]
    if resumed:
        lines.append(f"继续处理: {', '.join(resumed)}")
    if not mode.auto and not mode.interactive:
        lines.append(NO_COMMANDS)
    send: list[dict[str, Any]] = [{"type": "state", "state": "ready"}]
    if mode.auto:
        send += [{"type": "submit", "ticket": ticket_id} for ticket_id in resumed]
    view = replace(view, logged_in=True, state=frame.state, claimed=resumed)
    return Step(view, tuple(lines), tuple(send))


def _offer(view: SeatView, frame: proto.Offer, mode: Mode) -> Step:
    ticket = frame.ticket
    lines = [f"\n新工单 (请在 {frame.expires_in:.0f} 秒内接受):\n{describe(ticket)}"]
    if not mode.auto:
        lines.append("命令: a 接受  d 拒绝" if mode.interactive else NO_COMMANDS)
    send = ({"type": "accept", "ticket": ticket["id"]},) if mode.auto else ()
    return Step(replace(view, offered=str(ticket["id"])), tuple(lines), send)


def _offer_revoked(view: SeatView, frame: proto.OfferRevoked, mode: Mode) -> Step:
    offered = None if view.offered == frame.ticket else view.offered
    return Step(replace(view, offered=offered), (f"工单 {frame.ticket} 的邀请已撤回 ({frame.reason})",))


def _state(view: SeatView, frame: proto.StateFrame, mode: Mode) -> Step:
    lines = [f"状态: {frame.state} ({frame.reason})"]
    if frame.state != "ready" and mode.interactive and not mode.auto:
        lines.append("输入 ready 恢复接单")
    return Step(replace(view, state=frame.state), tuple(lines))


def _ticket(view: SeatView, frame: proto.TicketFrame, mode: Mode) -> Step:
    ticket = frame.ticket
    ticket_id, status = str(ticket["id"]), ticket.get("status")
    if status != "claimed":
        return Step(_dropped(view, ticket_id), (f"工单 {ticket_id}: {status}",))
    if ticket_id in view.claimed:
        return Step(view, (f"工单 {ticket_id} 已更新",))
    offered = None if view.offered == ticket_id else view.offered
    view = replace(view, offered=offered, claimed=_with(view.claimed, ticket_id))
    send = ({"type": "submit", "ticket": ticket_id},) if mode.auto else ()
    return Step(view, (f"已接单 {ticket_id}", *_claimed_hint(mode)), send)


def _screen_pop(view: SeatView, frame: proto.ScreenPop, mode: Mode) -> Step:
    ticket_id = str(frame.ticket["id"])
    view = replace(view, claimed=_with(view.claimed, ticket_id), calls=_with(view.calls, ticket_id))
    return Step(view, (f"\n来电振铃, 请接听:\n{describe(frame.ticket)}",))


def _revoked(view: SeatView, frame: proto.Revoked, mode: Mode) -> Step:
    return Step(_dropped(view, frame.ticket), (f"工单 {frame.ticket} 已收回 ({frame.reason})",))


def _call_ended(view: SeatView, frame: proto.CallEnded, mode: Mode) -> Step:
    lines = (f"工单 {frame.ticket} 的通话已结束 ({frame.reason}); 工单仍由您处理", *_claimed_hint(mode))
    return Step(replace(view, calls=_without(view.calls, frame.ticket)), lines)


def _ack(view: SeatView, frame: proto.Ack, mode: Mode) -> Step:
    ticket_id = frame.ticket or ""
    if frame.status == "submitted":
        view = replace(_dropped(view, ticket_id), submitted=view.submitted + 1)
        return Step(view, (f"已提交 {ticket_id}",), stop=bool(mode.limit) and view.submitted >= mode.limit)
    if frame.status == "declined":
        return Step(_dropped(view, ticket_id), (f"已拒绝 {ticket_id}",))
    if frame.status == "claimed":
        return Step(view)  # the ticket frame follows
    if frame.state is not None:
        return Step(replace(view, state=frame.state), (f"状态: {frame.state}",))
    if frame.outbox is not None:
        return Step(view, (f"已回复市民 (工单 {ticket_id})",))
    return Step(view)


def _error(view: SeatView, frame: proto.ErrorFrame, mode: Mode) -> Step:
    lines = [f"[错误] {frame.code}: {frame.message}"]
    lines += [f"  {field.path}: {field.message}" for field in frame.fields]
    return Step(view, tuple(lines))


def _transcript(view: SeatView, frame: proto.Transcript, mode: Mode) -> Step:
    segment = frame.segment
    if not segment.final:
        return Step(view)  # partial results would flood the terminal; the final one follows
    speaker = "市民" if segment.speaker == "caller" else "坐席"
    return Step(view, (f"[{speaker} {frame.ticket}] {_indented(segment.text)}",))


def _message(view: SeatView, frame: proto.MessageFrame, mode: Mode) -> Step:
    return Step(view, (f"[市民 {frame.ticket}] {_indented(frame.message.text)}",))


_DELIVERY = {"queued": "待发送", "sent": "已发出", "delivered": "已送达", "failed": "发送失败"}


def _delivery(view: SeatView, frame: proto.Delivery, mode: Mode) -> Step:
    reason = f" ({frame.reason})" if frame.reason else ""
    return Step(view, (f"回复 {frame.reply} (工单 {frame.ticket}): {_DELIVERY[frame.status]}{reason}",))


def _pong(view: SeatView, frame: proto.Pong, mode: Mode) -> Step:
    return Step(view)


# Each handler takes its own frame type (the table is keyed by it).
_FRAMES: dict[type[proto.ServerFrame], Callable[[SeatView, Any, Mode], Step]] = {
    proto.Welcome: _welcome,
    proto.Offer: _offer,
    proto.OfferRevoked: _offer_revoked,
    proto.StateFrame: _state,
    proto.TicketFrame: _ticket,
    proto.ScreenPop: _screen_pop,
    proto.Revoked: _revoked,
    proto.CallEnded: _call_ended,
    proto.Ack: _ack,
    proto.ErrorFrame: _error,
    proto.Pong: _pong,
    proto.Transcript: _transcript,
    proto.MessageFrame: _message,
    proto.Delivery: _delivery,
}


def on_frame(view: SeatView, frame: proto.ServerFrame, mode: Mode) -> Step:
    """One server frame."""
    return _FRAMES[type(frame)](view, frame, mode)


def on_message(view: SeatView, message: str | bytes | dict[str, Any], mode: Mode) -> Step:
    """One message from the gateway: parsed as a server frame and followed. A type this client does
    not know is said and skipped; a frame missing what it must hold raises InvalidRequest."""
    data = message if isinstance(message, dict) else proto.decode(message)
    kind = data.get("type")
    if not (isinstance(kind, str) and kind in proto.SERVER_FRAMES):
        return Step(view, (f"[未知消息类型 {excerpt(str(kind))}]",))
    return on_frame(view, proto.parse_server_frame(data), mode)


def on_command(view: SeatView, line: str) -> Step:
    """One line typed by the agent."""
    command, _, rest = line.strip().partition(" ")
    if command == "q":
        return Step(view, stop=True)
    if not command:
        return Step(view)
    if command in ("a", "d"):
        if view.offered is None:
            return Step(view, ("没有待接受的工单",))
        return Step(view, send=({"type": "accept" if command == "a" else "decline", "ticket": view.offered},))
    if command == "s":
        if not view.claimed:
            return Step(view, ("没有可提交的工单",))
        # `s 答复`: the answer goes to the citizen with the 回访 question (docs/seat-protocol.md).
        fields = {"fields": {"answer": rest.strip()}} if rest.strip() else {}
        return Step(view, send=({"type": "submit", "ticket": view.claimed[0], **fields},))
    if command == "r":
        if not view.claimed:
            return Step(view, ("没有可回复的工单",))
        if not rest.strip():
            return Step(view, ("用法: r 回复内容",))
        return Step(view, send=({"type": "reply", "ticket": view.claimed[0], "text": rest.strip()},))
    if command in STATES:
        return Step(view, send=({"type": "state", "state": command},))
    return Step(view, (HELP,))


def closed_because(exc: ConnectionClosed, logged_in: bool) -> str:
    """Why the gateway ended the connection, in one line."""
    if exc.rcvd is None:
        what = "connection lost"
    else:
        what = f"{exc.rcvd.reason or _CLOSES.get(exc.rcvd.code, 'closed')} (close {exc.rcvd.code})"
    return f"disconnected: {what}" if logged_in else f"login failed: {what}"


class Terminal:
    """Where the seat's lines go; every one made safe for a terminal first."""

    def say(self, text: str) -> None:
        print(terminal_safe(text), flush=True)

    def fail(self, text: str) -> None:
        print(terminal_safe(text), file=sys.stderr, flush=True)


def is_foreground(fd: int) -> bool:
    """Whether `fd` is a terminal whose foreground job is ours (reading it will not stop us)."""
    try:
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


FOREGROUND_CHECK = 1.0  # s between checks of a background seat for having been brought forward


class TerminalCommands:
    """Lines typed on the seat's terminal, one per `next_line()`, read only while the seat is the
    terminal's foreground job.

    Read through the event loop, not a thread, and only while a command is awaited: a thread blocked
    in `readline` kept `q` waiting for one more line (which it then swallowed from the shell), and
    whatever is typed after `q` belongs to the shell. A background seat never reads (the terminal
    would stop it: SIGTTIN). It checks again on SIGCONT (`bg` after Ctrl-Z sends one) and, while in
    the background, every FOREGROUND_CHECK seconds: `fg` of a running job sends no signal. What is
    typed meanwhile waits in the terminal, so nothing is lost.
    """

    def __init__(self, fd: int, on_change: Callable[[bool], None]) -> None:
        self._fd = fd
        self._on_change = on_change
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._ended = False
        self._waiter: asyncio.Future[str | None] | None = None
        self._listening = False
        self._timer: asyncio.TimerHandle | None = None
        self.foreground = False

    def start(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGCONT, self.recheck)
        self.recheck()

    def close(self) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGCONT)
        if self._timer is not None:
            self._timer.cancel()
        self._unlisten()

    async def next_line(self) -> str | None:
        """The next line typed (without its newline), or None at the end of input (Ctrl-D)."""
        if "\n" in self._pending or self._ended:
            return self._take()
        self._waiter = asyncio.get_running_loop().create_future()
        self._listen()
        try:
            return await self._waiter
        finally:
            self._waiter = None
            self._unlisten()

    def recheck(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        foreground = is_foreground(self._fd)
        if not foreground:
            self._timer = asyncio.get_running_loop().call_later(FOREGROUND_CHECK, self.recheck)
        if foreground != self.foreground:
            self.foreground = foreground
            self._on_change(foreground)
        if foreground:
            self._listen()
        else:
            self._unlisten()

    def _listen(self) -> None:
        if self.foreground and self._waiter is not None and not self._listening:
            asyncio.get_running_loop().add_reader(self._fd, self._read)
            self._listening = True

    def _unlisten(self) -> None:
        if self._listening:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._listening = False

    def _take(self) -> str | None:
        if "\n" in self._pending:
            line, _, self._pending = self._pending.partition("\n")
            return line
        return None  # ended

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:  # EIO: sent to the background between the check and the read
            self.recheck()
            return
        if data:
            self._pending += self._decoder.decode(data)
        else:
            self._ended = True
        if (self._ended or "\n" in self._pending) and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._take())
            self._unlisten()


_ids = itertools.count(1)


class SeatClient:
    """The shell around `on_frame`/`on_command`: the websocket, the terminal, the commands."""

    def __init__(
        self,
        ws: ClientConnection,
        terminal: Terminal,
        auto: bool = False,
        limit: int = 0,
        interactive: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ws = ws
        self.terminal = terminal
        self.auto = auto
        self.limit = limit
        self.interactive = interactive
        self.view = SeatView()

    def mode(self) -> Mode:
        return Mode(auto=self.auto, interactive=self.interactive(), limit=self.limit)

    async def run(
        self, agent: str, token: str, next_command: Callable[[], Coroutine[Any, Any, str | None]], stop: asyncio.Event
    ) -> int:
        """Log in and serve until `q`, the end of input (None), `stop`, the count, or the gateway
        closing. Returns the exit status: 0 when the seat ended it, else 1 after saying why."""
        tasks: set[asyncio.Task[Any]] = set()
        try:
            await self._send({"type": "hello", "v": 1, "agent": agent, "token": token})
            receive = asyncio.create_task(self.ws.recv())
            command = asyncio.create_task(next_command())
            stopping = asyncio.create_task(stop.wait())
            tasks = {receive, command, stopping}
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    self.terminal.say("坐席已退出")
                    return 0
                if receive in done:
                    if await self._apply(self._frame(receive.result())):
                        return 0
                    tasks.discard(receive)
                    receive = asyncio.create_task(self.ws.recv())
                    tasks.add(receive)
                if command in done:
                    line = command.result()
                    if line is None or await self._apply(on_command(self.view, line)):
                        return 0
                    tasks.discard(command)
                    command = asyncio.create_task(next_command())
                    tasks.add(command)
        except ConnectionClosed as exc:
            self.terminal.fail(closed_because(exc, self.view.logged_in))
            return 1
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _frame(self, raw: str | bytes) -> Step:
        try:
            return on_message(self.view, raw, self.mode())
        except InvalidRequest:
            self.terminal.fail("ignored a malformed frame from the gateway")
            return Step(self.view)

    async def _apply(self, step: Step) -> bool:
        """Carry out a step; True when the seat should stop."""
        self.view = step.view
        for line in step.say:
            self.terminal.say(line)
        for frame in step.send:
            await self._send(frame)
        return step.stop

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"id": next(_ids), **frame}, ensure_ascii=False))


async def run_seat(url: str, agent: str, token: str, auto: bool = False, limit: int = 0) -> int:
    terminal = Terminal()
    try:
        ws = await connect(url, open_timeout=5)
    except (OSError, TimeoutError, InvalidURI, InvalidHandshake) as exc:
        terminal.fail(f"cannot connect to {url}: {exc}")
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reading_changed(reading: bool) -> None:
        terminal.say(HELP if reading else NO_COMMANDS)

    reader = None if auto or not os.isatty(0) else TerminalCommands(0, reading_changed)
    client = SeatClient(ws, terminal, auto, limit, interactive=lambda: reader is not None and reader.foreground)
    no_commands: asyncio.Queue[str | None] = asyncio.Queue()  # stays empty: nothing to read
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ws:
        try:
            if reader is not None:
                reader.start()
            return await client.run(agent, token, reader.next_line if reader else no_commands.get, stop)
        finally:
            if reader is not None:
                reader.close()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
