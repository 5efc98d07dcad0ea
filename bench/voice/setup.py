"""What the voice benchmark runs: the worker's config and prompts, the worker process, SIPp's scenario."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.common.procs import spawn_logged, stop_process, tail
from bench.voice.pcap import caller_stream, load_speech, write_pcap
from gateway.config import load_config
from gateway.ivr.flow import QueueNode, parse_ivr_toml
from gateway.voice.prompts import prompt_files, prompt_wav, render_missing
from gateway.voice.wav import read_pcm
from peers.sip import can_play_pcap, uac_scenario

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "config" / "flows" / "12345.toml"
SHIPPED_CONFIG = ROOT / "config" / "gateway.toml"
KEY_PREFIX = "hg"
WORKER_ID = "wbench"
NUMBER = "12345"
MAX_POSITION = 5  # positions rendered; at most 2 callers ever wait
CALLER_PREFIX = "1380000"  # + SIPp's call number: each call's caller id, joined to its ticket
READY = re.compile(r"media-worker ready id=\S+ sip=(?P<sip>\S+:\d+)")


def check_tools() -> None:
    """Fail before anything starts when the run cannot happen here, saying what is missing."""
    for tool, package in (("sipp", "sip-tester"), ("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed: `apt-get install {package}`")
    if not can_play_pcap():
        raise BenchError(
            "SIPp's play_pcap_audio and the packet capture need a raw socket: run as root or with CAP_NET_RAW"
        )


def _toml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON strings, numbers and lists are valid TOML


def flow_queues() -> list[str]:
    """Every queue the shipped flow can send a caller to (the config must define each one), the
    human key's queue first."""
    flow = parse_ivr_toml(FLOW.read_text(encoding="utf-8")).flow
    others = {node.queue for node in flow.nodes.values() if isinstance(node, QueueNode)} - {flow.human_queue}
    return [flow.human_queue, *sorted(others)]


def shipped_asr() -> dict[str, Any]:
    """The `[asr]` section of the shipped config/gateway.toml: the worker runs speech as it ships."""
    with SHIPPED_CONFIG.open("rb") as handle:
        asr: dict[str, Any] = tomllib.load(handle).get("asr", {})
    return asr


def _table(name: str, values: dict[str, Any]) -> list[str]:
    """A TOML table and its sub-tables, from a dict of scalars, lists and dicts."""
    lines = [f"[{name}]"] + [f"{key} = {_toml(v)}" for key, v in values.items() if not isinstance(v, dict)]
    for key, value in values.items():
        if isinstance(value, dict):
            lines += _table(f"{name}.{key}", value)
    return lines


def config_toml(redis_url: str, sip: str, prompts: Path, recordings: Path, calls_per_worker: int) -> str:
    lines = [
        "[redis]", f"url = {_toml(redis_url)}", f"key_prefix = {_toml(KEY_PREFIX)}",
        "[routing]", f"default_queue = {_toml(flow_queues()[0])}",
    ]  # fmt: skip
    for queue in flow_queues():
        lines += ["[[queues]]", f"name = {_toml(queue)}", f"skills = {_toml([queue])}"]
    lines += [
        "[voice]", "enabled = true", f"listen = {_toml(sip)}", f"calls_per_worker = {calls_per_worker}",
        f"flows = {_toml([str(FLOW)])}", f"numbers = {{ {_toml(NUMBER)} = {_toml('12345-default')} }}",
        f"prompts_dir = {_toml(str(prompts))}", f"recordings_dir = {_toml(str(recordings))}",
        f"max_position_announced = {MAX_POSITION}",
    ]  # fmt: skip
    return "\n".join(lines + _table("asr", shipped_asr())) + "\n"


def write_config(directory: Path, redis_url: str, sip: str, calls_per_worker: int) -> Path:
    path = directory / "gateway.toml"
    prompts, recordings = directory / "prompts", directory / "recordings"
    path.write_text(config_toml(redis_url, sip, prompts, recordings, calls_per_worker))
    load_config(path)  # a ConfigError names the field, which beats a worker that exits at start
    return path


