"""The live configuration seam: a process reads its settings through one holder, so a validated new
config swapped in takes effect without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.config import GatewayConfig, LiveConfig, hash_secret, parse_config
from peers.gateway_config import make_raw_config
from tests.helpers import Seat, post_intake, running_gateway

NEW_KEY = "key-miniprogram-" + "m" * 32


def test_a_swap_makes_the_new_config_current_and_tells_the_listeners(config: GatewayConfig) -> None:
    live = LiveConfig(config)
    heard: list[int] = []
    live.on_swap(lambda new, version: heard.append(version))
    assert live.current is config and live.version == 1
    changed = config.model_copy(update={"queues": config.queues[:1]})
    assert live.swap(changed) == 2
    assert live.current is changed and heard == [2]
    assert LiveConfig.of(live) is live


async def test_a_swapped_config_changes_what_the_http_api_accepts_without_a_restart(
    config: GatewayConfig, key_prefix: str, tmp_path: Path, redis_server: Any
) -> None:
    async with running_gateway(config) as (gateway, bound):
        assert (await post_intake(bound, {"text": "诉求"}, key=NEW_KEY))[0] == 401
        raw = make_raw_config(key_prefix, redis_server.url)
        raw["api_clients"].append({"id": "miniprogram", "key_hash": hash_secret(NEW_KEY), "channels": ["wechat"]})
        raw["queues"] = [q for q in raw["queues"] if q["name"] != "housing"]
        raw["agents"] = [a for a in raw["agents"] if "housing" not in a["skills"] or len(a["skills"]) > 1]
        for agent in raw["agents"]:
            agent["skills"] = [s for s in agent["skills"] if s != "housing"]
        assert gateway.live.swap(parse_config(raw, tmp_path)) == 2

        status, body = await post_intake(bound, {"channel": "wechat", "text": "小程序的诉求"}, key=NEW_KEY)
        assert status == 202, body
        status, body = await post_intake(bound, {"text": "住房问题", "queue": "housing"})
        assert status == 400 and body["error"]["fields"][0]["path"] == "queue"
        async with aiohttp.ClientSession() as http, http.get(f"http://{bound.http[0]}:{bound.http[1]}/readyz") as ready:
            assert (await ready.json())["config_version"] == 2


async def test_a_swapped_config_changes_who_may_take_a_seat_and_its_offer_timeout_without_a_restart(
    config: GatewayConfig, key_prefix: str, tmp_path: Path, redis_server: Any
) -> None:
    token = "token-a9-" + "q" * 24
    async with running_gateway(config) as (gateway, bound):
        with pytest.raises(ConnectionClosed) as refused:  # refused today: no agent a9
            await Seat.connect(bound, "a9", token)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4001
        raw = make_raw_config(key_prefix, redis_server.url)
        raw["agents"].append({"id": "a9", "name": "新坐席", "skills": ["general"], "token_hash": hash_secret(token)})
        raw["seats"]["offer_timeout"] = 1
        assert gateway.live.swap(parse_config(raw, tmp_path)) == 2
        seat = await Seat.connect(bound, "a9", token)
        status, body = await post_intake(bound, {"text": "换配置后的诉求"})
        assert status == 202, body
        offer = await seat.expect("offer")
        assert offer["ticket"]["id"] == body["ticket_id"]
        # Not accepted: the new 1 s offer timeout (not the old one) sends it back to the queue.
        revoked = await seat.expect("offer_revoked", timeout=5)
        assert revoked["ticket"] == body["ticket_id"]
        await seat.ws.close()
