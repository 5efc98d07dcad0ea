"""What every SMS session (SMPP, CMPP) offers the channel adapter: one interface, one set of types.

The session answers the peer's deliver PDU(s) only after `on_message` / `on_receipt` returned (the
adapter writes durably in it); when the callback raises, it answers with a transient error so the
peer redelivers, and logs one line. `InboundSms.message_id` is stable across such a redelivery.
A long message names its concatenation (`InboundSms.concatenation`): when the answers to some of
its parts were lost, the peer delivers only those again, and they come as an incomplete message of
the same concatenation, which the adapter answers without taking it twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.channels.sms.text import PartKey, Receipt
from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Concatenation:
    """Which long message an `InboundSms`'s parts were, and what each held: how the adapter knows
    the rest of a message it took when the peer delivers only some of its parts again (their
    answers were lost)."""

    key: PartKey  # source, destination, reference and part count
    parts: tuple[tuple[int, str], ...]  # (part number, `text.part_digest`) of each part present


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A whole message (reassembled), ready for intake."""

    message_id: str  # the peer's id when it gives one (CMPP Msg_Id), else a fingerprint of the
    # PDU fields that do not change on redelivery
    source: str  # the citizen's number, digits as the peer gives them
    dest: str  # our number
    text: str
    complete: bool  # False: the reassembly timeout delivered what arrived
    missing: tuple[int, ...] = ()  # part numbers that never came
    concatenation: Concatenation | None = None  # a long message's: its key and its parts' digests


@dataclass(frozen=True, slots=True)
class OutboundSms:
    dest: str
    text: str
    reference: str  # the gateway's reply id (for logs)


@dataclass(frozen=True, slots=True)
class Submitted:
    message_ids: tuple[str, ...]  # the peer's id per part, in order


class SmsRejected(GatewayError):
    """The peer refused a submit (or the link was not bound in time). `transient`: trying again
    later may succeed (throttled past the retries, not bound, timed out); else it never will."""

    code = "sms_rejected"

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


LinkState = Literal["connecting", "bound", "auth_failed", "down"]


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """Since the session was made; the same meaning for every protocol."""

    binds: int = 0  # successful binds (a reconnect adds one)
    messages_in: int = 0  # whole inbound messages handed to on_message
    receipts_in: int = 0  # receipts handed to on_receipt
    parts_out: int = 0  # submitted parts the peer accepted
    throttled: int = 0  # submits the peer answered "throttled" or "queue full"
    rejected: int = 0  # submits refused for good
    callback_errors: int = 0  # callbacks that raised (the peer was told to redeliver)
    protocol_errors: int = 0  # malformed PDUs received, error responses to ours


@dataclass(frozen=True, slots=True)
class LinkHealth:
    state: LinkState
    last_error: str | None  # one line, no secrets, no full numbers
    counters: LinkCounters


OnMessage = Callable[[InboundSms], Awaitable[None]]
OnReceipt = Callable[[Receipt], Awaitable[None]]


class SmsLink(Protocol):
    async def run(self) -> None:
        """Connect, bind, keep alive, reconnect with back-off, until stop()."""

    async def stop(self) -> None:
        """Unbind/terminate cleanly, bounded in time."""

    async def submit(self, sms: OutboundSms) -> Submitted:
        """Wait (bounded) for a bound link, split, send in the window, resubmit on throttling with
        back-off; raise SmsRejected for a permanent refusal or when not bound in time."""

    def health(self) -> LinkHealth: ...
