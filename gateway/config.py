"""The gateway's configuration: one typed model, loaded from TOML, checked as a whole.

`load_config(path)` returns a frozen `GatewayConfig` or raises `ConfigError` listing *every*
problem by field path (`queues[2].max_wait: must be > 0`). It is called once, in `main()`; nothing
reads settings from globals.

Secrets never live in the config: agents' tokens and API keys appear only as hashes
(`sha256:<hex>`), either inline or in the git-ignored credentials file that
`hotline-gateway init-credentials` writes; channel credentials are names of environment variables.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from gateway.asr.settings import AsrSettings
from gateway.errors import ConfigError, FieldError
from gateway.ivr.calendar import Calendar
from gateway.ivr.flow import IvrConfig
from gateway.sipfront.config import KamailioConfig, front_errors, password_errors
from gateway.ticket import MAX_PRIORITY, Channel
from gateway.triage.merge import MergeSettings
from gateway.triage.sensitive import SensitiveWord, normalise
from gateway.triage.surge import SurgeSettings

Name = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
AgentId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")]
SecretHash = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Seconds = Annotated[float, Field(gt=0, le=86400)]

_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>[0-9]{1,5})$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_listen(value: str) -> str:
    match = _LISTEN.match(value)
    if not match or not 0 <= int(match["port"]) < 65536:
        raise ValueError("must be host:port, for example 127.0.0.1:8080 (port 0 = any free port)")
    return value


def split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class HttpConfig(_Section):
    """`[http]`: the intake API's address and how long and how much one HTTP peer may take."""

    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = Field(default=64 * 1024, gt=0, le=16 * 1024 * 1024)
    # The first request's head (request line and headers) must be complete this long after the
    # connection opened, a later one's this long after its first byte: a slow-loris is cut here.
    header_timeout: Seconds = 10.0
    # The body must be complete this long after the head, else 408 and the connection closes.
    body_timeout: Seconds = 30.0
    # An idle keep-alive connection closes after this: above the 15 s clients like aiohttp keep
    # theirs, so a client never sends on a connection the server just closed.
    keepalive_timeout: Seconds = 20.0
    # Open HTTP connections at once; more wait in the kernel's listen backlog until one closes.
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    backlog: int = Field(default=128, ge=1, le=65535)
    # aiohttp's limits on a request line, one header and the number of headers (400 beyond).
    max_line_size: int = Field(default=8190, ge=256, le=1024 * 1024)
    max_field_size: int = Field(default=8190, ge=256, le=1024 * 1024)
    max_headers: int = Field(default=64, ge=8, le=1000)
    # How long an unread body (after an early answer) is read and dropped before the close.
    lingering_time: float = Field(default=2.0, ge=0, le=60)
    # Out of file descriptors: accepting pauses this long (the slow clients may leave meanwhile).
    accept_retry_delay: float = Field(default=0.5, gt=0, le=60)
    # Floods (malformed requests, header timeouts, exhaustion) are logged at most once per interval.
    report_interval: Seconds = 60.0

    _listen = field_validator("listen")(_check_listen)


class SeatsConfig(_Section):
    listen: str = "127.0.0.1:8765"
    offer_timeout: Seconds = 20.0
    reconnect_grace: Seconds = 60.0
    auth_timeout: Seconds = 5.0
    heartbeat_interval: Seconds = 20.0
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    send_queue: int = Field(default=64, ge=4, le=10_000)  # an accept alone sends two frames
    offers_per_agent: int = Field(default=1, ge=1, le=10)
    decline_cooldown: float = Field(default=3.0, ge=0, le=3600)
    max_connections: int = Field(default=2000, ge=1)  # logged-in seats per process
    # Connections that have not sent their hello yet, bounded apart from the seats (so idle sockets
    # cannot keep an agent out): beyond, the longest-waiting one is closed (4002).
    max_pending_logins: int = Field(default=1024, ge=1, le=100_000)
    max_pending_logins_per_address: int = Field(default=64, ge=1, le=100_000)
    # Each agent's journal of the news sent to its seat (gateway/web/journal.py): a returning seat
    # is sent what it missed. This many frames at most (approximately), kept this long after the last.
    journal_length: int = Field(default=1000, ge=10, le=100_000)
    journal_ttl: Seconds = 12 * 3600.0

    _listen = field_validator("listen")(_check_listen)


class EmbeddedRedisConfig(_Section):
    port: int = Field(default=6390, gt=0, lt=65536)
    dir: str = "../var/redis"
    appendfsync: Literal["everysec", "always"] = "everysec"
    binary: str | None = None


class RedisConfig(_Section):
    url: str | None = None
    key_prefix: Name = "hg"
    idempotency_ttl: int = Field(default=7 * 86400, gt=0)
    ticket_ttl: int = Field(default=30 * 86400, gt=0)
    max_queue_length: int = Field(default=100_000, gt=0)
    submitted_maxlen: int = Field(default=1_000_000, gt=0)
    # The ticket-created stream (`hg:created`): trimmed approximately to this many entries; a
    # consumer further behind than this misses the oldest (about four months at Jinan's volume).
    created_maxlen: int = Field(default=1_000_000, gt=0)
    outbox_maxlen: int = Field(default=100_000, gt=0)
    max_connections: int = Field(default=64, ge=2, le=10_000)  # per process; requests wait for one
    # A command (or connecting) slower than this fails its caller with 503: a frozen or unreachable
    # Redis must not hold HTTP requests, and their connections, for ever.
    command_timeout: Seconds = 5.0
    connect_timeout: Seconds = 5.0
    embedded: EmbeddedRedisConfig = EmbeddedRedisConfig()

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None


