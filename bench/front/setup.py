"""What the front benchmark runs: one typed config, the media workers, the core, Kamailio, SIPp's scenario.

Everything is rendered from one gateway config (`gateway.toml`): the workers are the ones `run`
would start (`gateway.sipfront.pool.worker_specs`: ids w1..wN on consecutive ports from
`voice.listen`), Kamailio's kamailio.cfg and dispatcher list come from `write_front` on the same
config, as tests/sipfront/front_stack.py does. The core runs as `hotline-gateway run` on a copy of
that config with the front switched off and no embedded workers (`core.toml`), so that it is a
process of its own whose CPU can be measured, and so that this benchmark, not `run`, starts and
stops the workers and Kamailio.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.common.procs import spawn_logged, stop_process, tail
from bench.voice.pcap import caller_stream, load_speech, write_pcap
from bench.voice.setup import FLOW, KEY_PREFIX, NUMBER, flow_queues, worker_command
from bench.voice.setup import _toml as toml_value
from gateway.config import GatewayConfig, load_config
from gateway.sipfront.commands import RunningFront
from gateway.sipfront.kamailio import front_paths, write_front
from gateway.sipfront.pool import worker_specs
from gateway.sipfront.process import KamailioCommand, KamailioProcess
from gateway.sipfront.rpc import FrontRpc, Target
from peers.sip import free_port_range, uac_scenario

CALLS_PER_WORKER = 4  # legs: 2 callers, each with room for an agent leg
CALLERS_PER_WORKER = CALLS_PER_WORKER // 2
RTP_PORTS_PER_WORKER = 16  # voice.rtp_ports_per_worker's default
CALLER_PREFIX = "1380000"  # + SIPp's call number: the load's caller ids, joined to their tickets
SURPLUS_PREFIX = "1390000"  # the calls over capacity
READY = re.compile(r"media-worker ready id=(?P<id>\S+) sip=(?P<sip>\S+:\d+)")


def config_toml(
    redis_url: str, front: str, worker_base: int, rtp_base: int, workers: int, tmp: Path, prompts: Path, *, core: bool
) -> str:
    """The hotline's config: voice with `workers` workers behind Kamailio at `front`; `core` = the
    same with the front off and no embedded workers (what `hotline-gateway run` gets here)."""
    lines = [
        "[http]", f"listen = {toml_value('127.0.0.1:0')}",
        "[seats]", f"listen = {toml_value('127.0.0.1:0')}",
        "[redis]", f"url = {toml_value(redis_url)}", f"key_prefix = {toml_value(KEY_PREFIX)}",
        "[routing]", f"default_queue = {toml_value(flow_queues()[0])}",
    ]  # fmt: skip
    for queue in flow_queues():
        lines += ["[[queues]]", f"name = {toml_value(queue)}", f"skills = {toml_value([queue])}"]
    lines += [
        "[voice]", "enabled = true", f"listen = {toml_value(f'127.0.0.1:{worker_base}')}",
        f"calls_per_worker = {CALLS_PER_WORKER}", f"embedded_workers = {0 if core else workers}",
        f"rtp_port_base = {rtp_base}",  # each worker binds its own block of RTP ports from here
        f"flows = {toml_value([str(FLOW)])}", f"numbers = {{ {toml_value(NUMBER)} = {toml_value('12345-default')} }}",
        f"prompts_dir = {toml_value(str(prompts))}", f"recordings_dir = {toml_value(str(tmp / 'recordings'))}",
        "max_position_announced = 5",
        # A recognizer process per worker (PocketSphinx or Vosk) would not fit 100 workers on 2 cores.
        # `enabled = false` alone still starts the navigation grammar's recognizer in every worker
        # (the shipped flow has a speech_route node): that is switched off too.
        "[asr]", "enabled = false", "navigation_enabled = false",
        "[sipfront]", f"enabled = {'false' if core else 'true'}", f"listen = {toml_value(front)}",
        f"trunks = {toml_value(['127.0.0.1/32'])}", f"dir = {toml_value(str(tmp / 'sipfront'))}",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Configs:
    path: Path  # workers and Kamailio
    core_path: Path  # `hotline-gateway run`
    config: GatewayConfig


def write_configs(tmp: Path, redis_url: str, front: str, workers: int, prompts: Path) -> Configs:
    """The configs, on ports free now: the workers' SIP ports, and their RTP blocks (voice.rtp_port_base,
    16 ports per worker by default) away from anything else running on this machine."""
    worker_base = free_port_range(workers, even=False)
    rtp_base = free_port_range(RTP_PORTS_PER_WORKER * workers)
    path, core_path = tmp / "gateway.toml", tmp / "core.toml"
    path.write_text(config_toml(redis_url, front, worker_base, rtp_base, workers, tmp, prompts, core=False))
    core_path.write_text(config_toml(redis_url, front, worker_base, rtp_base, workers, tmp, prompts, core=True))
    load_config(core_path)  # a ConfigError names the field, which beats a process that exits at start
    config = load_config(path)
    if len(worker_specs(config)) != workers:
        raise BenchError(f"worker_specs gives {len(worker_specs(config))} workers for embedded_workers = {workers}")
    return Configs(path, core_path, config)


def scenario(directory: Path, call_seconds: float, digit_at: float, prefix: str) -> Path:
    """SIPp's UAC (the voice benchmark's): INVITE, ACK, speech for the whole call with the digit 0
    at `digit_at` (one RTP stream from a pcap), BYE at the end; From is `prefix` + call number."""
    pcap = directory / f"caller-{call_seconds:g}.pcap"
    if not pcap.exists():
        write_pcap(pcap, caller_stream(call_seconds - 0.1, "0", digit_at, load_speech()))
    path = uac_scenario(directory, audio_pcap=pcap, pause_ms_before=round(call_seconds * 1000), hold_ms_after=0)
    xml = path.read_text(encoding="iso-8859-1")
    xml, count = re.subn(r"sip:caller@", f"sip:{prefix}[call_number]@", xml)
    if count == 0:
        raise BenchError(f"{path}: the UAC template no longer has a `sip:caller@` From/Contact")
    out = directory / f"uac-{prefix}-{call_seconds:g}.xml"
    out.write_text(xml, encoding="iso-8859-1")
    return out


@dataclass
class Worker:
    worker_id: str
    sip: str
    process: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.sip.rsplit(":", 1)[1])

    def ready(self) -> bool:
        return bool(READY.search(self.out_path.read_text(errors="replace")))


def _spawn_worker(directory: Path, config: Path, redis_url: str, worker_id: str, sip: str) -> Worker:
    out_path, err_path = directory / f"{worker_id}.out", directory / f"{worker_id}.err"
    command = worker_command(config, redis_url, sip)
    command[command.index("--id") + 1] = worker_id
    return Worker(worker_id, sip, spawn_logged(command, out_path, err_path), out_path, err_path)


async def start_workers(
    directory: Path, configs: Configs, redis_url: str, started: list[Worker], parallel: int, timeout: float = 60.0
) -> None:
    """Start every worker `worker_specs` names, `parallel` starting at a time (each imports pjsua2
    and renders nothing: the prompts are there); each is appended to `started` as it starts, so the
    caller stops them all whatever happens."""
    directory.mkdir(parents=True, exist_ok=True)
    pending = list(worker_specs(configs.config))
    starting: list[tuple[Worker, float]] = []
    while pending or starting:
        while pending and len(starting) < parallel:
            spec = pending.pop(0)
            worker = _spawn_worker(directory, configs.path, redis_url, spec.worker_id, spec.listen)
            started.append(worker)
            starting.append((worker, time.monotonic()))
        await asyncio.sleep(0.05)
        for worker, began in list(starting):
            if worker.ready():
                starting.remove((worker, began))
            elif worker.process.poll() is not None:
                raise BenchError(
                    f"media worker {worker.worker_id} exited with {worker.process.returncode}:\n{tail(worker.err_path)}"
                )
            elif time.monotonic() - began > timeout:
                raise BenchError(f"media worker {worker.worker_id} not ready within {timeout:.0f} s")


def stop_workers(workers: list[Worker], timeout: float = 30.0) -> dict[str, int | None]:
    """SIGTERM to every worker at once, then wait for each (SIGKILL after `timeout`); exit codes."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_process(worker.process, timeout=1.0)
        codes[worker.worker_id] = worker.process.returncode
    return codes


