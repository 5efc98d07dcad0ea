"""What the intake benchmark runs against: a gateway config, the gateway process, the XADD baseline."""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.common.procs import spawn_logged, stop_process, tail
from gateway.config import hash_secret, load_config

READY = re.compile(r"hotline-gateway ready http=(?P<http>http://\S+:\d+) seats=(?P<seats>ws://\S+:\d+)")
KEY_PREFIX = "hg"


@dataclass(frozen=True)
class Credentials:
    agents: list[tuple[str, str]]  # (agent id, token)
    api_key: str

    @classmethod
    def fresh(cls, agents: int) -> Credentials:
        return cls(
            [(f"b{n:03d}", secrets.token_urlsafe(24)) for n in range(1, agents + 1)],
            secrets.token_urlsafe(32),
        )


def _toml(value: str | int | list[str]) -> str:
    """TOML literal of a string, int or list of strings (JSON strings are valid TOML strings)."""
    return json.dumps(value, ensure_ascii=False)


def config_toml(
    redis_url: str, creds: Credentials, offer_timeout: int = 30, triage_catalogue: Path | None = None
) -> str:
    lines = [
        "[http]", f"listen = {_toml('127.0.0.1:0')}",
        "[seats]", f"listen = {_toml('127.0.0.1:0')}", f"offer_timeout = {offer_timeout}",
        "[redis]", f"url = {_toml(redis_url)}", f"key_prefix = {_toml(KEY_PREFIX)}",
        "[routing]", f"default_queue = {_toml('general')}",
        "[[queues]]", f"name = {_toml('general')}", f"label = {_toml('综合受理')}",
        f"skills = {_toml(['general'])}",
    ]  # fmt: skip
    for agent, token in creds.agents:
        lines += ["[[agents]]", f"id = {_toml(agent)}", f"skills = {_toml(['general'])}"]
        lines.append(f"token_hash = {_toml(hash_secret(token))}")
    lines += ["[[api_clients]]", f"id = {_toml('bench')}", f"key_hash = {_toml(hash_secret(creds.api_key))}"]
    lines.append(f"channels = {_toml(['web'])}")
    if triage_catalogue is not None:  # out of the core: its own process (`triage_command`)
        lines += ["[triage]", "enabled = true", "in_core = false", f"catalogue = {_toml(str(triage_catalogue))}"]
    return "\n".join(lines) + "\n"


def write_config(directory: Path, redis_url: str, creds: Credentials, triage_catalogue: Path | None = None) -> Path:
    path = directory / "gateway.toml"
    path.write_text(config_toml(redis_url, creds, triage_catalogue=triage_catalogue))
    load_config(path)  # a ConfigError here names the field, which beats a gateway that exits at start
    return path


def triage_command(config: Path, redis_url: str) -> list[str]:
    """`hotline-gateway triage`: one process that only triages, beside the gateway."""
    return [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "triage", "--config", str(config),
            "--redis-url", redis_url]  # fmt: skip


def gateway_command(config: Path, redis_url: str, cprofile: Path | None = None) -> list[str]:
    """`hotline-gateway run`; under cProfile (stats written to `cprofile` when it stops) if asked."""
    args = ["--log-level", "WARNING", "run", "--config", str(config), "--redis-url", redis_url]
    if cprofile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(cprofile), "-m", "gateway.cli", *args]
    script = Path(sys.executable).parent / "hotline-gateway"
    binary = str(script) if script.exists() else shutil.which("hotline-gateway")
    if binary is None:
        raise BenchError("hotline-gateway is not installed: run `make install` (pip install -e .)")
    return [binary, *args]


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    http_url: str
    seats_url: str
    stderr_path: Path

    def stop(self) -> None:
        stop_process(self.process)

    def stderr_tail(self) -> str:
        return tail(self.stderr_path)


def start_gateway(
    directory: Path, config: Path, redis_url: str, cprofile: Path | None = None, timeout: float = 20.0
) -> GatewayProcess:
    """Start `hotline-gateway run` and wait for its ready line; the caller must stop() it."""
    out_path, err_path = directory / "gateway.out", directory / "gateway.err"
    process = spawn_logged(gateway_command(config, redis_url, cprofile), out_path, err_path)
    try:
        match = _wait_ready(process, out_path, err_path, timeout)
    except BaseException:
        stop_process(process)
        raise
    return GatewayProcess(process, match["http"], match["seats"], err_path)


def _wait_ready(process: subprocess.Popen[bytes], out: Path, err: Path, timeout: float) -> re.Match[str]:
    # Before any load runs: polling a file with a short sleep is the simplest correct wait.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = READY.search(out.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            raise BenchError(f"the gateway exited with status {process.returncode} at start:\n{tail(err)}")
        time.sleep(0.05)
    raise BenchError(f"the gateway printed no ready line within {timeout:.0f}s:\n{tail(err)}")


def redis_benchmark_binary() -> str:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise BenchError(
            "redis-benchmark is not installed; it measures the XADD baseline. "
            "Install it with `apt-get install redis-tools` (Debian/Ubuntu)."
        )
    return binary


def xadd_baseline(port: int, requests: int = 100_000, clients: int = 50) -> float:
    """XADD requests per second of the same redis-server, measured by redis-benchmark (no pipelining)."""
    args = [
        redis_benchmark_binary(),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-n",
        str(requests),
        "-c",
        str(clients),
    ]
    args += ["-P", "1", "--csv", "XADD", "bench:baseline", "*", "f", "v"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(
            f"redis-benchmark failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return parse_benchmark_csv(done.stdout)


def parse_benchmark_csv(output: str) -> float:
    rows = list(csv.reader(io.StringIO(output)))
    for row in rows:
        if len(row) > 1 and row[0].upper().startswith("XADD"):
            return float(row[1])
    raise BenchError(f"no XADD line in redis-benchmark's output: {output.strip()[:300]!r}")
