"""`run` refuses at once when another run holds its data directory or any address it needs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from gateway.errors import ConfigError
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.shell.preflight import Address, RunLock, address_problems, holder_of, in_use, socket_inodes
from peers.gateway_config import make_raw_config

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1
   2: 0100007F:13C6 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5555 1
"""


def test_socket_inodes_reads_the_proc_table() -> None:
    assert socket_inodes(TABLE, 8080, listening_only=True) == {4242}
    assert socket_inodes(TABLE, 8080, listening_only=False) == {4242, 4343}
    assert socket_inodes(TABLE, 9999, listening_only=False) == set()


@pytest.fixture
def held_tcp() -> Iterator[Address]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield Address("tcp", "127.0.0.1", listener.getsockname()[1], "HTTP intake", "http.listen")


@pytest.fixture
def held_udp() -> Iterator[Address]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield Address("udp", "127.0.0.1", bound.getsockname()[1], "media worker w1", "voice.listen")


def test_a_held_port_is_in_use_and_its_holder_is_found(held_tcp: Address, held_udp: Address) -> None:
    for address in (held_tcp, held_udp):
        assert in_use(address)
        holder = holder_of(address)
        assert holder is not None and holder.pid == os.getpid()
        assert "python" in holder.command or "pytest" in holder.command


def test_a_free_port_is_not_in_use(held_tcp: Address) -> None:
    port = held_tcp.port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert free != port
    assert not in_use(Address("tcp", "127.0.0.1", free, "x", "x"))


def test_problems_name_the_address_the_setting_and_the_holder(held_udp: Address) -> None:
    [problem] = address_problems([held_udp])
    assert problem.path == "voice.listen"
    assert problem.message.startswith(f"UDP 127.0.0.1:{held_udp.port} for the media worker w1 is in use: held by pid ")
    assert str(os.getpid()) in problem.message


def _hold_lock(directory: Path) -> subprocess.Popen[str]:
    code = (
        "import sys, time; from pathlib import Path; from gateway.shell.preflight import RunLock; "
        f"lock = RunLock(Path({str(directory)!r})); lock.acquire(); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_the_run_lock_is_exclusive_and_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(ConfigError) as refused:
            RunLock(tmp_path).acquire()
        assert f"locked by pid {holder.pid}" in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # SIGKILL left no stale lock behind
    lock.release()


def test_run_refuses_at_once_beside_a_run_holding_its_data_dir(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    raw = make_raw_config("pre", "redis://unused", redis={"url": None, "embedded": {"dir": str(tmp_path / "redis")}})
    raw["redis"] = {"key_prefix": "pre", "embedded": {"dir": str(tmp_path / "redis"), "port": 1}}
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    holder = _hold_lock(tmp_path / "redis")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(path)],
            capture_output=True, text=True, timeout=30, env={**os.environ, "REDIS_URL": ""},
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr
    assert "another `hotline-gateway run` is using this data directory" in done.stderr
    assert f"locked by pid {holder.pid}" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_refuses_when_its_http_port_is_held_and_names_the_holder(
    tmp_path: Path, redis_server: EmbeddedRedis, held_tcp: Address
) -> None:
    url: str = redis_server.url
    raw = make_raw_config("pre", url, http={"listen": f"127.0.0.1:{held_tcp.port}"})
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"http.listen: TCP 127.0.0.1:{held_tcp.port} for the HTTP intake is in use: held by pid {os.getpid()}" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
