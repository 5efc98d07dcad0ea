"""`hotline-gateway transcribe --pending`: recordings that live recognition missed get their text."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from gateway.asr.pending import transcribe_pending
from gateway.config import GatewayConfig
from gateway.queue import TicketQueue
from gateway.ticket import Ticket, new_ticket_id, utcnow
from gateway.voice.link import VoiceLink, recording_attachment
from gateway.voice.policy import callback_ticket
from peers.speech import synthesize


async def test_waiting_recordings_are_transcribed_into_their_tickets(
    config: GatewayConfig, redis_client: aioredis.Redis, tmp_path: Path, tts: None
) -> None:
    recording = synthesize("我要办理住房业务", tmp_path / "call.wav")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav at all")
    queue = TicketQueue(redis_client, config)
    await queue.ensure_groups()
    link = VoiceLink(queue)
    tickets = []
    for path in (recording, broken):
        now = utcnow()
        ticket = Ticket(
            id=new_ticket_id(now), channel="voice", message_id=f"call-{path.stem}", received_at=now,
            queue="general", attachments=(recording_attachment(path),),
        )  # fmt: skip
        await queue.intake(ticket, "test")
        await link.add_pending(ticket.id, path, "asr_unavailable")
        tickets.append(ticket)
    # The first call ended in a voice message: its callback ticket is the one an agent will work.
    callback = callback_ticket(tickets[0], utcnow(), 0, "voice_message")
    await queue.intake(callback, "test")
    assert config.redis.url
    status = await transcribe_pending(config, config.redis.url, "pocketsphinx")
    assert status == 1, "one file could not be read: said so in the exit status"
    done = await queue.get(tickets[0].id)
    assert done.transcript and done.text, "the text went into the ticket"
    assert done.history[-1].action == "transcribed_after_call"
    assert (await queue.get(callback.id)).transcript == done.transcript, "the callback ticket carries the text"
    waiting = [entry["ticket"] for _, entry in await link.pending()]
    assert waiting == [tickets[1].id], "the unreadable one is still waiting; the done one is not"
