"""A hotline behind its SIP front, for tests: real Redis, the core in-process (seats), N media worker
processes and a real Kamailio rendered from the same typed config.

The workers are the ones `run` would start (`gateway.sipfront.pool.worker_specs`: ids w1..wN on
consecutive ports from `voice.listen`), and the dispatcher list is derived from the same config,
so the test exercises the rendering path that production uses. Callers and agent phones talk only
to Kamailio (`FrontStack.front`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import redis.asyncio as aioredis
import tomli_w

from gateway.config import parse_config
from gateway.ivr.flow import parse_ivr_toml
from gateway.shell.app import Gateway
from gateway.sipfront.commands import RunningFront
from gateway.sipfront.kamailio import front_paths, write_front
from gateway.sipfront.pool import worker_specs
from gateway.sipfront.process import KamailioCommand, KamailioProcess
from gateway.sipfront.rpc import FrontRpc, Target
from peers.flows import FAST, write_flow
from peers.gateway_config import make_raw_config
from peers.sip import LOOPBACK, free_port, free_port_range
from tests.helpers import WorkerProcess
from tests.redis_typed import fields
from tests.voice.voice_stack import VoiceStack

PHONE_PASSWORDS = {"1001": "pw-1001-" + "q" * 16, "1002": "pw-1002-" + "r" * 16}


def phone_env(user: str) -> str:
    return f"HG_TEST_SIP_PASSWORD_{user}"


class StackArgs(TypedDict):
    """What `front_stack` needs from the test session (the `stack_args` fixture):
    `front_stack(**stack_args, ...)`."""

    tmp_path: Path
    redis_url: str
    key_prefix: str
    prompts_dir: Path
    run_dir: Path


@dataclass
class FrontStack(VoiceStack):
    """`sip` (and so `dial_uri()`) is Kamailio's address; `worker` is w1."""

    kamailio: KamailioProcess | None = None
    running: RunningFront | None = None
    rpc: FrontRpc | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    worker_sips: dict[str, str] = field(default_factory=dict)

    @property
    def front(self) -> str:
        return self.sip

    def kamailio_log(self, chars: int = 3000) -> str:
        """The end of Kamailio's log, for assertion messages."""
        assert self.kamailio is not None and self.kamailio.log_path is not None
        return self.kamailio.log_path.read_text(errors="replace")[-chars:]

    async def targets(self) -> dict[str, Target]:
        """Kamailio's dispatcher state, by worker address (host:port)."""
        assert self.rpc is not None
        return {target.address: target for target in await self.rpc.dispatcher()}

    async def wait_targets(self, check: Any, timeout: float, what: str) -> dict[str, Target]:
        async def ok() -> dict[str, Target] | None:
            targets = await self.targets()
            return targets if check(targets) else None

        try:
            result: dict[str, Target] = await self.wait_for(ok, timeout)
        except TimeoutError:
            raise AssertionError(f"dispatcher never showed {what} within {timeout} s: {await self.targets()}") from None
        return result

    async def worker_info(self) -> dict[str, dict[str, str]]:
        """Each worker's heartbeat hash (`hg:worker:{id}`), empty for one without."""
        prefix = self.config.redis.key_prefix
        found = {}
        for worker_id in self.workers:
            found[worker_id] = fields(await self.redis.hgetall(f"{prefix}:worker:{worker_id}"))
        return found

    async def start_worker(self, worker_id: str) -> WorkerProcess:
        process = WorkerProcess(self.config_path, self.redis_url, worker_id, self.worker_sips[worker_id])
        await process.start()
        self.workers[worker_id] = process
        return process

    config_path: str = ""
    redis_url: str = ""


def raw_front_config(
    tmp_path: Path, redis_url: str, key_prefix: str, prompts_dir: Path, run_dir: Path, front_port: int, **opts: Any
) -> dict[str, Any]:
    flow = write_flow(tmp_path / "flow.toml", FAST)
    raw = make_raw_config(key_prefix, redis_url)
    cover_flow_queues(raw, flow)
    for agent in raw["agents"]:
        user = opts["agent_phones"].get(agent["id"])
        if user:
            agent["sip_uri"] = f"sip:{user}@{LOOPBACK}:{front_port}"
    raw["seats"]["offer_timeout"] = 10
    raw["voice"] = {
        "enabled": True,
        "listen": f"{LOOPBACK}:{opts['worker_base']}",
        "rtp_port_base": free_port_range(16 * max(opts["workers"], 1)),
        "embedded_workers": opts["workers"],
        "calls_per_worker": opts["calls_per_worker"],
        "flows": [str(flow)],
        "numbers": {"12345": "12345-default"},
        "prompts_dir": str(prompts_dir),
        "recordings_dir": str(tmp_path / "recordings"),
        "agent_answer_timeout": 5,
        "max_position_announced": 5,
        "worker_timeout": 2,
        "heartbeat_interval": 0.5,
    }
    raw["sipfront"] = {
        "enabled": True,
        "listen": f"{LOOPBACK}:{front_port}",
        "trunks": opts["trunks"],
        "phones": {user: phone_env(user) for user in PHONE_PASSWORDS},
        "dir": str(run_dir),
        "children": 2,
        "shm_mb": 32,
        "log_level": "info",
        **opts["front"],
    }
    if opts.get("asr") is not None:
        raw["asr"] = opts["asr"]
    return raw


