"""集中爆发: the decision (pure), and the triage consumer counting tickets by category and place
against a real Redis: one warning per window and place, none where contacts are as usual."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis.asyncio as aioredis

from gateway.config import LiveConfig
from gateway.messages import SurgeWarning
from gateway.queue import TicketQueue
from gateway.ticket import utcnow
from gateway.triage.service import Triage, build_triager
from gateway.triage.surge import SurgeSettings, is_surge, usual
from tests.conftest import ConfigFactory
from tests.helpers import queued_ticket
from tests.redis_typed import stream_entries
from tests.triage.merge_contacts import MANHOLE
from tests.triage.test_merge_service import MERGE


def test_a_surge_is_many_more_than_usual_and_at_least_a_few() -> None:
    hourly = SurgeSettings(window=3600, baseline=24 * 3600, min_count=5, factor=3.0)
    assert usual(48, hourly) == 2.0  # 48 in the day before: 2 an hour
    assert is_surge(6, 48, hourly) and not is_surge(5, 48, hourly), "3 x the usual 2"
    assert is_surge(5, 0, hourly) and not is_surge(4, 0, hourly), "never seen: the minimum decides"
    assert not is_surge(50, 0, hourly.model_copy(update={"enabled": False}))


async def test_many_contacts_at_one_street_warn_once_and_a_quiet_street_not(
    config_factory: ConfigFactory, catalogue_path: Path, redis_client: aioredis.Redis
) -> None:
    surge = {"window": 3600, "baseline": 86_400, "min_count": 5, "factor": 3.0}
    triage = {"enabled": True, "catalogue": str(catalogue_path), "merge": {**MERGE, "enabled": False}, "surge": surge}
    config = config_factory(triage=triage)
    queue = TicketQueue(redis_client, config)
    consumer = Triage(LiveConfig(config), queue, build_triager(config), name="only")
    now = utcnow()
    busy = [
        queued_ticket(f"s{n}", text=text, received_at=now - timedelta(minutes=n)) for n, text in enumerate(MANHOLE[:8])
    ]
    quiet = [queued_ticket("q1", text="芝罘区环山路的井盖丢了，晚上很危险")]
    for ticket in [*busy, *quiet]:
        stored = (await queue.intake(ticket, "test")).ticket_id
        await consumer.triage(stored)
        await consumer.triage(stored)  # a repeat counts nothing twice
    entries = stream_entries(await redis_client.xrange(queue.keys.surges))
    warnings = [SurgeWarning.parse(fields["m"]) for _, fields in entries]
    assert len(warnings) == 1, "one warning per window and place, however many more come"
    warning = warnings[0]
    assert warning.place.endswith("/南大街") and warning.count == 5 and warning.usual == 0.0