@dataclass
class Front:
    kamailio: KamailioProcess
    running: RunningFront
    rpc: FrontRpc
    log_path: Path

    async def stop(self) -> None:
        await self.running.stop()

    @property
    def pid(self) -> int | None:
        return self.kamailio.pid

    async def targets(self) -> list[Target]:
        return await self.rpc.dispatcher()

    def log_count(self, pattern: str) -> int:
        if not self.log_path.exists():
            return 0
        return len(re.findall(pattern, self.log_path.read_text(errors="replace")))


async def start_front(configs: Configs, redis_url: str, timeout: float = 30.0) -> Front:
    """Render kamailio.cfg and the dispatcher list from the config and start Kamailio as `run`
    keeps it (`RunningFront`: the calls the workers hold put into its load before it routes
    callers, which it refuses with 503 until then); the caller stops it: `front.stop()`."""
    config = configs.config
    write_front(config, str(configs.path))
    paths = front_paths(config)
    command = KamailioCommand.for_paths(config.sipfront, paths)
    kamailio = KamailioProcess(command, log_path=paths.log, env=dict(os.environ))
    running = RunningFront(kamailio, config, paths, redis_url)
    front = Front(kamailio, running, FrontRpc(config.sipfront.kamcmd, paths.ctl_socket, timeout=10.0), paths.log)
    await running.start()
    await running.wait_routing(timeout)
    return front


async def wait_all_active(front: Front, count: int, timeout: float) -> list[Target]:
    deadline = time.monotonic() + timeout
    while True:
        targets = await front.targets()
        if len(targets) == count and all(target.active for target in targets):
            return targets
        if time.monotonic() > deadline:
            inactive = [t.address for t in targets if not t.active]
            raise BenchError(f"Kamailio sees {len(targets)} workers, inactive after {timeout:.0f} s: {inactive[:10]}")
        await asyncio.sleep(0.5)


def kamailio_version() -> str:
    done = subprocess.run(["kamailio", "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"version: kamailio (\S+)", done.stdout + done.stderr)
    return match[1] if match else "?"
