"""`GET /api/v1/knowledge/search` on a real gateway app (HTTP server, Redis, the knowledge base
imported at start from `[knowledge] entries`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from gateway.config import GatewayConfig, hash_secret
from gateway.knowledge import Entry
from peers.gateway_config import API_KEY
from tests.conftest import ConfigFactory
from tests.web.http_support import HttpServer, http_server


@pytest.fixture
def knowledge_config(config_factory: ConfigFactory, knowledge_path: Path, tmp_path: Path) -> GatewayConfig:
    return config_factory(
        api_clients=[{"id": "miniapp", "key_hash": hash_secret(API_KEY), "channels": ["wechat"]}],
        knowledge={"enabled": True, "database": "var/kb.sqlite3", "entries": str(knowledge_path), "limit": 3},
    )


async def search(server: HttpServer, q: str | None, key: str | None = API_KEY) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    path = "/api/v1/knowledge/search" + (f"?q={quote(q)}" if q is not None else "")
    async with aiohttp.ClientSession() as session, session.get(server.url + path, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_search_answers_the_best_current_entries(
    knowledge_config: GatewayConfig, example_entries: tuple[Entry, ...], tmp_path: Path
) -> None:
    async with http_server(knowledge_config) as server:
        status, body = await search(server, "家里暖气片不热 屋里才十几度")
        assert status == 200
        assert body["version"] == 1
        assert len(body["results"]) == 3
        first = body["results"][0]
        assert set(first) == {"id", "question", "answer", "category", "score"}
        assert first["id"] == "kb-0105" and first["category"] == "heating" and first["score"] > 0
        # An expired entry's own question: its successor, never the entry.
        old = next(entry for entry in example_entries if entry.id == "kb-0104")
        status, body = await search(server, old.question)
        assert status == 200 and "kb-0104" not in [result["id"] for result in body["results"]]
    assert (tmp_path / "var" / "kb.sqlite3").exists()


async def test_search_needs_an_api_key(knowledge_config: GatewayConfig) -> None:
    async with http_server(knowledge_config) as server:
        status, body = await search(server, "社保", key=None)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = await search(server, "社保", key="key-wrong-" + "x" * 32)
        assert status == 401


async def test_an_empty_or_oversized_q_is_a_400(knowledge_config: GatewayConfig) -> None:
    async with http_server(knowledge_config) as server:
        for q in (None, "", "   "):
            status, body = await search(server, q)
            assert status == 400 and body["error"]["code"] == "invalid", q
        limit = knowledge_config.knowledge.max_query_chars
        status, body = await search(server, "社" * (limit + 1))
        assert status == 400 and f"at most {limit} characters" in body["error"]["message"]
        status, body = await search(server, "社" * limit)
        assert status == 200


async def test_no_word_known_answers_no_results(knowledge_config: GatewayConfig) -> None:
    async with http_server(knowledge_config) as server:
        status, body = await search(server, "？！")
        assert status == 200 and body == {"results": [], "version": 1}


async def test_disabled_knowledge_base_is_a_503(config_factory: ConfigFactory) -> None:
    config = config_factory(api_clients=[{"id": "miniapp", "key_hash": hash_secret(API_KEY), "channels": ["wechat"]}])
    async with http_server(config) as server:
        status, body = await search(server, "社保")
        assert status == 503 and body["error"]["code"] == "unavailable"
        assert "not enabled" in body["error"]["message"]