@dataclass(frozen=True)
class Prompts:
    directory: Path
    flow_id: str
    greeting: Path
    hold: Path

    def seconds(self, path: Path) -> float:
        rate, samples = read_pcm(path)
        return len(samples) / rate


def render_prompts(directory: Path) -> Prompts:
    """The shipped flow's prompts at the production speaking rate, rendered once (espeak-ng, sox)."""
    flow = parse_ivr_toml(FLOW.read_text(encoding="utf-8")).flow
    prompts = {pid: (spec.text, spec.file) for pid, spec in flow.prompts.items()}
    render_missing(list(prompt_files(prompts, directory, flow.id, directory, max_position=MAX_POSITION)))
    return Prompts(
        directory, flow.id, prompt_wav(directory, flow.id, "greeting"), prompt_wav(directory, flow.id, "hold")
    )


def scenario(directory: Path, call_seconds: float, digit_at: float) -> Path:
    """SIPp's UAC: INVITE, ACK, the call's pcap (speech, the digit 0 at `digit_at`), BYE at the end."""
    pcap = write_pcap(directory / "caller.pcap", caller_stream(call_seconds - 0.1, "0", digit_at, load_speech()))
    path = uac_scenario(directory, audio_pcap=pcap, pause_ms_before=round(call_seconds * 1000), hold_ms_after=0)
    xml = path.read_text(encoding="iso-8859-1")
    xml, count = re.subn(r"sip:caller@", f"sip:{CALLER_PREFIX}[call_number]@", xml)
    if count == 0:
        raise BenchError(f"{path}: the UAC template no longer has a `sip:caller@` From/Contact")
    path.write_text(xml, encoding="iso-8859-1")
    return path


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    sip: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM (BYE to live callers, tickets settled, PJSIP destroyed), then SIGKILL after 20 s."""
        stop_process(self.process, timeout=20.0)
        return self.process.returncode

    def stderr_tail(self) -> str:
        return tail(self.stderr_path)


def worker_command(config: Path, redis_url: str, sip: str) -> list[str]:
    script = Path(sys.executable).parent / "hotline-gateway"
    binary = str(script) if script.exists() else shutil.which("hotline-gateway")
    if binary is None:
        raise BenchError("hotline-gateway is not installed: run `make install` (pip install -e .)")
    args = ["--log-level", "WARNING", "media-worker", "--config", str(config), "--redis-url", redis_url]
    return [binary, *args, "--id", WORKER_ID, "--listen", sip]


def start_worker(directory: Path, config: Path, redis_url: str, sip: str, timeout: float = 30.0) -> WorkerProcess:
    """Start `hotline-gateway media-worker` and wait for its ready line; the caller must stop() it."""
    out_path, err_path = directory / "worker.out", directory / "worker.err"
    process = spawn_logged(worker_command(config, redis_url, sip), out_path, err_path)
    worker = WorkerProcess(process, sip, err_path)
    try:
        deadline = time.monotonic() + timeout
        while not READY.search(out_path.read_text(errors="replace")):
            if process.poll() is not None:
                raise BenchError(f"the media worker exited with status {process.returncode}:\n{tail(err_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"the media worker printed no ready line within {timeout:.0f}s:\n{tail(err_path)}")
            time.sleep(0.05)
    except BaseException:
        worker.stop()
        raise
    return worker


def sipp_version() -> str:
    done = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"SIPp v([0-9.]*[0-9])", done.stdout + done.stderr)
    return match[1] if match else "?"


def source_state() -> str:
    """The commit measured, and whether gateway/ or config/ differ from it (read-only git)."""
    git = ["git", "--no-optional-locks", "-C", str(ROOT)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "--", "gateway", "config"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
