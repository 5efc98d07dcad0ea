"""The wallboard's pure core (gateway/web/board.py): queue figures from the streams and the day's
counters, presence diffs, intake per hour, IVR nodes, live processes; and supervisors' credentials
issued by `init-credentials` like agents'."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

from gateway.config import GatewayConfig, load_config, verify_secret
from gateway.messages import Escalated
from gateway.queue.store import QueueStats
from gateway.web import board
from gateway.web.board import Counters, Presence, StreamFigures
from gateway.web.wallboard import intake_slot

ROOT = Path(__file__).resolve().parents[3]


def test_waiting_counts_undelivered_and_returned_entries_and_the_oldest_of_them() -> None:
    streams = [StreamFigures(5, 3, 1, 1_000), StreamFigures(2, 0, 0, 4_000), StreamFigures(1, 1, 0, None)]
    stats = QueueStats(answered=4, in_service_level=3, wait_ms=10_000, submitted=2, abandoned=1)
    row = board.queue_row("general", "综合受理", streams, stats)
    # 5 - 3 + 1 + 2 waiting; 2 + 1 with agents; the oldest of the streams with someone waiting
    assert (row["waiting"], row["with_agents"], row["oldest_ms"]) == (5, 3, 1_000)
    assert (row["service_level"], row["average_answer_s"], row["handled"], row["abandoned"]) == (0.75, 2.5, 2, 1)
    empty = board.queue_row("housing", "", [StreamFigures(0, 0, 0, None)], QueueStats())
    assert (empty["label"], empty["waiting"], empty["oldest_ms"], empty["service_level"]) == ("housing", 0, None, None)


def test_presence_is_written_on_change_only_and_a_departed_seat_is_forgotten() -> None:
    held, changed, gone = board.presence_changes({}, {"a1": "ready"}, 100)
    assert held == changed == {"a1": Presence("ready", 100)} and gone == []
    held, changed, gone = board.presence_changes(held, {"a1": "ready", "a2": "away"}, 200)
    assert changed == {"a2": Presence("away", 200)} and held["a1"] == Presence("ready", 100)  # still since 100
    held, changed, gone = board.presence_changes(held, {"a2": "busy"}, 300)
    assert (held, changed, gone) == ({"a2": Presence("busy", 300)}, {"a2": Presence("busy", 300)}, ["a1"])


def test_intake_hours_nodes_and_processes_from_their_counters() -> None:
    series = board.intake_series({"web:09": "3", "sms:09": "1", "web:10": "2", "web:99": "7", "bad": "1"})
    assert list(series) == ["sms", "web"] and series["web"][9:11] == [3, 2] and sum(series["sms"]) == 1
    metrics = {"voice.calls": "9", "voice.node.welcome": "5", "voice.node.menu": "4"}
    assert board.node_calls(metrics) == {"menu": 4, "welcome": 5}
    live, stale = board.live_processes(
        {"h:1": board.process_beat(3, 50_000), "h:2": board.process_beat(1, 10_000), "h:3": "junk"}, 45_000
    )
    assert live == [{"process": "h:1", "config_version": 3}] and stale == ["h:2", "h:3"]


def test_an_entry_counts_in_the_local_hour_of_its_id() -> None:
    local = time.localtime(1764752400)  # 2025-12-03 09:00 UTC, in this host's zone
    assert intake_slot("1764752400000-0") == (time.strftime("%Y%m%d", local), f"{local.tm_hour:02d}")


def test_the_board_lists_every_queue_and_agent(config: GatewayConfig) -> None:
    counters = Counters(streams={}, stats={}, seats={"a1": Presence("busy", 7)}, intake={}, metrics={}, processes=[])
    computed = board.board(config, counters, "20261203", datetime(2026, 12, 3, 2, 0, tzinfo=UTC))
    queues = cast(list[dict[str, object]], computed["queues"])
    assert [q["name"] for q in queues] == [q.name for q in config.queues]
    agents = {a["id"]: (a["state"], a["since_ms"]) for a in cast(list[dict[str, object]], computed["agents"])}
    assert agents["a1"] == ("busy", 7) and agents["a2"] == ("offline", None)


def test_the_board_shows_the_newest_escalations_as_read_each_as_a_row() -> None:
    cst = timezone(timedelta(hours=8))
    due = datetime(2026, 3, 13, 17, 30, tzinfo=cst)
    events = [
        Escalated(
            f"01T{i}", "general", "resolve", "report" if i % 2 else "reminder", due, datetime(2026, 3, 16, tzinfo=cst)
        )
        for i in range(board.ESCALATIONS_SHOWN + 5)
    ]
    rows = board.escalation_rows(events)
    assert len(rows) == board.ESCALATIONS_SHOWN and rows[0]["ticket"] == "01T0"
    assert rows[1] == {"ticket": "01T1", "queue": "general", "clock": "resolve", "kind": "report",
                       "due": "2026-03-13T17:30:00+08:00", "at": "2026-03-16T00:00:00+08:00"}  # fmt: skip


def test_init_credentials_issues_supervisors_their_own_secrets(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    config = tmp_path / "config" / "gateway.toml"
    config.write_text(config.read_text() + '\n[[supervisors]]\nid = "s1"\nname = "赵班长"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "init-credentials", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    issued = {
        tuple(line.split()[:2]): line.split()[2]
        for line in (tmp_path / "var" / "dev-tokens.txt").read_text().splitlines()
    }
    supervisor = load_config(config, environ={}).supervisors[0]
    assert supervisor.id == "s1" and verify_secret(issued[("supervisor", "s1")], supervisor.token_hash)