class QueueConfig(_Section):
    name: Name
    label: str = ""
    skills: list[Name] = Field(min_length=1)
    priority: int = Field(default=0, ge=0, le=MAX_PRIORITY)
    max_wait: Seconds = 300.0
    service_level: Seconds = 20.0
    # Flags every ticket queued here carries (the 政企通 queue: `enterprise`, so its tickets get the
    # enterprise line's priority and 2110 clocks whichever way they came).
    flags: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]] = Field(
        default_factory=list, max_length=8
    )
    # 话后处理: the longest an agent stays in after-call work after this queue's tickets; then the
    # seat goes back to the state it had before (gateway/web/seats.py). 0: no limit.
    wrap_up_limit: float = Field(default=120.0, ge=0, le=3600)


class AgentConfig(_Section):
    id: AgentId
    name: str = ""
    skills: list[Name] = Field(min_length=1)
    sip_uri: Annotated[str, StringConstraints(pattern=r"^sips?:[^\s]+$")] | None = None
    token_hash: SecretHash | None = None
    max_concurrent: int = Field(default=1, ge=1, le=50)


class SupervisorConfig(_Section):
    """`[[supervisors]]`: who may watch the wallboard. Their own credentials, never an agent's
    token; `init-credentials` issues them as it does agents'."""

    id: AgentId
    name: str = ""
    token_hash: SecretHash | None = None


class ApiClientConfig(_Section):
    id: AgentId
    key_hash: SecretHash | None = None
    # The channels whose tickets it may submit and read.
    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["web"]), min_length=1)
    read_only: bool = False  # reads tickets (a supervisor's tools, the work-order system); submits none


SmsProtocol = Literal["smpp", "cmpp"]
Digits = Annotated[str, StringConstraints(pattern=r"^[0-9]*$")]


class SmsChannelConfig(_Section):
    """`[channels.sms]`: the hotline's SMS number, through an SMSC (SMPP 3.4) or China Mobile's
    ISMG (CMPP 3.0); docs/channels.md, "The channel adapter"."""

    enabled: bool = False
    protocol: SmsProtocol = "smpp"
    smsc: str = "127.0.0.1:2775"  # the SMSC's (or the ISMG's) address
    system_id: Annotated[str, StringConstraints(max_length=15)] = ""  # SMPP: the ESME's account
    password_env: EnvName = "HG_SMPP_PASSWORD"  # SMPP: the bind's password; CMPP: the shared secret
    source_addr: Annotated[Digits, StringConstraints(max_length=20)] = ""  # SMPP: the hotline's number
    sp_id: Annotated[str, StringConstraints(max_length=6, pattern=r"^[0-9A-Za-z]*$")] = ""  # CMPP: 企业代码
    service_id: Annotated[str, StringConstraints(max_length=10, pattern=r"^[\x21-\x7e]*$")] = ""  # CMPP: 业务代码
    src_id: Annotated[Digits, StringConstraints(max_length=21)] = ""  # CMPP: the hotline's number (106...)
    window: int | None = Field(default=None, ge=1, le=1000)  # submits awaiting their answer; None: 10 / 16
    send_rate: float = Field(default=100.0, gt=0, le=10_000)  # submits per second, at most
    # SMPP names a message by a fingerprint of its content (it has no id): two identical texts from
    # one citizen in the same or the next `duplicate_window` count as one (a redelivery).
    duplicate_window: Seconds = 600.0

    _smsc = field_validator("smsc")(_check_listen)


class ConversationsConfig(_Section):
    """`[conversations]`: a citizen's follow-up on the same channel joins their open ticket while it
    comes within `window` of their previous message; a ticket keeps its last `max_messages`."""

    window: float = Field(default=86400.0, gt=0, le=30 * 86400)
    max_messages: int = Field(default=200, ge=1, le=10_000)


class FollowupConfig(_Section):
    """`[followup]` (回访): a ticket submitted with an answer for the citizen sends it with the
    satisfaction question; their next message on that channel within `timeout` is the rating,
    none by then is recorded as no answer (docs/channels.md, "回访")."""

    enabled: bool = True
    timeout: float = Field(default=48 * 3600.0, gt=0, le=30 * 86400)


_DAY = 86400.0


class HistoryConfig(_Section):
    """`[history]` (历史工单): each new ticket joins its citizen's index at intake (one per phone,
    WeChat openid, Telegram chat id: `hg:citizen:{identity}`), which keeps the tickets received
    within `window` (s), at most the newest `max_tickets`; the seat page lists the earlier ones and
    marks a ticket 重复来电 / 重复诉求 when one of them came within `repeat_window` (s) before it.
    Triage's 一人多诉 reads the same index (within `[triage.merge] window`)."""

    window: float = Field(default=30 * _DAY, gt=0, le=366 * _DAY)
    max_tickets: int = Field(default=50, ge=1, le=1000)
    repeat_window: float = Field(default=30 * _DAY, gt=0, le=366 * _DAY)


