"""The live configuration seam: a process reads its settings through one holder, so a validated new
config swapped in takes effect without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import GatewayConfig, LiveConfig, hash_secret, parse_config
from peers.gateway_config import make_raw_config
from tests.helpers import post_intake, running_gateway

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
