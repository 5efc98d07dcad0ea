"""The gateway's exception tree, in one place, with what each error becomes for each kind of peer.

    GatewayError                    500 / close 1011 / SIP 500: a bug; the peer sees `internal`
    ├── ConfigError                 bad configuration: refuse to start (exit 2)
    ├── PeerError                   the peer's fault; the message is safe to show it
    │   ├── InvalidRequest          400 / seat error frame `invalid` / SIP 400 (a malformed request)
    │   ├── Unauthorized            401 / close 4001 (a seat's failed login)
    │   ├── Forbidden               403 / seat error frame `forbidden`
    │   ├── NotFound                404 / seat error frame `not_found` / SIP 404 (no flow for the number)
    │   ├── RequestTimeout          408 (an HTTP body that did not arrive in time)
    │   ├── Conflict                409 / seat error frame `conflict` (wrong ticket state)
    │   └── PayloadTooLarge         413 / close 1009 (a seat frame four times the limit)
    └── ServiceUnavailable          503 / close 1013 / SIP 503: Redis unreachable, worker full
        └── QueueFull               503 / close 1013 / SIP 503: a queue at `redis.max_queue_length`

Each error carries a `code` (what peers see, with the error's own message: never a traceback or an
internal detail) and the status it maps to on each wire: `http_status` (every error has one),
`close_code` (the websocket close of a seat, for the errors that end a connection; the rest answer
with an error frame and the seat stays connected: None) and `sip_status` (what a media worker
answers a call it refuses for that reason; None where no SIP request can cause it). The HTTP API
(`gateway/web/http_server.py`), the seats (`gateway/web/seats.py`) and the media worker
(`gateway/voice/worker.py`) take their codes from here, so the table above stays the truth.

Defined beside what raises them (each a subclass above, so it maps as its parent does):
`MalformedMessage` (gateway/messages.py: a message of another process of ours that cannot be read,
logged and dropped), `UnknownFrame` and `BadJson` (gateway/web/seat_protocol.py), `SessionExpired`
(gateway/web/console.py), `SmsDecodeError` (gateway/channels/sms/framing.py) and `SmppDecodeError`
(gateway/channels/sms/smpp.py), answered with the protocol's generic nack, `SmsRejected`
(gateway/channels/sms/link.py: the SMS peer refused a submit, `transient` or not), `UnknownReceipt`
(gateway/channels/outbound.py), `IntakeUnavailable` (gateway/queue/desk.py: carries the message id
under which a retry is safe), `AsrError` (gateway/asr/engine.py), `SipFrontError`
(gateway/sipfront/kamailio.py), `BadImport` (gateway/knowledge/entries.py: every bad line of a
knowledge file named) and `AlreadyTriaged` (gateway/triage/assess.py: a repeat after a crash,
nothing written).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One validation problem, located by field path (`citizen.phone`, `queues[2].max_wait`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "internal"
    http_status = 500
    close_code: int | None = 1011
    sip_status: int | None = 500

    def __init__(self, message: str, fields: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class ConfigError(GatewayError):
    code = "invalid_config"

    def __str__(self) -> str:
        lines = [self.message, *(f"  {field}" for field in self.fields)]
        return "\n".join(lines)


class PeerError(GatewayError):
    """The peer sent something we will not accept; the message is written for the peer."""


class InvalidRequest(PeerError):
    code = "invalid"
    http_status = 400
    close_code = None
    sip_status = 400


class Unauthorized(PeerError):
    code = "unauthorized"
    http_status = 401
    close_code = 4001
    sip_status = None


class Forbidden(PeerError):
    code = "forbidden"
    http_status = 403
    close_code = None
    sip_status = None


class NotFound(PeerError):
    code = "not_found"
    http_status = 404
    close_code = None
    sip_status = 404


class RequestTimeout(PeerError):
    code = "timeout"
    http_status = 408
    close_code = None
    sip_status = None


class Conflict(PeerError):
    code = "conflict"
    http_status = 409
    close_code = None
    sip_status = None


class PayloadTooLarge(PeerError):
    code = "too_large"
    http_status = 413
    close_code = 1009
    sip_status = None


class ServiceUnavailable(GatewayError):
    """We cannot take this now (Redis down, queue full); the peer may retry later."""

    code = "unavailable"
    http_status = 503
    close_code = 1013
    sip_status = 503


class QueueFull(ServiceUnavailable):
    """The ticket's queue holds `redis.max_queue_length` waiting tickets: the store answered, and
    said no (a caller then goes to the flow's overflow at once, not to an apology for an outage)."""