class WechatChannelConfig(_Section):
    enabled: bool = False
    app_id: str = ""
    token_env: EnvName = "HG_WECHAT_TOKEN"
    aes_key_env: EnvName = "HG_WECHAT_AES_KEY"
    app_secret_env: EnvName = "HG_WECHAT_APP_SECRET"


class TelegramChannelConfig(_Section):
    enabled: bool = False
    bot_token_env: EnvName = "HG_TELEGRAM_BOT_TOKEN"
    webhook_secret_env: EnvName = "HG_TELEGRAM_WEBHOOK_SECRET"


class ChannelsConfig(_Section):
    sms: SmsChannelConfig = SmsChannelConfig()
    wechat: WechatChannelConfig = WechatChannelConfig()
    telegram: TelegramChannelConfig = TelegramChannelConfig()


class RoutingConfig(_Section):
    default_queue: Name = "general"
    by_channel: dict[Channel, Name] = Field(default_factory=dict)
    # Flags that raise a ticket's priority to at least the given level (urgent, enterprise, ...):
    # at intake, and when triage flags sensitive words (`sensitive_high`: severity 2,
    # `sensitive_critical`: severity 3; gateway/triage/assess.py).
    flag_priority: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")], int] = Field(
        default_factory=lambda: {"urgent": 5, "enterprise": 7, "sensitive_high": 6, "sensitive_critical": 9}
    )
    # A flagged ticket with no queue of its own goes to this flag's queue (`enterprise`: the 政企通
    # queue, on its own skill).
    flag_queue: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")], Name] = Field(default_factory=dict)
    # The enterprise line (政企通, 四优先): contacts from these numbers are flagged `enterprise`
    # (a registered company's phones; the mini program flags its own, a DID its flow's queue).
    enterprise_phones: list[Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]] = Field(
        default_factory=list, max_length=100_000
    )


MAX_WORKERS = 256


class WorkerPoolConfig(_Section):
    """`[voice.pool]`: the media workers `run` keeps, scaled by load between min and max (docs/deploy.md).

    Scaling keeps `spare_callers` free caller slots ready: fewer, and a worker is started (then
    switched on in Kamailio's dispatcher once its heartbeat shows it listening); more than a whole
    worker's worth for `scale_down_after` seconds, and the least busy one is switched off in the
    dispatcher, left to finish its calls, then stopped. Needs the embedded [sipfront].
    """

    min_workers: int | None = Field(default=None, ge=0, le=MAX_WORKERS)  # None: embedded_workers
    max_workers: int | None = Field(default=None, ge=0, le=MAX_WORKERS)  # None: embedded_workers (no scaling)
    spare_callers: int = Field(default=2, ge=0, le=100_000)
    scale_down_after: Seconds = 60.0
    check_interval: Seconds = 1.0


class VoiceConfig(_Section):
    """The voice channel: media workers (pjsua2), IVR flows, prompts and recordings."""

    enabled: bool = False
    listen: str = "127.0.0.1:5070"  # the SIP address of a single media worker (`media-worker`)
    calls_per_worker: int = Field(default=4, ge=2, le=1000)  # call legs; the pjsua2 wheel caps at 4
    flows: list[str] = Field(default_factory=lambda: ["flows/12345.toml"], min_length=1)
    numbers: dict[Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z+*#._-]{1,32}$")], str] = Field(
        default_factory=dict
    )
    default_flow: str | None = None  # for called numbers not in `numbers`; None: answer 404
    prompts_dir: str = "../var/prompts"
    recordings_dir: str = "../recordings"
    recording_retention_days: int = Field(default=180, ge=1)
    agent_answer_timeout: Seconds = 20.0
    max_position_announced: int = Field(default=30, ge=1, le=999)
    live_audio_frames: int = Field(default=250, ge=10, le=100_000)  # ring per call, 20 ms frames
    # Live audio taken off PJSIP's bridge by a port in C (no GIL there); false: the Python port
    # (pj.AudioMediaPort), also used when the C module is not built. docs/voice.md, "Live audio".
    # The module's other helpers (timer-driven polling, the media poller) do not depend on this.
    native_live_audio: bool = True
    # RTP is read every this many ms while a worker has calls, by the C module's poller instead of
    # PJSIP's media thread (one wake-up per packet, 100 a second when idle); 0 keeps PJSIP's thread.
    media_poll_ms: int = Field(default=20, ge=0, le=40)
    heartbeat_interval: Seconds = 1.0
    worker_timeout: Seconds = 5.0
    # s between PJSIP polls while a worker has calls, when PJSIP's timer heap cannot be read (the C
    # module missing): only PJSIP's timers (SIP retransmissions) wait for it; SIP messages, DTMF and
    # prompt ends wake the loop at once (docs/voice.md).
    poll_interval: float = Field(default=0.1, gt=0, le=1.0)
    # s between polls otherwise: PJSIP's own timers are polled when due (read from its timer heap),
    # so this bounds only a timer one of PJSIP's threads scheduled; a SIP request wakes the loop at once
    idle_poll_interval: float = Field(default=1.0, gt=0, le=5)
    callback_priority: int = Field(default=0, ge=0, le=MAX_PRIORITY)
    embedded_workers: int = Field(default=1, ge=0, le=MAX_WORKERS)  # `run` starts these at boot, on listen port + n
    # Worker ids are `{prefix}w{n}`: give each host its own prefix, ids are keys in the shared Redis.
    worker_id_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,24}$")
    pool: WorkerPoolConfig = Field(default_factory=lambda: WorkerPoolConfig())
    # RTP: worker n (SIP on listen port + n) binds rtp_port_base + n * rtp_ports_per_worker onwards.
    rtp_port_base: int = Field(default=10000, ge=1024, le=65000)
    rtp_ports_per_worker: int = Field(default=16, ge=8, le=1000)  # 4 legs use 8 (RTP + RTCP each)

    _listen = field_validator("listen")(_check_listen)

    @model_validator(mode="after")
    def _pool_bounds(self) -> VoiceConfig:
        low, high = self.pool_bounds()
        if not low <= self.embedded_workers <= high:
            raise ValueError(
                f"voice.pool needs min_workers ({low}) <= embedded_workers ({self.embedded_workers}) "
                f"<= max_workers ({high})"
            )
        slots = max(high, 1)
        rtp = range(self.rtp_port_base, self.rtp_port_base + slots * self.rtp_ports_per_worker)
        sip_first = split_listen(self.listen)[1]
        if rtp.stop > 65536:
            raise ValueError(f"RTP ports of {slots} workers from rtp_port_base {self.rtp_port_base} pass 65535")
        if sip_first and sip_first < rtp.stop and sip_first + slots > rtp.start:
            raise ValueError(
                f"the workers' SIP ports {sip_first}..{sip_first + slots - 1} overlap their RTP ports "
                f"{rtp.start}..{rtp.stop - 1}: move listen or rtp_port_base"
            )
        return self

    def pool_bounds(self) -> tuple[int, int]:
        """(min, max) workers `run` keeps; both default to embedded_workers (a fixed pool)."""
        low = self.embedded_workers if self.pool.min_workers is None else self.pool.min_workers
        high = self.embedded_workers if self.pool.max_workers is None else self.pool.max_workers
        return low, high

    def rtp_ports(self, sip_port: int) -> tuple[int, int]:
        """(first port, range) for the worker whose SIP port is `sip_port`: its own block when it
        follows the pool's rule (listen port + n), else a scan over every block."""
        slot = sip_port - split_listen(self.listen)[1]
        if 0 <= slot < MAX_WORKERS:
            return self.rtp_port_base + slot * self.rtp_ports_per_worker, self.rtp_ports_per_worker
        return self.rtp_port_base, min(65535 - self.rtp_port_base, MAX_WORKERS * self.rtp_ports_per_worker)

    @property
    def autoscaled(self) -> bool:
        low, high = self.pool_bounds()
        return high > low


