"""The gateway core process: assembles queue, dispatcher, seats and HTTP as services, and runs them.

`Gateway` is built from a validated config and a Redis client (both made in `main()`), so tests
build it the same way against their own Redis. Its services (`gateway.shell.services`): supervised
loops (the dispatcher, a Pub/Sub listener for wake-ups and logins from other processes, the reaper
of lapsed offers, leases, dead workers and unanswered 回访 questions, the lease refresher for seats
connected here), the HTTP API and the seats' websocket server; channel adapters join with
`Gateway.add`. `/readyz` reports each one's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, serve

from gateway import messages
from gateway.channels.contract import ChannelIntake
from gateway.channels.followup_desk import FollowupDesk
from gateway.channels.sms_channel import SmsChannel
from gateway.config import GatewayConfig, LiveConfig, RedisConfig, split_listen
from gateway.errors import ServiceUnavailable
from gateway.keys import Keys
from gateway.queue import TicketQueue
from gateway.shell.redis_wire import connection_class
from gateway.shell.services import Health, Loop, Report, Service, Services
from gateway.shell.supervisor import RUN_ID_ENV
from gateway.shell.tasks import Tasks, stop_if_cancelled
from gateway.ticket import utcnow
from gateway.triage.service import Triage, build_triager
from gateway.voice.link import VoiceLink
from gateway.web.http import start_http
from gateway.web.http_server import throttle_accept_errors
from gateway.web.seats import Dispatcher, SeatServer
from gateway.web.wallboard import Wallboard

log = logging.getLogger("gateway")


def redis_client(url: str, config: RedisConfig) -> aioredis.Redis:
    """A client whose pool waits for a free connection (up to 5 s) instead of failing at once
    when every connection is busy (redis-py's default pool raises MaxConnectionsError), and whose
    commands fail after `redis.command_timeout` (a frozen Redis must not hold requests for ever).

    It does not retry by itself: redis-py would run any command again after a connection error,
    and not every queue script is safe to repeat. The queue retries those that are, once, on a
    fresh connection (gateway/queue/batching.py)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        connection_class=connection_class(url),
        max_connections=config.max_connections,
        timeout=5,
        socket_timeout=config.command_timeout,
        socket_connect_timeout=config.connect_timeout,
    )
    return aioredis.Redis(connection_pool=pool)


@dataclass(frozen=True, slots=True)
class Bound:
    http: tuple[str, int]
    seats: tuple[str, int]


class HttpService:
    """The HTTP API as a service: up from its start until its stop."""

    name = "http"

    def __init__(
        self, live: LiveConfig, queue: TicketQueue, report: Callable[[], Report], wallboard: Wallboard | None = None
    ) -> None:
        self._live = live
        self._queue = queue
        self._report = report
        self._wallboard = wallboard
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = await start_http(self._live, self._queue, self._report, self._wallboard)
        throttle_accept_errors(asyncio.get_running_loop(), self._live.current.http.report_interval)

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()

    def health(self) -> Health:
        return Health("up" if self.runner is not None else "stopped")

    @property
    def address(self) -> tuple[str, int]:
        assert self.runner is not None, "not started"
        host, port = self.runner.addresses[0][:2]
        return host, port


class SeatsService:
    """The seats' websocket server as a service. Stopping it closes every seat (their offers go
    back to the queue)."""

    name = "seats"

    def __init__(self, live: LiveConfig, seats: SeatServer) -> None:
        self._live = live
        self._seats = seats
        self.server: Server | None = None

    async def start(self) -> None:
        cfg = self._live.current.seats
        host, port = split_listen(cfg.listen)
        self.server = await serve(
            self._seats.handle,
            host,
            port,
            # Frames up to 4x the limit are read and answered with an error frame; beyond, close 1009.
            max_size=cfg.max_frame_bytes * 4,
            max_queue=16,
            write_limit=64 * 1024,
            # The opening handshake, before the seat's waiting room counts it, is bounded in time.
            open_timeout=cfg.auth_timeout,
            ping_interval=cfg.heartbeat_interval,
            ping_timeout=cfg.heartbeat_interval,
            close_timeout=2,
            # Frames are small JSON on a local network: deflate would cost CPU for little gain.
            compression=None,
        )

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()

    def health(self) -> Health:
        return Health("up" if self.server is not None else "stopped")

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None, "not started"
        host, port = next(iter(self.server.sockets)).getsockname()[:2]
        return host, port


