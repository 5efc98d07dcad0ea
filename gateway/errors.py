"""The gateway's exception tree, in one place.

    GatewayError
    ├── ConfigError                 bad configuration: refuse to start (exit 2)
    ├── PeerError                   the peer's fault; the message is safe to show it
    │   ├── InvalidRequest          400 / seat error frame `invalid`
    │   ├── Unauthorized            401 / websocket close 4001
    │   ├── Forbidden               403 / seat error frame `forbidden`
    │   ├── NotFound                404 / seat error frame `not_found`
    │   ├── RequestTimeout          408: the peer did not send what it began in time (an HTTP body)
    │   ├── Conflict                409 / seat error frame `conflict` (wrong ticket state)
    │   └── PayloadTooLarge         413 / websocket close 1009
    └── ServiceUnavailable          503 / websocket close 1013: Redis unreachable, queue full

Each error carries `http_status`, `close_code` and a `code` string; peers only ever see `code` and
the error's own message, never a traceback or an internal detail (see `gateway/web/http.py` and
`gateway/web/seats.py`). SIP statuses join this table with the voice worker.
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
    close_code = 1011
    sip_status = 500

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
    close_code = 1008
    sip_status = 400


class Unauthorized(PeerError):
    code = "unauthorized"
    http_status = 401
    close_code = 4001
    sip_status = 403


class Forbidden(PeerError):
    code = "forbidden"
    http_status = 403
    close_code = 4003
    sip_status = 403


class NotFound(PeerError):
    code = "not_found"
    http_status = 404
    close_code = 1008
    sip_status = 404


class RequestTimeout(PeerError):
    code = "timeout"
    http_status = 408
    close_code = 1008
    sip_status = 408


class Conflict(PeerError):
    code = "conflict"
    http_status = 409
    close_code = 1008
    sip_status = 409


class PayloadTooLarge(PeerError):
    code = "too_large"
    http_status = 413
    close_code = 1009
    sip_status = 513


class ServiceUnavailable(GatewayError):
    """We cannot take this now (Redis down, queue full); the peer may retry later."""

    code = "unavailable"
    http_status = 503
    close_code = 1013
    sip_status = 503