def cover_flow_queues(raw: dict[str, Any], flow: Path) -> None:
    """Add any queue the shipped flow routes to that the shared test config lacks (the flow grows
    new branches; these tests are about the front, not about queues)."""
    ivr = parse_ivr_toml(flow.read_text(encoding="utf-8")).flow
    wanted = {getattr(node, "queue", None) for node in ivr.nodes.values()} | {ivr.human_queue}
    have = {queue["name"] for queue in raw["queues"]}
    for name in sorted(q for q in wanted - have if q):
        raw["queues"].append({"name": name, "label": name, "skills": [name], "priority": 0})


@asynccontextmanager
async def front_stack(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    prompts_dir: Path,
    run_dir: Path,
    *,
    workers: int = 1,
    calls_per_worker: int = 4,
    trunks: tuple[str, ...] = ("127.0.0.1/32",),
    agent_phones: dict[str, str] | None = None,
    front: dict[str, Any] | None = None,
    asr: dict[str, Any] | None = None,
    deadline: float = 120.0,
) -> AsyncIterator[FrontStack]:
    """`agent_phones` maps agent ids to phone users (their sip_uri then rings the phone at the front);
    `front` overrides [sipfront] settings, `asr` replaces the [asr] section. Kamailio's log is
    `run_dir/kamailio.log`. The whole test (setup, body, teardown) must end within `deadline` s: a
    hang fails with its traceback."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(deadline):
        async with _front_stack(
            tmp_path, redis_url, key_prefix, prompts_dir, run_dir, workers=workers,
            calls_per_worker=calls_per_worker, trunks=trunks, agent_phones=agent_phones, front=front, asr=asr,
        ) as stack:  # fmt: skip
            yield stack
    # A cancellation swallowed by some teardown step would otherwise end the test "passed".
    assert loop.time() - began < deadline, f"the stack hung until its {deadline} s deadline (see the captured log)"


@asynccontextmanager
async def _front_stack(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    prompts_dir: Path,
    run_dir: Path,
    *,
    workers: int,
    calls_per_worker: int,
    trunks: tuple[str, ...],
    agent_phones: dict[str, str] | None,
    front: dict[str, Any] | None,
    asr: dict[str, Any] | None,
) -> AsyncIterator[FrontStack]:
    front_port = free_port(udp=True, tcp=False)
    worker_base = free_port_range(max(workers, 1), even=False)
    front = dict(front or {})
    explicit_workers = bool(front.get("workers"))
    if workers == 0 and not explicit_workers:
        # `run` refuses a front with nothing to dispatch to; a test of the front alone names a
        # worker address nobody answers (Kamailio marks it down; no call of these tests is routed).
        front["workers"] = [f"{LOOPBACK}:{free_port(udp=True, tcp=False)}"]
    raw = raw_front_config(
        tmp_path, redis_url, key_prefix, prompts_dir, run_dir, front_port,
        workers=workers, calls_per_worker=calls_per_worker, trunks=list(trunks),
        agent_phones=agent_phones or {}, worker_base=worker_base, front=front, asr=asr,
    )  # fmt: skip
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    config = parse_config(raw, tmp_path)
    env = {**os.environ, **{phone_env(user): password for user, password in PHONE_PASSWORDS.items()}}
    async with AsyncExitStack() as stack:
        client = aioredis.Redis.from_url(redis_url)
        stack.push_async_callback(_timed, "redis client close", client.aclose)
        gateway = Gateway(config, client)
        bound = await gateway.start()
        stack.push_async_callback(_timed, "gateway stop", gateway.stop)
        write_front(config, str(path))
        paths = front_paths(config)
        kamailio = KamailioProcess(KamailioCommand.for_paths(config.sipfront, paths), log_path=paths.log, env=env)
        # As `run` keeps it: restarted when it dies, the workers' calls put into its load after each
        # start, dead workers' calls ended through it.
        running = RunningFront(kamailio, config, paths, redis_url)
        stack.push_async_callback(_timed, "kamailio stop", running.stop)
        processes = {
            s.worker_id: WorkerProcess(str(path), redis_url, s.worker_id, s.listen) for s in worker_specs(config)
        }
        # Stops whatever is in the dict at the end, workers a test restarted included.
        stack.push_async_callback(_timed, "workers stop", lambda: _stop_workers(processes))
        # Workers first: Kamailio then finds them up at its first probe instead of marking them down.
        await asyncio.gather(*(process.start() for process in processes.values()))
        await running.start()
        await running.wait_routing(10)
        rpc = FrontRpc(config.sipfront.kamcmd, paths.ctl_socket)
        result = FrontStack(
            config=config, gateway=gateway, bound=bound, worker=next(iter(processes.values()), None),  # type: ignore[arg-type]
            sip=f"{LOOPBACK}:{front_port}", redis=client, recordings=tmp_path / "recordings",
            kamailio=kamailio, rpc=rpc, workers=processes, running=running,
            worker_sips={s.worker_id: s.listen for s in worker_specs(config)},
            config_path=str(path), redis_url=redis_url,
        )  # fmt: skip
        if processes or explicit_workers:
            await result.wait_targets(lambda t: all(x.active for x in t.values()), 10, "every worker active")
        yield result


async def _timed(what: str, step: Callable[[], Awaitable[object]]) -> None:
    """One teardown step, logged with its duration (a hang shows which step it was)."""
    began = time.monotonic()
    print(f"teardown: {what} ...", file=sys.stderr, flush=True)
    await step()
    print(f"teardown: {what} done in {time.monotonic() - began:.2f} s", file=sys.stderr, flush=True)


async def _stop_workers(processes: dict[str, WorkerProcess]) -> None:
    # A worker the test killed has already exited: stop() then just reaps it.
    await asyncio.gather(*(process.stop() for process in processes.values()))
