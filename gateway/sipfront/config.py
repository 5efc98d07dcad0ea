"""`[sipfront]`: Kamailio in front of the media workers, as typed settings.

This module must not import `gateway.config` (which imports it): it has its own small base class
and address checks. Checks that span sections (the voice pool, the agents' SIP URIs) and the
environment (phone passwords) are `front_errors`, run by `sipfront render` and by `run`.

Secrets: an agent phone's SIP password is named here by the environment variable that holds it
(`phones = { "1001" = "HG_SIP_PASSWORD_1001" }`). Kamailio reads the variable itself at start
(`$env`), so the password is never written to the rendered kamailio.cfg either.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from gateway.errors import FieldError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

SipUser = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")]
LogLevel = Literal["error", "warning", "notice", "info", "debug"]

MIN_PASSWORD_LENGTH = 12
KAMAILIO_DEBUG = {"error": -1, "warning": 0, "notice": 1, "info": 2, "debug": 3}

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>[0-9]{1,5})$")
_PLACEHOLDERS = ("changeme", "password", "secret", "123456", "example")


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _host_port(value: str) -> str:
    match = _HOST_PORT.match(value)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError("must be host:port with a port from 1 to 65535, for example 127.0.0.1:5060")
    return value


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be an IP address or network, for example 203.0.113.7 or 10.20.0.0/24") from None


class KamailioConfig(BaseModel):
    """Kamailio (Debian 5.6) as the hotline's SIP front; see docs/deploy.md for each setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False  # `hotline-gateway run` starts and supervises Kamailio
    listen: str = "127.0.0.1:5060"  # UDP; trunks, agent phones and media workers all talk to this
    advertise: str | None = None  # host:port in Record-Route/Via when listen is a private address
    aliases: list[str] = Field(default_factory=list)  # other host:port names this front answers to
    trunks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32"], min_length=1)  # may send calls
    phones: dict[SipUser, EnvName] = Field(default_factory=dict)  # agent phone SIP user -> env var
    workers: list[str] = Field(default_factory=list)  # [] = voice.listen + n, n < voice.embedded_workers
    dir: str = "../var/sipfront"  # kamailio.cfg, dispatcher.list, pid file, control socket
    binary: str = "kamailio"
    kamcmd: str = "kamcmd"
    children: int = Field(default=4, ge=1, le=64)  # UDP receiver processes
    shm_mb: int = Field(default=64, ge=16, le=4096)
    log_level: LogLevel = "notice"
    max_message_bytes: int = Field(default=8192, ge=1024, le=65000)  # larger requests get 513
    pike_window: int = Field(default=2, ge=1, le=60)  # seconds
    pike_requests: int = Field(default=30, ge=1, le=100_000)  # per window per untrusted source IP
    pike_forget: int = Field(default=120, ge=1, le=86_400)  # seconds a flooding IP stays tracked
    fr_timer: float = Field(default=2.0, ge=0.5, le=30)  # s until a worker's first reply, then failover
    fr_inv_timer: float = Field(default=30.0, ge=1, le=300)  # s for an agent phone to answer
    probe_interval: int = Field(default=2, ge=1, le=60)  # s between OPTIONS probes of each worker
    call_load_expire: int = Field(default=3600, ge=60, le=86_400)  # s a call without BYE holds its slot
    register_min_expires: int = Field(default=60, ge=10, le=3600)
    register_default_expires: int = Field(default=600, ge=10, le=86_400)
    register_max_expires: int = Field(default=3600, ge=60, le=86_400)
    failover_tries: int = Field(default=3, ge=1, le=20)  # workers one call is offered to before 503
    restart_delay: float = Field(default=1.0, gt=0, le=60)  # s before a dead Kamailio is started again

    _listen = field_validator("listen")(_host_port)

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: str | None) -> str | None:
        return _host_port(value) if value else None

    @field_validator("aliases", "workers")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_host_port(value) for value in values]

    @field_validator("trunks")
    @classmethod
    def _trunks(cls, values: list[str]) -> list[str]:
        return [_network(value) for value in values]

    def names(self) -> set[str]:
        """Every host:port this front answers to (its own SIP URIs are at one of these)."""
        return {self.listen, *([self.advertise] if self.advertise else []), *self.aliases}


def password_problem(password: str | None) -> str | None:
    if not password:
        return "is not set"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"is shorter than {MIN_PASSWORD_LENGTH} characters"
    if any(word in password.lower() for word in _PLACEHOLDERS):
        return "looks like a placeholder"
    return None


def _uri_host_port(uri: str) -> tuple[str, str]:
    """('1001', '127.0.0.1:5060') from sip:1001@127.0.0.1:5060;transport=udp (port 5060 if none)."""
    match = re.match(r"^sips?:(?P<user>[^@]+)@(?P<host>\[[^\]]+\]|[^:;>]+)(?::(?P<port>\d+))?", uri)
    if not match:
        return "", ""
    return match["user"], f"{match['host']}:{match['port'] or 5060}"


def front_errors(config: GatewayConfig) -> list[FieldError]:
    """Problems only visible with the whole config; empty when the front is disabled."""
    front = config.sipfront
    if not front.enabled:
        return []
    errors: list[FieldError] = []
    if not config.voice.enabled:
        errors.append(FieldError("sipfront.enabled", "the front needs [voice] enabled = true"))
    if not front.workers and config.voice.embedded_workers == 0:
        errors.append(FieldError("sipfront.workers", "empty and voice.embedded_workers is 0: no worker to dispatch to"))
    if front.listen in front.workers:
        errors.append(FieldError("sipfront.workers", f"{front.listen} is the front's own address"))
    names = front.names()
    for index, agent in enumerate(config.agents):
        user, where = _uri_host_port(agent.sip_uri or "")
        if where in names and user not in front.phones:
            message = f"rings {user!r} at the front, but sipfront.phones has no {user!r}"
            errors.append(FieldError(f"agents[{index}].sip_uri", message))
    return errors


def password_errors(front: KamailioConfig, environ: Mapping[str, str]) -> list[FieldError]:
    """Each agent phone's password must be in the environment Kamailio starts with."""
    errors = []
    for user, env in front.phones.items():
        problem = password_problem(environ.get(env))
        if problem:
            errors.append(FieldError(f"sipfront.phones.{user}", f"environment variable {env} {problem}"))
    return errors