class AsrConfig(AsrSettings):
    """Speech recognition for the voice channel (`[asr]`): the engine settings plus how calls use it."""

    enabled: bool = False
    # Keep transcribing after the agent answered (the caller's leg, labelled `caller`).
    after_answer: bool = False
    # Speech navigation (flows' speech_route nodes) uses a closed grammar: its own recognizer.
    navigation_enabled: bool = True
    navigation_engine: Literal["pocketsphinx", "vosk"] = "pocketsphinx"


class ConsoleConfig(_Section):
    """`[console]`: the web console's login sessions and the one-time tickets its seat page logs
    in with (gateway/web/console.py)."""

    session_ttl: Seconds = 12 * 3600.0  # a login lasts this long (a shift), then the agent logs in again
    ticket_ttl: float = Field(default=30.0, gt=0, le=300)  # a seat ticket unused this long is void
    # Origins (scheme://host:port) whose pages may log in and open a seat; empty: the one
    # `http.listen` serves (with localhost beside 127.0.0.1). List them behind a proxy or on 0.0.0.0.
    allowed_origins: list[Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+$")]] = Field(
        default_factory=list
    )


_OFFICE_DAY = ("08:30-12:00", "13:30-17:30")


def _office_calendar() -> Calendar:
    return Calendar.model_validate({"weekly": dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), _OFFICE_DAY)})


class DeadlinesConfig(_Section):
    """`[deadlines]` (红黄绿三色预警, gateway/triage/deadlines.py): a clock turns yellow once this
    share of its time is used; working-day limits count on `calendar` (the departments' office
    hours, holidays and 调休 make-up working days; list each year's State Council notice)."""

    yellow_share: float = Field(default=0.8, gt=0, lt=1)
    calendar: Calendar = Field(default_factory=_office_calendar)

    @field_validator("calendar")
    @classmethod
    def _has_working_days(cls, value: Calendar) -> Calendar:
        if value.always_open:
            raise ValueError("working days need office hours: always_open counts no working day")
        return value


class SensitiveConfig(_Section):
    """`[sensitive]` (敏感词库, gateway/triage/sensitive.py): the words, each with its category,
    severity, pinyin spellings and the harmless phrases around it; a match quotes `context_chars`
    of the text on each side; a scan reports at most `max_matches`."""

    words: list[SensitiveWord] = Field(default_factory=list, max_length=100_000)
    context_chars: int = Field(default=20, ge=0, le=200)
    max_matches: int = Field(default=32, ge=1, le=1000)

    @model_validator(mode="after")
    def _distinct(self) -> SensitiveConfig:
        forms = Counter(normalise(word.word).text for word in self.words)
        twice = sorted(form for form, count in forms.items() if count > 1)
        if twice:
            raise ValueError(f"words: listed twice (after folding width, case and spaces): {', '.join(twice)}")
        return self