class Gateway:
    """The core process's services, in start order: the background loops (dispatcher, pub/sub,
    reaper, leases), then HTTP, then the seats (stopped in reverse: seats first, so their offers
    go back before anything else stops). Channel adapters are added with `add` before `start`; the
    enabled channels of the config are added here, their secrets read from `environ`."""

    def __init__(
        self, config: GatewayConfig | LiveConfig, client: aioredis.Redis, environ: Mapping[str, str] | None = None
    ) -> None:
        self.live = LiveConfig.of(config)
        config = self.live.current
        self.redis = client
        self.queue = TicketQueue(client, self.live)
        self.voice = VoiceLink(self.queue)
        self.desk = self.voice.desk
        self.tasks = Tasks()
        self.followups = FollowupDesk(self.queue)  # 回访: the reaper records unanswered questions
        self.dispatcher = Dispatcher(self.queue, self.live, self.tasks)
        self.seats = SeatServer(self.live, self.queue, self.dispatcher, self.tasks)
        # The supervisors' wall: one computation for every supervisor watching this process.
        self.wallboard = Wallboard(self.live, self.queue, self._seat_states)
        self.http = HttpService(self.live, self.queue, self.report, self.wallboard)
        self.seat_server = SeatsService(self.live, self.seats)
        self.services = Services(
            [
                Loop("dispatcher", self.dispatcher.run),
                Loop("pubsub", self._listen),
                Loop("reaper", self._reap),
                Loop("leases", self._hold_leases),
                Loop("wallboard", self.wallboard.run),
                Loop("wallboard-intake", self.wallboard.count_intake),
            ]
        )
        self._tail: list[Service] = [self.http, self.seat_server]
        # Dispatch suggestions beside intake (its own consumer group on the ticket-created stream).
        self.triage: Triage | None = None
        if config.triage.enabled and config.triage.in_core:
            self.triage = Triage(self.live, self.queue, build_triager(config))
            self.add(Loop("triage", self.triage.run))
            self.add(Loop("triage-labels", self.triage.learn))
            self.add(Loop("triage-said", self.triage.listen))
            self.add(Loop("triage-escalate", self.triage.escalate))
        self.sms = self._sms_channel(os.environ if environ is None else environ)

    def _sms_channel(self, environ: Mapping[str, str]) -> SmsChannel | None:
        sms = self.config.channels.sms
        if not sms.enabled:
            return None
        intake = ChannelIntake(self.desk, self.queue, self.live, sms.duplicate_window)
        channel = SmsChannel(sms, environ.get(sms.password_env, ""), intake, self.queue)
        self.add(channel)
        self.add(channel.sender)
        return channel

    @property
    def config(self) -> GatewayConfig:
        return self.live.current

    def _seat_states(self) -> dict[str, str]:
        """The seats connected to this process, agent -> state (the wallboard writes them to Redis)."""
        return {agent: seat.state for agent, seat in self.dispatcher.sessions.items() if not seat.closed}

    def add(self, service: Service) -> None:
        """A service of this process (a channel's connection), started after the loops, before
        HTTP and the seats, and stopped after them."""
        self.services.add(service)

    def report(self) -> Report:
        return self.services.report()

    async def start(self) -> Bound:
        await self.queue.ensure_groups()
        for service in self._tail:
            self.services.add(service)
        self._tail = []
        await self.services.start()
        return Bound(http=self.http.address, seats=self.seat_server.address)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop every service in reverse order, then the tasks they left; bounded, so a stuck peer
        or task can delay a shutdown but never stop it."""
        try:
            async with asyncio.timeout(timeout):
                await self.services.stop()
                await self.tasks.drain()
        except TimeoutError:
            log.warning("shutdown took longer than %.0f s; stopping anyway", timeout)

    async def _listen(self) -> None:
        keys = self.queue.keys
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(
                    keys.wake, keys.control, keys.transcripts, keys.news, keys.triage_news, keys.escalation_news
                )
                self.dispatcher.wake()  # anything queued while we were not listening
                while True:
                    # get_message with a timeout, not listen(): listen() retries internally, so a
                    # cancellation redis-py swallowed would keep it reading forever.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    stop_if_cancelled()
                    if message is None or message["type"] != "message":
                        continue
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    if channel == keys.wake:
                        self.dispatcher.wake()
                    elif channel == keys.control:
                        self._on_control(message["data"])
                    elif channel == keys.news:
                        self.seats.on_news(message["data"])
                    elif channel == keys.triage_news:
                        self.seats.on_triage_news(message["data"])
                    elif channel == keys.escalation_news:
                        self.seats.on_escalation(message["data"])
                    else:
                        self.seats.on_transcript(message["data"])
            except (RedisError, OSError):
                log.warning("pub/sub connection lost; reconnecting")
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_control(self, data: bytes | str) -> None:
        try:
            message = messages.parse_control(data)
        except messages.MalformedMessage as exc:
            log.warning("control channel: %s; dropped", exc.message)
            return
        if isinstance(message, messages.Login):
            self.seats.kick(message.agent, message.session)
        else:
            self.seats.on_call_event(message)

    async def _reap(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                returned = await self.queue.reap()
                settled = await self.voice.settle_dead_workers(self.config.voice.callback_priority)
                unanswered = await self.followups.expire(utcnow())
            except (ServiceUnavailable, RedisError, OSError):
                log.warning("reaper: redis unavailable")
                continue
            if returned:
                log.info("reaper returned %d ticket(s) to their queues", returned)
            if settled:
                log.info("reaper settled %d call(s) of dead media workers", settled)
            if unanswered:
                log.info("reaper recorded %d 回访 question(s) as unanswered", unanswered)

    async def _hold_leases(self) -> None:
        grace = self.config.seats.reconnect_grace
        while True:
            try:
                await self.queue.hold_lease(self.dispatcher.sessions.keys(), grace)
            except (RedisError, OSError):
                log.warning("lease refresh: redis unavailable")
            await asyncio.sleep(grace / 3)


async def run_gateway(config: GatewayConfig, redis_url: str, stop: asyncio.Event, ready_line: bool = True) -> None:
    """Run until `stop` is set; the caller owns signal handling and the embedded Redis."""
    client = redis_client(redis_url, config.redis)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(f"cannot reach redis at {redis_url.split('@')[-1]}: {exc}") from exc
    run_id = os.environ.get(RUN_ID_ENV)
    if run_id:  # `status` tells this run's media workers (they beat with it) from strangers
        await client.set(Keys(config.redis.key_prefix).run(socket.gethostname()), run_id)
    gateway = Gateway(config, client)
    bound = await gateway.start()
    if ready_line:
        # One parseable line for operators and for tests that start the gateway on port 0.
        print(
            f"hotline-gateway ready http=http://{bound.http[0]}:{bound.http[1]} "
            f"seats=ws://{bound.seats[0]}:{bound.seats[1]}",
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        await client.aclose()
