"""A gateway configuration for tests and benchmarks: three queues, three agents, one API client,
with the secrets they log in with (not secret: test values only, never a deployment's)."""

from __future__ import annotations

from typing import Any

from gateway.config import hash_secret

AGENT_TOKENS = {"a1": "token-a1-" + "x" * 24, "a2": "token-a2-" + "y" * 24, "boss": "token-boss-" + "z" * 24}
API_KEY = "key-webform-" + "k" * 32


def make_raw_config(prefix: str, redis_url: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "http": {"listen": "127.0.0.1:0"},
        "seats": {"listen": "127.0.0.1:0", "offer_timeout": 5, "reconnect_grace": 2},
        "redis": {"url": redis_url, "key_prefix": prefix},
        "routing": {"default_queue": "general", "by_channel": {}},
        "queues": [
            {"name": "general", "label": "综合受理", "skills": ["general"], "priority": 0},
            {"name": "housing", "label": "住房", "skills": ["housing"], "priority": 0},
            {"name": "enterprise", "label": "政企通", "skills": ["enterprise"], "priority": 7},
        ],
        "agents": [
            {
                "id": "a1",
                "name": "张敏",
                "skills": ["general"],
                "token_hash": hash_secret(AGENT_TOKENS["a1"]),
            },
            {
                "id": "a2",
                "name": "李强",
                "skills": ["housing"],
                "token_hash": hash_secret(AGENT_TOKENS["a2"]),
            },
            {
                "id": "boss",
                "name": "王芳",
                "skills": ["general", "housing", "enterprise"],
                "token_hash": hash_secret(AGENT_TOKENS["boss"]),
            },
        ],
        "api_clients": [{"id": "webform", "key_hash": hash_secret(API_KEY), "channels": ["web", "wechat"]}],
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    return raw
