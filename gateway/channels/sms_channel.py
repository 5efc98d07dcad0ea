"""The SMS channel: one SMS session (SMPP to an SMSC, or CMPP to China Mobile's ISMG) joined to the
gateway as a service.

The session is `gateway/channels/sms/` (its public interface only: `SmsLink` and its types). Here:
its settings built from `[channels.sms]` (the one place), a citizen's SMS handed to the channel
intake and awaited before the session answers the peer, and the link's health as the service's
(`/readyz`: not ready while the link is not bound, with the reason).

A long SMS whose parts were only partly answered (the connection dropped between the answers, or
the gateway died between them) comes again as the parts not answered, which the session hands over
after its reassembly timeout as an incomplete message. Taking a long message records its parts
(`hg:sms:long:…`: each part's digest, kept as long as a message id is); an incomplete message all of
whose parts were taken is that rest, answered without a ticket (`taken_before`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.channels.contract import ChannelIntake, InboundMessage
from gateway.channels.outbound import Refused, Sender
from gateway.channels.sms.cmpp_session import CmppLink, CmppSettings
from gateway.channels.sms.link import Concatenation, InboundSms, LinkHealth, OutboundSms, SmsRejected
from gateway.channels.sms.smpp_session import SmppLink, SmppSettings
from gateway.channels.sms.text import Receipt
from gateway.config import SmsChannelConfig, split_listen
from gateway.messages import Reply
from gateway.queue.store import TicketQueue
from gateway.shell.services import Health, Loop, State
from gateway.ticket import mask_phone, utcnow

log = logging.getLogger("gateway.channels.sms")

LONG_SMS_TAKEN_BEFORE = "SMS: parts %s of a long message from %s came again after it was taken; answered, not ticketed"

# How the link's state reads on /readyz.
_STATES: dict[str, State] = {"bound": "up", "connecting": "starting", "auth_failed": "failed", "down": "restarting"}


def link_settings(config: SmsChannelConfig, secret: str, **tuning: Any) -> SmppSettings | CmppSettings:
    """The session's settings from `[channels.sms]` and the secret its `password_env` names;
    `tuning`: the session's other settings (timers, bounds), left at their defaults by `run`."""
    host, port = split_listen(config.smsc)
    if config.window is not None:
        tuning = {"window": config.window, **tuning}
    if config.protocol == "cmpp":
        return CmppSettings(
            host=host,
            port=port,
            sp_id=config.sp_id,
            secret=secret,
            service_id=config.service_id,
            src_id=config.src_id,
            send_rate=config.send_rate,
            **tuning,
        )
    return SmppSettings(
        host=host,
        port=port,
        system_id=config.system_id,
        password=secret,
        source_addr=config.source_addr,
        send_rate=config.send_rate,
        **tuning,
    )


def inbound_message(sms: InboundSms, fingerprinted: bool, now: datetime) -> InboundMessage:
    """A session's whole SMS as the channel contract's message."""
    return InboundMessage(
        channel="sms",
        identity=sms.source,
        text=sms.text,
        message_id=sms.message_id,
        received_at=now,
        id_is_fingerprint=fingerprinted,
        complete=sms.complete,
    )


def taken_before(held: Sequence[bytes | str | None], long_sms: Concatenation) -> bool:
    """Whether every part of an incomplete long message was taken before: `held` is what the
    record of its concatenation holds for its part numbers, in order (None where nothing)."""
    digests = [value.decode() if isinstance(value, bytes) else value for value in held]
    return bool(long_sms.parts) and digests == [digest for _, digest in long_sms.parts]


def service_health(link: LinkHealth, loop: Health) -> Health:
    """The service's health: the supervising loop's while it is not up, else the link's."""
    if not loop.ready:
        return loop
    detail = "" if link.state == "bound" else f"{link.state}: {link.last_error or 'no error yet'}"
    return Health(_STATES[link.state], detail, loop.restarts)


