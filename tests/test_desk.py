"""The one intake entry point: every contact is validated, routed, stored once, and announced on the
ticket-created stream in the same step."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig
from gateway.errors import Conflict, Forbidden, QueueFull
from gateway.intake import IntakeRequest
from gateway.queue import TicketQueue
from gateway.queue.desk import IntakeDesk, IntakeUnavailable, Source
from gateway.shell.app import redis_client
from gateway.shell.embedded_redis import free_port
from tests.helpers import voice_ticket
from tests.redis_typed import read_entries, stream_entries

WEBFORM = Source("client:webform", "webform", frozenset({"web", "wechat"}))


@pytest.fixture
async def desk(redis_client: aioredis.Redis, config: GatewayConfig) -> IntakeDesk:
    queue = TicketQueue(redis_client, config)
    await queue.ensure_groups()
    return IntakeDesk(queue, config)


async def created_entries(redis: aioredis.Redis, config: GatewayConfig) -> list[dict[str, str]]:
    return [fields for _, fields in stream_entries(await redis.xrange(f"{config.redis.key_prefix}:created"))]


async def test_a_request_is_routed_stored_and_announced_once(
    desk: IntakeDesk, redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    request = IntakeRequest(text="路灯不亮", flags=["enterprise"])
    first = await desk.submit(request, WEBFORM, idempotency_key="form-1")
    again = await desk.submit(request, WEBFORM, idempotency_key="form-1")
    assert first.created and not again.created and again.ticket_id == first.ticket_id
    # The one routing rule: the enterprise flag's priority, on the default queue.
    assert (first.draft.queue, first.draft.priority) == ("general", 7)
    assert await created_entries(redis_client, config) == [{"t": first.ticket_id, "q": "general", "c": "web"}]


async def test_another_body_under_the_same_key_is_a_conflict_and_announces_nothing(
    desk: IntakeDesk, redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    await desk.submit(IntakeRequest(text="原诉求"), WEBFORM, idempotency_key="form-2")
    with pytest.raises(Conflict):
        await desk.submit(IntakeRequest(text="另一个诉求"), WEBFORM, idempotency_key="form-2")
    assert len(await created_entries(redis_client, config)) == 1


async def test_a_gateway_made_draft_is_taken_as_built_and_sources_keep_to_their_channels(
    desk: IntakeDesk, redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    call = voice_ticket("call-9")
    accepted = await desk.submit(call, Source.worker("w1"))
    assert accepted.created and accepted.ticket_id == call.id
    assert (await created_entries(redis_client, config))[-1] == {"t": call.id, "q": "general", "c": "voice"}
    with pytest.raises(Forbidden):
        await desk.submit(voice_ticket("call-10"), WEBFORM)
    with pytest.raises(Forbidden):
        await desk.submit(IntakeRequest(channel="sms", text="短信"), WEBFORM)


async def test_consumers_read_the_created_stream_with_their_own_group(
    desk: IntakeDesk, redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    stream = f"{config.redis.key_prefix}:created"
    await redis_client.xgroup_create(stream, "triage", id="0", mkstream=True)
    ids = [(await desk.submit(IntakeRequest(text=f"诉求{n}"), WEBFORM)).ticket_id for n in range(3)]
    read = read_entries(await redis_client.xreadgroup("triage", "t1", {stream: ">"}, count=10), stream)
    assert [fields["t"] for _, fields in read] == ids


async def test_an_unreachable_store_names_the_id_a_retry_is_safe_under(config: GatewayConfig) -> None:
    down = redis_client(f"redis://127.0.0.1:{free_port()}/0", config.redis)  # nothing listens there
    desk = IntakeDesk(TicketQueue(down, config), config)
    with pytest.raises(IntakeUnavailable) as caught:
        await desk.submit(IntakeRequest(text="诉求"), WEBFORM, idempotency_key="form-3")
    assert caught.value.message_id == "form-3" and caught.value.http_status == 503
    with pytest.raises(IntakeUnavailable) as keyless:
        await desk.submit(IntakeRequest(text="诉求"), WEBFORM)
    assert keyless.value.message_id  # the gateway's own id, also the ticket's
    await down.aclose()


async def test_a_full_queue_is_said_as_such_not_as_an_outage(
    redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    full = config.model_copy(update={"redis": config.redis.model_copy(update={"max_queue_length": 1})})
    desk = IntakeDesk(TicketQueue(redis_client, full), full)
    await desk.submit(IntakeRequest(text="第一件"), WEBFORM)
    with pytest.raises(QueueFull) as caught:
        await desk.submit(IntakeRequest(text="第二件"), WEBFORM)
    # The store answered: nothing was written, so no retry id is promised (unlike IntakeUnavailable).
    assert not isinstance(caught.value, IntakeUnavailable) and caught.value.http_status == 503


def test_nothing_but_the_desk_calls_the_stores_intake() -> None:
    root = Path(__file__).resolve().parent.parent / "gateway"
    callers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "intake":
                callers.append(str(path.relative_to(root.parent)))
    assert callers == ["gateway/queue/desk.py"]