MOBILE_DIGITS = 11


class PagingSettings(BaseModel):
    """`[triage.paging]`: the supervisors' mobile numbers paged (by `channel`, SMS) when triage
    finds sensitive words of at least `min_severity` on a ticket. Off until numbers are given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    channel: str = Field(default="sms", pattern=r"^sms$")  # the channel that reaches a mobile phone
    phones: tuple[str, ...] = Field(default=(), max_length=20)
    min_severity: int = Field(default=3, ge=1, le=3)

    @field_validator("phones")
    @classmethod
    def _mobiles(cls, phones: tuple[str, ...]) -> tuple[str, ...]:
        for phone in phones:
            if not (len(phone) == MOBILE_DIGITS and phone.isdigit() and phone[0] == "1" and phone[1] in "3456789"):
                raise ValueError("each phone must be a mainland mobile number (11 digits, 1[3-9]...)")
        return phones

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.phones)


class TriageConfig(_Section):
    """`[triage]` (gateway/triage/service.py): the consumer that suggests each new ticket's
    categories (分派目录) beside intake. `catalogue` is the dispatch catalogue (TOML, required when
    enabled) and `examples` the labelled contacts it learns from ('': the set shipped with the
    gateway), both relative to the config file. Each read takes up to `batch` tickets; every
    `claim_every` seconds, tickets a stopped consumer left unacknowledged for `claim_idle` seconds
    are taken over. Submitted tickets' categories are kept as labelled contacts, the newest
    `labels_maxlen`. Every `escalate_every` seconds the 督办 loop sends the events due, looking at
    up to `escalate_batch` tickets a round trip. `merge`: 主单 + 子单 and the gazetteer (docs/triage.md)."""

    enabled: bool = False
    # The core process triages too (one more consumer); false: only `hotline-gateway triage`
    # processes do, and the core's event loop keeps to intake, seats and the queue.
    in_core: bool = True
    catalogue: str = ""
    examples: str = ""
    batch: int = Field(default=100, ge=1, le=1000)
    claim_idle: float = Field(default=30.0, ge=0, le=86400)
    claim_every: Seconds = 60.0
    # Agents' final categories kept as labelled contacts (`hg:triage:labels`, MAXLEN ~).
    labels_maxlen: int = Field(default=100_000, gt=0)
    # What citizens said after intake (final transcript segments, follow-up messages), for triage
    # to scan again (`hg:said`, MAXLEN ~): a consumer further behind misses the oldest.
    said_maxlen: int = Field(default=100_000, gt=0)
    # 督办 (gateway/triage/escalate.py): how often the tickets whose events fell due are looked at
    # (an event goes out at most this late), and how many are read at once (the rest right after).
    escalate_every: Seconds = 60.0
    escalate_batch: int = Field(default=100, ge=1, le=1000)
    # 主单 + 子单 (gateway/triage/merge.py): similar tickets of one category on one street within
    # a window become 子单 of the first; the gazetteer (`[[triage.merge.districts]]`) names places.
    merge: MergeSettings = MergeSettings()
    # 集中爆发 (gateway/triage/surge.py): a category at a place counted over a window against its usual.
    surge: SurgeSettings = SurgeSettings()
    # Sensitive words at `min_severity` page these supervisors by SMS (gateway/triage/paging.py).
    paging: PagingSettings = PagingSettings()

    @model_validator(mode="after")
    def _catalogue_when_enabled(self) -> TriageConfig:
        if self.enabled and not self.catalogue:
            raise ValueError("catalogue: required when triage is enabled (the dispatch catalogue's TOML file)")
        return self


class KnowledgeConfig(_Section):
    """`[knowledge]` (知识库, gateway/knowledge/): the knowledge base the mini program's self-service
    search (`GET /api/v1/knowledge/search`) answers from. `database` is its SQLite file and
    `entries` a JSONL or CSV file imported when the database has no version yet ('': none), both
    relative to the config file; `synonyms` adds groups of words to the built-in table (one group a
    line, ''/none: the built-in table only). A search answers at most `limit` entries; a query
    longer than `max_query_chars` is refused (400)."""

    enabled: bool = False
    database: str = "../var/knowledge.sqlite3"
    entries: str = ""
    synonyms: str = ""
    limit: int = Field(default=3, ge=1, le=20)
    max_query_chars: int = Field(default=200, ge=1, le=4000)


class GatewayConfig(_Section):
    http: HttpConfig = HttpConfig()
    seats: SeatsConfig = SeatsConfig()
    redis: RedisConfig = RedisConfig()
    routing: RoutingConfig = RoutingConfig()
    queues: list[QueueConfig] = Field(min_length=1)
    agents: list[AgentConfig] = Field(default_factory=list)
    supervisors: list[SupervisorConfig] = Field(default_factory=list)
    api_clients: list[ApiClientConfig] = Field(default_factory=list)
    channels: ChannelsConfig = ChannelsConfig()
    conversations: ConversationsConfig = ConversationsConfig()
    followup: FollowupConfig = FollowupConfig()
    history: HistoryConfig = HistoryConfig()
    console: ConsoleConfig = ConsoleConfig()
    voice: VoiceConfig = VoiceConfig()
    sipfront: KamailioConfig = KamailioConfig()
    asr: AsrConfig = AsrConfig()
    deadlines: DeadlinesConfig = DeadlinesConfig()
    sensitive: SensitiveConfig = SensitiveConfig()
    triage: TriageConfig = TriageConfig()
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    credentials_file: str | None = None
    # Filled by `parse_config` from the files `voice.flows` names (flow id -> flow and calendars).
    ivr: dict[str, IvrConfig] = Field(default_factory=dict, exclude=True)
    # Directory of the config file; relative paths in the config are resolved against it.
    base_dir: str = "."

    @model_validator(mode="after")
    def _paging_has_its_channel(self) -> GatewayConfig:
        # A page waits in its channel's outbox for that channel's sender: without one, it never goes.
        if self.triage.paging.active and not self.channels.sms.enabled:
            raise ValueError("triage.paging: pages go by SMS; enable [channels.sms] or turn paging off")
        return self

    def queue(self, name: str) -> QueueConfig:
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(name)

    def agent(self, agent_id: str) -> AgentConfig | None:
        """The agent with this id, if the config has one."""
        return next((agent for agent in self.agents if agent.id == agent_id), None)

    def queues_for_skills(self, skills: list[str]) -> list[QueueConfig]:
        """The queues an agent with these skills serves: any shared skill is enough."""
        return [q for q in self.queues if set(q.skills) & set(skills)]

    def resolve(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else (Path(self.base_dir) / candidate).resolve()


class LiveConfig:
    """The one holder of the configuration a process runs with, and its version.

    Services keep the holder, not the config, and read `current` when they need a setting, so the
    admin API to come can swap in a new validated config without a restart (`swap`). What is bound
    at start stays as it was until the next start: listen addresses, the Redis URL and key prefix,
    the media worker pool. `version` counts swaps (1 at start; `/readyz` reports it).
    """

    def __init__(self, config: GatewayConfig) -> None:
        self._current = config
        self.version = 1
        self._listeners: list[Callable[[GatewayConfig, int], None]] = []

    @classmethod
    def of(cls, config: GatewayConfig | LiveConfig) -> LiveConfig:
        return config if isinstance(config, LiveConfig) else cls(config)

    @property
    def current(self) -> GatewayConfig:
        return self._current

    def swap(self, config: GatewayConfig) -> int:
        """Make `config` (validated by `parse_config`) the current one; listeners hear of it."""
        self._current = config
        self.version += 1
        for listener in list(self._listeners):
            listener(config, self.version)
        return self.version

    def on_swap(self, listener: Callable[[GatewayConfig, int], None]) -> None:
        self._listeners.append(listener)


def hash_secret(secret: str) -> str:
    """Tokens and API keys are random (see `generate_secret`), so one SHA-256 suffices."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(secret: str, stored_hash: str | None) -> bool:
    if not stored_hash:
        return False
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


