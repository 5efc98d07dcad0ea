"""`hotline-gateway status`: the media workers (from their Redis heartbeats) and Kamailio's view.

Gathering does the I/O (`gather`); `format_report` is pure, so the table is tested without Redis or
Kamailio. A worker is `alive` while its heartbeat expiry (the score in `hg:workers`) is in the
future; `lapsed` means the core settles (or has settled) its calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.keys import Keys, reply_text
from gateway.sipfront.kamailio import SipFrontError, front_paths
from gateway.sipfront.rpc import FrontRpc, Target

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from gateway.config import GatewayConfig

WORKER_FIELDS = ("sip", "pid", "callers", "legs", "capacity", "audio")


@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker_id: str
    info: dict[str, str]
    expires_in: float  # seconds; negative: the heartbeat lapsed that long ago
    expiry_ms: int = 0  # the heartbeat's expiry, Redis clock (ms)

    @property
    def alive(self) -> bool:
        return self.expires_in > 0


@dataclass(slots=True)
class Report:
    workers: list[WorkerRow] = field(default_factory=list)
    targets: list[Target] | None = None  # None: Kamailio not asked or not reachable
    front_problem: str = ""  # why there are no targets, in plain words
    pool: dict[str, str] = field(default_factory=dict)  # worker id -> its pool slot's state
    runs: dict[str, str] = field(default_factory=dict)  # host -> the id of the `run` serving there now


async def worker_rows(redis: aioredis.Redis, prefix: str) -> list[WorkerRow]:
    keys = Keys(prefix)
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rows = []
    entries: Any = await redis.zrange(keys.workers, 0, -1, withscores=True)
    for member, expiry in entries:
        worker_id = reply_text(member)
        info = await redis.hgetall(keys.worker(worker_id))
        decoded = {reply_text(k): reply_text(v) for k, v in info.items()}
        rows.append(WorkerRow(worker_id, decoded, (float(expiry) - now_ms) / 1000, int(expiry)))
    return sorted(rows, key=lambda row: row.worker_id)


async def gather(config: GatewayConfig, redis: aioredis.Redis) -> Report:
    keys = Keys(config.redis.key_prefix)
    report = Report(workers=await worker_rows(redis, keys.prefix))
    pool: Any = await redis.hgetall(keys.pool)
    report.pool = {reply_text(k): reply_text(v) for k, v in pool.items()}
    for host in sorted({row.info.get("host", "") for row in report.workers} - {""}):
        run_id = await redis.get(keys.run(host))
        if run_id is not None:
            report.runs[host] = reply_text(run_id)
    front = config.sipfront
    if not front.enabled:
        report.front_problem = "the SIP front is not enabled ([sipfront] enabled = false)"
        return report
    rpc = FrontRpc(front.kamcmd, front_paths(config).ctl_socket)
    try:
        report.targets = await rpc.dispatcher()
    except SipFrontError as exc:
        report.front_problem = str(exc)
    return report


def _health(row: WorkerRow, target: Target | None) -> str:
    beat = "alive" if row.alive else f"lapsed {-row.expires_in:.1f} s ago"
    if target is None:
        return beat
    return f"{beat}; kamailio {target.flags} load {target.load}/{target.maxload}"


def belongs(row: WorkerRow, runs: dict[str, str]) -> str:
    """Whose worker this is: the run serving on its host now, a stranger answering under the id
    (an orphan of a killed run, a worker of another run), or one started by hand."""
    mine, current = row.info.get("run", ""), runs.get(row.info.get("host", ""), "")
    if not mine:
        return "by hand"
    if mine == current:
        return "this run"
    return f"STRANGER (run {mine[-6:]}, not {current[-6:] or 'any run'})"


def format_report(report: Report) -> str:
    by_address = {target.address: target for target in report.targets or []}
    lines = ["media workers (redis hg:workers):"]
    header = ("id", *WORKER_FIELDS, "pool", "run", "health")
    rows: list[tuple[str, ...]] = [header]
    for row in report.workers:
        target = by_address.get(row.info.get("sip", ""))
        fields = (row.info.get(name, "-") for name in WORKER_FIELDS)
        pool = report.pool.get(row.worker_id, "-")
        rows.append((row.worker_id, *fields, pool, belongs(row, report.runs), _health(row, target)))
    if len(rows) == 1:
        lines.append("  (none has a heartbeat)")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("kamailio dispatcher (kamcmd dispatcher.list):")
    if report.targets is None:
        lines.append(f"  {report.front_problem or 'not asked'}")
    elif not report.targets:
        lines.append("  (no destinations)")
    known = {row.info.get("sip", "") for row in report.workers}
    for target in sorted(report.targets or [], key=lambda t: t.address):
        state = "up" if target.active else "off" if target.flags.startswith("D") else "DOWN"
        idle_slot = target.flags.startswith("D") and target.address not in known
        note = "" if target.address in known or idle_slot else "  (no worker heartbeat)"
        lines.append(f"  {target.uri:<28} {target.flags:<3} {state:<5} load {target.load}/{target.maxload}{note}")
    return "\n".join(lines)
