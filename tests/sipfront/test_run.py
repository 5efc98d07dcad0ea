"""`hotline-gateway run` with `[sipfront] enabled`: Kamailio and the worker pool as its children,
`status` showing both, a call through the front, and nothing left running after SIGTERM."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import tomli_w

from gateway.cli import main
from gateway.sipfront.rpc import FrontRpc, Target
from gateway.sipfront.status import gather
from peers.sip import Peers, free_port, free_port_range, uac_scenario
from tests.helpers import GatewayProcess
from tests.sipfront.front_stack import StackArgs, phone_env, raw_front_config

pytestmark = pytest.mark.slow


def _raw_config(stack_args: StackArgs, *, workers: int, agent_phones: dict[str, str], ports: int) -> dict[str, Any]:
    """A front config of `workers` workers with room for `ports` of them, as the tests here start it."""
    return raw_front_config(
        **stack_args, front_port=free_port(udp=True, tcp=False), workers=workers, calls_per_worker=4,
        trunks=["127.0.0.1/32"], agent_phones=agent_phones, worker_base=free_port_range(ports, even=False), front={},
    )  # fmt: skip


def _written(stack_args: StackArgs, raw: dict[str, Any]) -> Path:
    path = stack_args["tmp_path"] / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def _write_config(stack_args: StackArgs) -> Path:
    return _written(stack_args, _raw_config(stack_args, workers=2, agent_phones={"a1": "1001"}, ports=2))


async def _status(path: Path, redis_url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "status", "--config", str(path), "--redis-url", redis_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_run_starts_kamailio_and_the_pool_status_shows_them_and_sigterm_ends_everything(
    stack_args: StackArgs, callers: Peers
) -> None:
    tmp_path, redis_url, run_dir = stack_args["tmp_path"], stack_args["redis_url"], stack_args["run_dir"]
    path = _write_config(stack_args)
    gateway = GatewayProcess(str(path), redis_url)
    await gateway.start(30)
    try:
        kamailio_pid = int((run_dir / "kamailio.pid").read_text())

        async def ready() -> str | None:
            text = await _status(path, redis_url)
            return text if text.count("alive; kamailio A") == 2 else None

        async with asyncio.timeout(20):
            while (text := await ready()) is None:
                await asyncio.sleep(0.5)
        assert "w1" in text and "w2" in text and text.count(" up ") == 2, text
        assert text.count("this run") == 2, text  # beating with the run's own id

        front = tomllib.loads(path.read_text())["sipfront"]["listen"]
        scenario = uac_scenario(tmp_path, audio_pcap=None, pause_ms_before=1500, hold_ms_after=100)
        sipp = await callers.sipp(scenario, target=front, service="12345", calls=2, concurrency=2, rate=10)
        result = await sipp.wait(20)
        assert result.successful == 2, str(result)
        worker_pids = [int(line.split()[2]) for line in text.splitlines() if line.strip().startswith("w")]
    finally:
        code = await gateway.stop()
    assert code == 0
    assert not _alive(kamailio_pid), "Kamailio stopped with the gateway"
    assert not any(_alive(pid) for pid in worker_pids), "the workers stopped with the gateway"


def test_sipfront_render_command(
    stack_args: StackArgs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = stack_args["run_dir"]
    path = _write_config(stack_args)
    monkeypatch.delenv(phone_env("1001"), raising=False)
    assert main(["sipfront", "render", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "(2 worker(s), at most 2 caller(s) each)" in captured.out
    assert "kamailio -c: OK" in captured.out and "start check: OK" in captured.out
    assert f"environment variable {phone_env('1001')} is not set" in captured.err
    assert (run_dir / "dispatcher.list").read_text().count("maxload=2") == 2


# Kamailio's destinations by duid, the pool's slot states, the live heartbeats by worker id.
PoolView = tuple[dict[str, Target], dict[str, str], dict[str, dict[str, str]]]


async def _pool_view(config_path: Path, redis_url: str) -> PoolView:
    """Kamailio's destinations by duid, the pool's slot states, and the live heartbeats by worker id."""
    from gateway.config import load_config
    from gateway.sipfront.kamailio import front_paths

    config = load_config(config_path)
    rpc = FrontRpc(config.sipfront.kamcmd, front_paths(config).ctl_socket)
    targets = {target.duid: target for target in await rpc.dispatcher()}
    client = aioredis.Redis.from_url(redis_url)
    try:
        report = await gather(config, client)
    finally:
        await client.aclose()
    beats = {row.worker_id: row.info for row in report.workers if row.alive}
    return targets, report.pool, beats


async def test_the_pool_grows_when_callers_fill_it_and_shrinks_back_after_they_leave(
    stack_args: StackArgs, callers: Peers
) -> None:
    tmp_path, redis_url, run_dir = stack_args["tmp_path"], stack_args["redis_url"], stack_args["run_dir"]
    raw = _raw_config(stack_args, workers=1, agent_phones={}, ports=3)
    raw["voice"]["pool"] = {"max_workers": 3, "spare_callers": 1, "scale_down_after": 2, "check_interval": 0.25}
    path = _written(stack_args, raw)
    front = raw["sipfront"]["listen"]
    gateway = GatewayProcess(str(path), redis_url)
    await gateway.start(30)
    try:

        async def until(
            check: Callable[[dict[str, Target], dict[str, str], dict[str, dict[str, str]]], bool],
            what: str,
            timeout: float = 20,
        ) -> PoolView:
            view = await _pool_view(path, redis_url)
            try:
                async with asyncio.timeout(timeout):
                    while not check(*view):
                        await asyncio.sleep(0.25)
                        view = await _pool_view(path, redis_url)
            except TimeoutError:
                raise AssertionError(f"never {what} within {timeout} s; last seen: {view}") from None
            return view

        # Boot: w1 serving; w2, w3 listed but switched off (never probed, never chosen).
        targets, pool, _ = await until(lambda t, p, b: "w1" in b and t["w1"].active, "w1 up")
        assert pool == {"w1": "serving", "w2": "stopped", "w3": "stopped"}
        assert targets["w2"].flags.startswith("D") and targets["w3"].flags.startswith("D"), targets

        # Two held callers fill w1 (2 callers per worker): one spare slot is wanted, so w2 starts and
        # is switched on once it beats; w3 stays off.
        held = uac_scenario(tmp_path, audio_pcap=None, pause_ms_before=12000, hold_ms_after=100)
        first = await callers.sipp(held, target=front, service="12345", calls=2, concurrency=2, rate=10)
        targets, pool, beats = await until(lambda t, p, b: p.get("w2") == "serving" and t["w2"].active, "w2 on")
        assert beats["w1"]["callers"] == "2", beats
        assert pool["w3"] == "stopped" and targets["w3"].flags.startswith("D"), (pool, targets)

        # The next caller can only go to the new worker.
        third = await callers.sipp(held, target=front, service="12345", calls=1, concurrency=1, rate=10)
        _, _, beats = await until(lambda t, p, b: b.get("w2", {}).get("callers") == "1", "a caller on w2")
        assert beats["w1"]["callers"] == "2"
        assert (await first.wait(30)).successful == 2
        assert (await third.wait(30)).successful == 1

        # Callers gone: after scale_down_after the surplus worker (the idler one when the first two
        # callers left: w1) is switched off in Kamailio, drains and stops; one worker keeps serving.
        def shrunk(t: dict[str, Target], p: dict[str, str], b: dict[str, dict[str, str]]) -> bool:
            return sorted(p.values()) == ["serving", "stopped", "stopped"] and len(b) == 1

        targets, pool, beats = await until(shrunk, "the pool back to one worker")
        (serving,) = [w for w, state in pool.items() if state == "serving"]
        assert set(beats) == {serving} and targets[serving].active, (targets, beats)
        listed = (run_dir / "dispatcher.list").read_text()
        for worker_id in {"w1", "w2", "w3"} - {serving}:
            assert targets[worker_id].flags.startswith("D"), targets
            assert f" 4 0 duid={worker_id};" in listed, f"a restarted Kamailio keeps {worker_id} off: {listed}"
    finally:
        code = await gateway.stop()
    assert code == 0
