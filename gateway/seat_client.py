"""`hotline-gateway seat`: a terminal agent seat speaking the seat protocol v1.

Interactive: it prints each offer and reads commands on stdin (`a` accept, `d` decline, `s` submit,
`r TEXT` reply to the citizen, `ready`/`away`, `q` quit). With --auto it accepts and submits every
offer itself (the README tour and smoke tests use that).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

_ids = itertools.count(1)


def describe(ticket: dict[str, Any]) -> str:
    citizen = ticket.get("citizen", {})
    who = citizen.get("name") or citizen.get("phone") or citizen.get("wechat_openid") or "匿名"
    return (
        f"工单 {ticket['id']}  渠道 {ticket['channel']}  队列 {ticket['queue']}  "
        f"优先级 {ticket.get('priority', 0)}\n"
        f"  来电/来信人: {who}\n  诉求: {ticket.get('text', '')}"
    )


async def _send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps({"id": next(_ids), **frame}, ensure_ascii=False))


class SeatClient:
    def __init__(self, ws: ClientConnection, auto: bool, limit: int) -> None:
        self.ws = ws
        self.auto = auto
        self.limit = limit
        self.offered: str | None = None
        self.claimed: list[str] = []
        self.submitted = 0

    async def on_frame(self, frame: dict[str, Any]) -> bool:
        """Handle one server frame; False when the client should stop."""
        kind = frame.get("type")
        if kind == "welcome":
            print(f"已登录: {frame['name'] or frame['agent']}  队列: {', '.join(frame['queues'])}", flush=True)
            self.claimed = [t["id"] for t in frame.get("resumed", [])]
            await _send(self.ws, {"type": "state", "state": "ready"})
        elif kind == "offer":
            ticket = frame["ticket"]
            self.offered = ticket["id"]
            print(f"\n新工单 (请在 {frame['expires_in']:.0f} 秒内接受):\n{describe(ticket)}", flush=True)
            if self.auto:
                await _send(self.ws, {"type": "accept", "ticket": ticket["id"]})
            else:
                print("命令: a 接受  d 拒绝", flush=True)
        elif kind == "ticket":
            ticket = frame["ticket"]
            if ticket["status"] == "claimed" and ticket["id"] not in self.claimed:
                self.claimed.append(ticket["id"])
                print(f"已接单 {ticket['id']}", flush=True)
                if self.auto:
                    await _send(self.ws, {"type": "submit", "ticket": ticket["id"]})
                else:
                    print("命令: s 提交  r 文字 回复市民", flush=True)
        elif kind == "ack" and frame.get("status") == "submitted":
            self.claimed = [t for t in self.claimed if t != frame["ticket"]]
            self.submitted += 1
            print(f"已提交 {frame['ticket']}", flush=True)
            if self.limit and self.submitted >= self.limit:
                return False
        elif kind in ("error", "offer_revoked", "state"):
            print(f"[{kind}] {json.dumps(frame, ensure_ascii=False)}", flush=True)
        return True

    async def on_command(self, line: str) -> bool:
        command, _, rest = line.strip().partition(" ")
        if command == "q":
            return False
        if command == "a" and self.offered:
            await _send(self.ws, {"type": "accept", "ticket": self.offered})
        elif command == "d" and self.offered:
            await _send(self.ws, {"type": "decline", "ticket": self.offered})
        elif command == "s" and self.claimed:
            await _send(self.ws, {"type": "submit", "ticket": self.claimed[0]})
        elif command == "r" and self.claimed and rest:
            await _send(self.ws, {"type": "reply", "ticket": self.claimed[0], "text": rest})
        elif command in ("ready", "away", "busy", "wrap_up"):
            await _send(self.ws, {"type": "state", "state": command})
        else:
            print("命令: a 接受  d 拒绝  s 提交  r 文字 回复  ready/away  q 退出", flush=True)
        return True


async def _stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        await queue.put(line or None)
        if not line:
            return


async def run_seat(url: str, agent: str, token: str, auto: bool = False, limit: int = 0) -> int:
    try:
        ws = await connect(url, open_timeout=5)
    except OSError as exc:
        print(f"cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    client = SeatClient(ws, auto, limit)
    commands: asyncio.Queue[str | None] = asyncio.Queue()
    reader = None if auto else asyncio.create_task(_stdin_lines(commands))
    await _send(ws, {"type": "hello", "v": 1, "agent": agent, "token": token})
    try:
        async with ws:
            await _loop(ws, client, commands, auto)
    except ConnectionClosed as exc:
        reason = exc.rcvd.reason if exc.rcvd else "connection lost"
        print(f"disconnected: {reason}", file=sys.stderr)
        return 0 if exc.rcvd and exc.rcvd.code == 1000 else 1
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return 0


async def _loop(ws: ClientConnection, client: SeatClient, commands: asyncio.Queue[str | None], auto: bool) -> None:
    receive = asyncio.create_task(ws.recv())
    command = None if auto else asyncio.create_task(commands.get())
    while True:
        waiting = {task for task in (receive, command) if task is not None}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if receive in done:
            if not await client.on_frame(json.loads(receive.result())):
                return
            receive = asyncio.create_task(ws.recv())
        if command is not None and command in done:
            line = command.result()
            if line is None or not await client.on_command(line):
                receive.cancel()
                return
            command = asyncio.create_task(commands.get())