def format_path(location: tuple[str | int, ...]) -> str:
    """('queues', 2, 'max_wait') -> 'queues[2].max_wait'."""
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_HINTS = {
    "extra_forbidden": "unknown key; check its spelling against config/gateway.toml",
    "missing": "required",
    "string_pattern_mismatch": "has the wrong form",
}


def validation_errors(error: ValidationError) -> list[FieldError]:
    found = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        if item["type"] in _HINTS:
            message = f"{message} ({_HINTS[item['type']]})"
        if item["type"] == "string_pattern_mismatch":
            message = f"{message}: {item.get('ctx', {}).get('pattern', '')}"
        found.append(FieldError(format_path(tuple(item["loc"])), message))
    return found


def _duplicates(values: list[str]) -> set[str]:
    return {value for value, count in Counter(values).items() if count > 1}


def semantic_errors(config: GatewayConfig) -> list[FieldError]:
    """Problems that span fields: duplicates and references to queues that do not exist."""
    errors = []
    named: tuple[tuple[str, list[str]], ...] = (
        ("queues", [queue.name for queue in config.queues]),
        ("agents", [agent.id for agent in config.agents]),
    )
    for section, keys in named:
        dupes = _duplicates(keys)
        errors += [FieldError(f"{section}[{i}]", f"duplicate {key!r}") for i, key in enumerate(keys) if key in dupes]
    client_dupes = _duplicates([client.id for client in config.api_clients])
    errors += [
        FieldError(f"api_clients[{i}].id", f"duplicate {c.id!r}")
        for i, c in enumerate(config.api_clients)
        if c.id in client_dupes
    ]
    names = {queue.name for queue in config.queues}
    if config.routing.default_queue not in names:
        errors.append(FieldError("routing.default_queue", f"no queue named {config.routing.default_queue!r}"))
    for channel, queue in config.routing.by_channel.items():
        if queue not in names:
            errors.append(FieldError(f"routing.by_channel.{channel}", f"no queue named {queue!r}"))
    for flag, queue in config.routing.flag_queue.items():
        if queue not in names:
            errors.append(FieldError(f"routing.flag_queue.{flag}", f"no queue named {queue!r}"))
    for index, queue_config in enumerate(config.queues):
        if queue_config.service_level > queue_config.max_wait:
            errors.append(FieldError(f"queues[{index}].service_level", "must be <= max_wait"))
    queue_skills = {skill for queue in config.queues for skill in queue.skills}
    for index, agent in enumerate(config.agents):
        if not config.queues_for_skills(agent.skills):
            errors.append(FieldError(f"agents[{index}].skills", "match no queue's skills; the agent would get nothing"))
        else:
            errors += [
                FieldError(f"agents[{index}].skills[{position}]", f"no queue has the skill {skill!r} (a typo?)")
                for position, skill in enumerate(agent.skills)
                if skill not in queue_skills
            ]
        if agent.token_hash is None:
            errors.append(FieldError(f"agents[{index}].token_hash", "missing; run `hotline-gateway init-credentials`"))
    for index, supervisor in enumerate(config.supervisors):
        if supervisor.token_hash is None:
            errors.append(
                FieldError(f"supervisors[{index}].token_hash", "missing; run `hotline-gateway init-credentials`")
            )
    errors += history_errors(config)
    errors += voice_errors(config)
    errors += sms_errors(config.channels.sms)
    errors += front_errors(config)
    for index, client in enumerate(config.api_clients):
        if client.key_hash is None:
            errors.append(
                FieldError(f"api_clients[{index}].key_hash", "missing; run `hotline-gateway init-credentials`")
            )
    return errors


