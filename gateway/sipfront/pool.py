"""The media worker pool as the front sees it: who the dispatcher list names, and their ids.

`hotline-gateway run` starts `voice.embedded_workers` workers itself, on `voice.listen`'s port + n
(`WorkerSupervisor` restarts one that dies). The dispatcher list is derived from the same rule
unless `[sipfront] workers` lists the workers explicitly (workers on other hosts or addresses).

Each destination holds at most `voice.calls_per_worker // 2` callers (`maxload`): a caller may need
a second leg for its agent, and the agent leg is not counted by the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.sipfront.config import split_host_port
from gateway.supervisor import WorkerSpec

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
    """The workers `run` starts: ids w1..wN on consecutive ports from `voice.listen`."""
    host, port = split_host_port(config.voice.listen)
    address = f"[{host}]" if ":" in host else host
    return [WorkerSpec(f"w{n + 1}", f"{address}:{port + n}") for n in range(config.voice.embedded_workers)]


def destinations(config: GatewayConfig) -> list[Destination]:
    maxload = caller_capacity(config.voice.calls_per_worker)
    if config.sipfront.workers:
        pairs = [(f"d{n + 1}", address) for n, address in enumerate(config.sipfront.workers)]
    else:
        pairs = [(spec.worker_id, spec.listen) for spec in worker_specs(config)]
    return [Destination(duid, *split_host_port(address), maxload=maxload) for duid, address in pairs]
