"""Ending the calls of a media worker that died, through Kamailio.

A killed worker sends no BYE: its callers would hear silence until they hang up, agent phones it
rang would stay in the call. Once a core settles the worker (its heartbeat lapsed: tickets
abandoned, callbacks queued), it appends `{worker, sip}` to `{prefix}:workers:dead`. The process
that supervises Kamailio reads that stream and asks Kamailio to end every dialog it tracks for the
worker's address (`dlg.profile_list hg_worker` + `dlg.end_dlg`): Kamailio sends BYE to both sides,
and its local BYE frees the call's dispatcher load (event_route[tm:local-request]).

Only entries written after this process started are read: Kamailio keeps dialogs in memory, so a
front that restarted has nothing older to end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.keys import reply_text
from gateway.shell.tasks import stop_if_cancelled
from gateway.sipfront.kamailio import SipFrontError
from gateway.sipfront.rpc import FrontRpc

log = logging.getLogger("gateway.sipfront")

BLOCK_MS = 1000  # below any client socket timeout
RETRY_S = 1.0


class DialogJanitor:
    def __init__(self, redis: aioredis.Redis, stream: str, rpc: FrontRpc) -> None:
        self.redis = redis
        self.stream = stream
        self.rpc = rpc

    async def run(self) -> None:
        last_id = "$"
        while True:
            try:
                found: Any = await self.redis.xread({self.stream: last_id}, count=50, block=BLOCK_MS)
            except (RedisError, OSError) as exc:
                log.warning("dead-worker stream unreadable: %s", exc)
                await asyncio.sleep(RETRY_S)
                continue
            stop_if_cancelled()
            for _, entries in found or []:
                for entry_id, raw in entries:
                    last_id = reply_text(entry_id)
                    fields = {reply_text(k): reply_text(v) for k, v in raw.items()}
                    await self.end_calls(fields.get("worker", ""), fields.get("sip", ""))

    async def end_calls(self, worker_id: str, sip: str) -> int:
        if not sip:
            return 0
        try:
            ended = await self.rpc.end_dialogs(f"sip:{sip}")
        except SipFrontError as exc:
            log.warning("could not end the calls of dead worker %s (%s): %s", worker_id, sip, exc)
            return 0
        if ended:
            log.warning("ended %d call(s) of dead worker %s through Kamailio", ended, worker_id)
        return ended