def history_errors(config: GatewayConfig) -> list[FieldError]:
    """The citizen's index outlives none of what it names, and holds what its readers look for."""
    history, merge = config.history, config.triage.merge
    errors = []
    if history.window > config.redis.ticket_ttl:
        # Beyond it, a settled ticket the index names may be gone: the list would have holes.
        errors.append(FieldError("history.window", f"must be <= redis.ticket_ttl ({config.redis.ticket_ttl} s)"))
    if history.repeat_window > history.window:
        errors.append(FieldError("history.repeat_window", "must be <= history.window (the index keeps no more)"))
    if config.triage.enabled and merge.enabled:
        # 一人多诉 reads the same index: it must keep what the merge step looks for.
        if history.window < merge.window:
            errors.append(FieldError("history.window", f"must be >= triage.merge.window ({merge.window:g} s)"))
        if history.max_tickets < merge.max_citizen:
            least = f"must be >= triage.merge.max_citizen ({merge.max_citizen})"
            errors.append(FieldError("history.max_tickets", least))
    return errors


_SMS_REQUIRED: dict[SmsProtocol, tuple[str, ...]] = {
    "smpp": ("system_id", "source_addr"),
    "cmpp": ("sp_id", "service_id", "src_id"),
}


def sms_errors(sms: SmsChannelConfig) -> list[FieldError]:
    """An enabled SMS channel names what its protocol logs in with and sends from."""
    if not sms.enabled:
        return []
    return [
        FieldError(f"channels.sms.{name}", f"required with protocol = {sms.protocol!r}")
        for name in _SMS_REQUIRED[sms.protocol]
        if not getattr(sms, name)
    ]


def voice_errors(config: GatewayConfig) -> list[FieldError]:
    voice = config.voice
    names = {queue.name for queue in config.queues}
    errors = []
    if voice.autoscaled and (not config.sipfront.enabled or config.sipfront.workers):
        # Scaling switches workers on and off in the dispatcher of the Kamailio `run` supervises.
        message = "scaling between min_workers and max_workers needs [sipfront] enabled with workers = []"
        errors.append(FieldError("voice.pool.max_workers", message))
    for number, flow_id in voice.numbers.items():
        if flow_id not in config.ivr:
            errors.append(FieldError(f"voice.numbers.{number}", f"no flow {flow_id!r} in voice.flows"))
    if voice.default_flow is not None and voice.default_flow not in config.ivr:
        errors.append(FieldError("voice.default_flow", f"no flow {voice.default_flow!r} in voice.flows"))
    for flow_id, ivr in config.ivr.items():
        for node_id, node in ivr.flow.nodes.items():
            queue = getattr(node, "queue", None)
            if node.type == "queue" and queue not in names:
                errors.append(FieldError(f"flow {flow_id}.nodes.{node_id}.queue", f"no queue named {queue!r}"))
        if ivr.flow.human_queue not in names:
            errors.append(FieldError(f"flow {flow_id}.human_queue", f"no queue named {ivr.flow.human_queue!r}"))
    return errors


def load_flows(voice: VoiceConfig, base_dir: Path) -> tuple[dict[str, IvrConfig], list[FieldError]]:
    """Read every flow file; each holds an `[ivr]` table (a flow and its calendars)."""
    flows: dict[str, IvrConfig] = {}
    errors: list[FieldError] = []
    for index, name in enumerate(voice.flows):
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        where = f"voice.flows[{index}]"
        try:
            raw = read_toml(path)
            ivr = IvrConfig.model_validate(raw.get("ivr"))
        except ConfigError as exc:
            errors.append(FieldError(where, exc.message))
            continue
        except ValidationError as exc:
            errors += [FieldError(f"{where} ({path.name}): {e.path}", e.message) for e in validation_errors(exc)]
            continue
        if ivr.flow.id in flows:
            errors.append(FieldError(where, f"a second flow with id {ivr.flow.id!r}"))
        flows[ivr.flow.id] = ivr
    return flows, errors