def receipt_outcome(receipt: Receipt) -> tuple[bool, str] | None:
    """(delivered, reason) for a final receipt; None for one that is not final yet (ENROUTE...)."""
    if receipt.state == "delivered":
        return True, ""
    if receipt.state == "unknown":
        return None
    return False, f"{receipt.state} (error {receipt.error})"


class SmsChannel:
    """The SMS link as a supervised service (`Gateway.add`); `sender`, its outbox's sender, is
    another (`sms-sender`)."""

    name = "sms"

    def __init__(
        self,
        config: SmsChannelConfig,
        secret: str,
        intake: ChannelIntake,
        queue: TicketQueue,
        *,
        clock: Callable[[], datetime] = utcnow,
        **tuning: Any,
    ) -> None:
        self._config = config
        self._intake = intake
        self._queue = queue
        self._outbound = Sender(queue, "sms", self._submit)
        self.sender = Loop("sms-sender", self._outbound.run)
        self._clock = clock
        settings = link_settings(config, secret, **tuning)
        self.link: SmppLink | CmppLink = (
            CmppLink(settings, self._on_message, self._on_receipt)
            if isinstance(settings, CmppSettings)
            else SmppLink(settings, self._on_message, self._on_receipt)
        )
        self._stopping = False
        self._loop = Loop("sms", self._run)

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        self._stopping = True
        await self.link.stop()  # its deliveries answered, the peer told (unbind / CMPP_TERMINATE)
        await self._loop.stop()

    def health(self) -> Health:
        return service_health(self.link.health(), self._loop.health())

    async def _run(self) -> None:
        await self.link.run()
        if self._stopping:
            await asyncio.Event().wait()  # stopped on purpose: the loop cancels this, not a crash

    async def _on_message(self, sms: InboundSms) -> None:
        """Durably taken before the session answers the peer (it redelivers when this raises)."""
        long_sms = sms.concatenation
        if long_sms is not None and not sms.complete and await self._taken_before(long_sms):
            numbers = ",".join(str(number) for number, _ in long_sms.parts)
            log.info(LONG_SMS_TAKEN_BEFORE, numbers, mask_phone(sms.source))
            return
        await self._intake.take(inbound_message(sms, self._config.protocol == "smpp", self._clock()))
        if long_sms is not None:
            await self._record_taken(long_sms)

    def _long_sms_key(self, long_sms: Concatenation) -> str:
        key = long_sms.key
        return self._queue.keys.long_sms(key.source, key.dest, key.ref, key.total)

    async def _taken_before(self, long_sms: Concatenation) -> bool:
        held = await self._queue.redis.hmget(self._long_sms_key(long_sms), [str(n) for n, _ in long_sms.parts])
        return taken_before(held, long_sms)

    async def _record_taken(self, long_sms: Concatenation) -> None:
        """Before the parts are answered: a crash before this leaves them all unanswered (the peer
        delivers the whole message again, a duplicate the intake knows)."""
        key = self._long_sms_key(long_sms)
        async with self._queue.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={str(number): digest for number, digest in long_sms.parts})
            pipe.expire(key, self._queue.live.current.redis.idempotency_ttl)
            await pipe.execute()

    async def _on_receipt(self, receipt: Receipt) -> None:
        """Recorded before the session answers the peer (it sends the receipt again if this raises)."""
        outcome = receipt_outcome(receipt)
        if outcome is not None:
            await self._outbound.on_receipt(receipt.message_id, *outcome)

    async def _submit(self, reply: Reply) -> tuple[str, ...]:
        phone = reply.citizen.phone
        if not phone:
            raise Refused("the citizen has no phone number", transient=False)
        try:
            submitted = await self.link.submit(OutboundSms(dest=phone, text=reply.text, reference=reply.ticket))
        except SmsRejected as rejected:
            raise Refused(rejected.reason, transient=rejected.transient) from None
        return submitted.message_ids
