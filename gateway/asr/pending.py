"""`hotline-gateway transcribe --pending`: the recordings that live recognition missed.

A call is transcribed after it ended when the dictation engine was unavailable (no model installed),
the ASR pool was full, or its stream fell behind. Each waiting recording is transcribed with the
configured engine and its text goes into the ticket (`transcript`, and `text` when still empty).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import redis.asyncio as aioredis

from gateway.asr.engine import AsrUnavailable, AudioFormatError, load_recognizer
from gateway.asr.transcribe import transcribe_file
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.queue import TicketQueue
from gateway.ticket import Ticket, TranscriptSegment
from gateway.voice.link import VoiceLink

log = logging.getLogger("gateway.asr.pending")


def _segments(path: Path, transcript_segments: list[object]) -> tuple[TranscriptSegment, ...]:
    out = []
    for seg in transcript_segments:
        text = getattr(seg, "text", "")
        if not text:
            continue
        out.append(
            TranscriptSegment(
                speaker="caller",
                text=text[:4000],
                start=max(0.0, float(getattr(seg, "start", 0.0))),
                end=max(0.0, float(getattr(seg, "end", 0.0))),
                confidence=min(1.0, max(0.0, float(getattr(seg, "confidence", 0.0)))),
                final=True,
            )
        )
    return tuple(out)


async def _with_callback(queue: TicketQueue, ticket_id: str) -> list[str]:
    """The call's ticket and, when the call left one, its callback ticket: the one an agent works."""
    try:
        ticket = await queue.get(ticket_id)
    except GatewayError as exc:
        log.warning("ticket %s: cannot look for its callback: %s", ticket_id, exc)
        return [ticket_id]
    callback = await queue.redis.get(queue.keys.idempotency("voice", f"{ticket.message_id}-callback"))
    return [ticket_id, callback.decode() if isinstance(callback, bytes) else str(callback)] if callback else [ticket_id]


async def transcribe_pending(config: GatewayConfig, redis_url: str, engine: str | None) -> int:
    settings = config.asr.model_copy(update={"engine": engine}) if engine else config.asr
    try:
        recognizer = load_recognizer(settings)
    except AsrUnavailable as exc:
        print(f"transcribe: {exc.message}", file=sys.stderr)
        return 3
    client = aioredis.Redis.from_url(redis_url)
    queue = TicketQueue(client, config)
    link = VoiceLink(queue)
    done = failed = 0
    try:
        for member, entry in await link.pending(limit=10_000):
            path = Path(entry["path"])
            try:
                transcript = transcribe_file(path, recognizer)
            except (AudioFormatError, OSError) as exc:
                log.error("cannot transcribe %s: %s", path, exc)
                failed += 1
                continue
            segments = _segments(path, list(transcript.segments))

            def change(
                ticket: Ticket, segments: tuple[TranscriptSegment, ...] = segments, text: str = transcript.text
            ) -> Ticket:
                return ticket.model_copy(
                    update={"transcript": (*ticket.transcript, *segments)[-200:], "text": ticket.text or text[:4000]}
                )

            for ticket_id in await _with_callback(queue, entry["ticket"]):
                try:
                    await queue.amend(ticket_id, change, "system:transcribe", "transcribed_after_call")
                except GatewayError as exc:
                    log.error("ticket %s: %s", ticket_id, exc)
            await link.done_pending(member)
            done += 1
    finally:
        await client.aclose()
    print(f"transcribed {done} recording(s); {failed} failed")
    return 0 if not failed else 1
