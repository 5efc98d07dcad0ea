"""The media worker pool as the front sees it: who the dispatcher list names, and their ids.

`hotline-gateway run` starts `voice.embedded_workers` workers itself, on `voice.listen`'s port + n
(`WorkerSupervisor` restarts one that dies), and may scale up to `voice.pool.max_workers` (see
`gateway.sipfront.autoscale`). The dispatcher list names every slot up to the maximum, the ones not
serving as disabled (flag 4: never selected, never probed), unless `[sipfront] workers` lists the
workers explicitly (workers on other hosts or addresses).

Each destination holds at most `voice.calls_per_worker // 2` callers (`maxload`): a caller may need
a second leg for its agent, and the agent leg is not counted by the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.shell.supervisor import WorkerSpec
from gateway.sipfront.config import split_host_port

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class Destination:
    """One media worker in the dispatcher list."""

    duid: str
    host: str
    port: int
    maxload: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.address}"


def caller_capacity(calls_per_worker: int) -> int:
    """The same rule as `MediaWorker.caller_capacity`: half the legs take callers."""
    return max(1, calls_per_worker // 2)


def worker_specs(config: GatewayConfig) -> list[WorkerSpec]:
    """Every worker slot `run` may use: ids {prefix}w1..wN on consecutive ports from `voice.listen`,
    N = the pool's maximum; the first `embedded_workers` start at boot."""
    voice = config.voice
    host, port = split_host_port(voice.listen)
    address = f"[{host}]" if ":" in host else host
    _, most = voice.pool_bounds()
    return [WorkerSpec(f"{voice.worker_id_prefix}w{n + 1}", f"{address}:{port + n}") for n in range(most)]


def boot_specs(config: GatewayConfig) -> list[WorkerSpec]:
    return worker_specs(config)[: config.voice.embedded_workers]


def destinations(config: GatewayConfig) -> list[Destination]:
    maxload = caller_capacity(config.voice.calls_per_worker)
    if config.sipfront.workers:
        pairs = [(f"d{n + 1}", address) for n, address in enumerate(config.sipfront.workers)]
    else:
        pairs = [(spec.worker_id, spec.listen) for spec in worker_specs(config)]
    return [Destination(duid, *split_host_port(address), maxload=maxload) for duid, address in pairs]


def boot_enabled(config: GatewayConfig) -> set[str]:
    """The destinations switched on when Kamailio first reads the list: every explicit worker, or
    the pool's boot workers (the other slots are listed disabled until the pool scales up)."""
    if config.sipfront.workers:
        return {entry.duid for entry in destinations(config)}
    return {spec.worker_id for spec in boot_specs(config)}