def environment_errors(config: GatewayConfig, environ: Mapping[str, str]) -> list[FieldError]:
    """Enabled channels need their secrets in the environment (the config only names them), and so
    do the agent phones that register at the SIP front (Kamailio reads them when it starts)."""
    errors = password_errors(config.sipfront, environ) if config.sipfront.enabled else []
    for channel_name in ("sms", "wechat", "telegram"):
        channel = getattr(config.channels, channel_name)
        if not channel.enabled:
            continue
        for field, value in channel:
            if field.endswith("_env") and not environ.get(value):
                errors.append(
                    FieldError(f"channels.{channel_name}.{field}", f"environment variable {value} is not set")
                )
    sms = config.channels.sms
    if sms.enabled and sms.protocol == "smpp" and len(environ.get(sms.password_env, "")) > 8:
        errors.append(FieldError("channels.sms.password_env", "an SMPP 3.4 password is at most 8 characters"))
    return errors


# Each section whose items carry a secret's hash, and that field (`init-credentials` fills them).
CREDENTIAL_FIELDS = (("agents", "token_hash"), ("supervisors", "token_hash"), ("api_clients", "key_hash"))


def _merge_credentials(raw: dict[str, Any], credentials: dict[str, Any]) -> None:
    """Fill missing hashes from the credentials file (`[agents] "1001" = "sha256:..."`)."""
    for section, field in CREDENTIAL_FIELDS:
        hashes = credentials.get(section, {})
        for item in raw.get(section, []):
            if isinstance(item, dict) and not item.get(field) and str(item.get("id")) in hashes:
                item[field] = hashes[str(item["id"])]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def parse_config(
    raw: dict[str, Any], base_dir: Path, source: str = "config", environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate a whole config; `ConfigError` lists every problem found, in one run.

    Problems of form (a key misspelt, a value of the wrong type) do not hide the problems between
    fields (a reference to a queue that does not exist, a skill no queue has), nor the secrets
    missing from `environ` (when given): the later kinds are checked on what remains once the
    fields of the first kind are set aside. A problem that leaves nothing to check against (the
    queues themselves unreadable) says that later checks were skipped.
    """
    config, problems = _checked(raw, base_dir, source)
    if config is not None and environ is not None:
        problems += environment_errors(config, environ)
    if problems:
        if config is None:
            problems.append(FieldError("", "(checks across fields skipped: fix the problems above first)"))
        raise ConfigError(f"{source}: invalid configuration", tuple(problems))
    assert config is not None
    return config


def _checked(raw: dict[str, Any], base_dir: Path, source: str) -> tuple[GatewayConfig | None, list[FieldError]]:
    """The config (with malformed fields set aside when there were any) and every problem found."""
    raw = dict(raw)
    raw["base_dir"] = str(base_dir)
    credentials_file = raw.get("credentials_file")
    if isinstance(credentials_file, str):
        path = Path(credentials_file) if Path(credentials_file).is_absolute() else base_dir / credentials_file
        if path.exists():
            _merge_credentials(raw, read_toml(path))
    if "ivr" in raw:
        raise ConfigError(
            f"{source}: invalid configuration",
            (FieldError("ivr", "flows live in the files voice.flows lists"),),
        )
    problems: list[FieldError] = []
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = validation_errors(exc)
        pruned = _without_invalid_fields(raw, exc)
        if pruned is None:
            return None, problems
        config = pruned
    if config.voice.enabled:
        flows, flow_problems = load_flows(config.voice, base_dir)
        problems += flow_problems
        config = config.model_copy(update={"ivr": flows})
    reported = {problem.path for problem in problems}
    # A field already reported (a malformed token hash, say) is not reported again as missing.
    problems += [problem for problem in semantic_errors(config) if problem.path not in reported]
    return config, problems


def _without_invalid_fields(raw: dict[str, Any], error: ValidationError, rounds: int = 8) -> GatewayConfig | None:
    """The config with every field that failed validation removed (so its default applies; an entry
    missing a required field goes as a whole), or None when nothing valid is left to check."""
    pruned: Any = copy.deepcopy(raw)
    for _ in range(rounds):
        locations = [tuple(item["loc"]) for item in error.errors(include_url=False)]
        for location in sorted(locations, key=_deepest_last_index_first):
            if not location or not _remove(pruned, location):
                return None
        try:
            return GatewayConfig.model_validate(pruned)
        except ValidationError as again:
            error = again
    return None


def _deepest_last_index_first(location: tuple[Any, ...]) -> tuple[int, tuple[Any, ...]]:
    # Removing queues[3] before queues[1] keeps the index of queues[1] right.
    return (-len(location), tuple(-part if isinstance(part, int) else 0 for part in location))


def _remove(data: Any, location: tuple[Any, ...]) -> bool:
    """Delete data[location]; a field that is missing takes its parent entry with it."""
    *parents, last = location
    if last == "[key]":  # a mapping's key failed: the entry goes
        return _remove(data, tuple(parents))
    node = data
    for part in parents:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return True  # already gone with an enclosing entry
    try:
        if isinstance(node, dict) and last not in node:
            return _remove(data, tuple(parents)) if parents else False
        del node[last]
    except (KeyError, IndexError, TypeError):
        return True
    return True


def load_config(
    path: str | Path, environ: Mapping[str, str] | None = None, *, check_environment: bool = True
) -> GatewayConfig:
    """The config `run` runs with, checked exactly as `run` checks it (`check-config` is this call).
    `check_environment=False` leaves out the secrets the environment must hold (for commands that
    only write files, such as `sipfront render`, which warns about them instead)."""
    path = Path(path)
    environment = (os.environ if environ is None else environ) if check_environment else None
    return parse_config(read_toml(path), path.resolve().parent, str(path), environment)
