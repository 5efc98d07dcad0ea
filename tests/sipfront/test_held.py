"""What goes into a restarted Kamailio's call load from the workers' heartbeats (pure: no Redis, no
Kamailio; the real thing is tests/sipfront/test_restart.py)."""

from __future__ import annotations

from gateway.sipfront.held import Beat, Held, beats_by_address, entry_call_id, gone, plan, waiting_for
from gateway.sipfront.rpc import Target
from gateway.sipfront.status import WorkerRow


def _target(address: str, duid: str, flags: str = "AP", maxload: int = 2) -> Target:
    return Target(uri=f"sip:{address}", flags=flags, duid=duid, maxload=maxload, load=0)


def _beat(address: str, callers: int, *, pid: str = "7", beat_ms: int = 1000, alive: bool = True) -> Beat:
    return Beat(address, pid, callers, beat_ms, alive)


def test_heartbeats_become_beats_by_address_the_newest_one_winning() -> None:
    rows = [
        WorkerRow("w1", {"sip": "10.0.0.1:5070", "pid": "11", "callers": "2"}, 3.0, 10_000),
        # An id left from an old prefix at the same address, lapsed: the newer beat counts.
        WorkerRow("old-w1", {"sip": "10.0.0.1:5070", "pid": "9", "callers": "1"}, -60.0, 2_000),
        WorkerRow("w2", {"sip": "10.0.0.1:5071", "pid": "12", "callers": "x"}, 1.0, 9_000),
        WorkerRow("w3", {"pid": "13", "callers": "1"}, 1.0, 9_000),  # no address: not a destination
    ]
    beats = beats_by_address(rows, worker_timeout_ms=5_000)
    assert beats == {
        "10.0.0.1:5070": Beat("10.0.0.1:5070", "11", 2, 5_000, True),
        "10.0.0.1:5071": Beat("10.0.0.1:5071", "12", 0, 4_000, True),
    }


def test_only_live_workers_whose_beat_is_older_than_the_start_are_waited_for() -> None:
    beats = {
        "a:1": _beat("a:1", 2, beat_ms=900),
        "b:1": _beat("b:1", 2, beat_ms=1_100),
        "c:1": _beat("c:1", 2, beat_ms=500, alive=False),
    }
    assert waiting_for(beats, since_ms=1_000) == ["a:1"]


def test_each_live_worker_gets_an_entry_per_caller_capped_at_its_maxload_switched_off_ones_first() -> None:
    targets = [
        _target("a:1", "w1"),
        _target("b:1", "w2", flags="DX"),  # draining: switched off, still holding a call
        _target("c:1", "w3"),
        _target("d:1", "w4", flags="IP"),  # marked down but beating
        _target("e:1", "w5"),
        _target("f:1", "w6", maxload=0),  # no maxload: every caller counts
    ]
    beats = {
        "a:1": _beat("a:1", 2, pid="1"),
        "b:1": _beat("b:1", 1, pid="2"),
        "c:1": _beat("c:1", 5, pid="3"),  # more than it may hold (a config change): capped
        "d:1": _beat("d:1", 2, pid="4"),
        "e:1": _beat("e:1", 2, pid="5", alive=False),  # lapsed: its calls are settled elsewhere
        "f:1": _beat("f:1", 3, pid="6"),
        "z:1": _beat("z:1", 2, pid="9"),  # not a destination of this front
    }
    assert plan(beats, targets) == [
        Held("b:1", "w2", 1, "2"),
        Held("d:1", "w4", 2, "4"),
        Held("a:1", "w1", 2, "1"),
        Held("c:1", "w3", 2, "3"),
        Held("f:1", "w6", 3, "6"),
    ]
    assert plan({}, targets) == []


def test_a_workers_held_entries_go_when_it_is_gone_restarted_or_empty_not_while_it_has_callers() -> None:
    held = {"a:1": 2, "b:1": 1, "c:1": 2, "d:1": 1, "e:1": 0, "f:1": 2}
    pids = {"a:1": "1", "b:1": "2", "c:1": "3", "d:1": "4", "e:1": "5", "f:1": "6"}
    beats = {
        "a:1": _beat("a:1", 2, pid="1"),  # still holds callers: its entries wait for their BYEs
        "b:1": _beat("b:1", 1, pid="2", alive=False),  # lapsed
        "c:1": _beat("c:1", 0, pid="30"),  # restarted: another process
        "d:1": _beat("d:1", 0, pid="4"),  # holds nobody any more
        "e:1": _beat("e:1", 0, pid="5"),  # nothing held left to drop
        # f:1 has no heartbeat at all
    }
    assert gone(held, pids, beats) == ["b:1", "c:1", "d:1", "f:1"]


def test_held_entries_are_named_so_kamailio_can_remove_the_highest_first() -> None:
    assert entry_call_id("127.0.0.1:5070", 2) == "2.127.0.0.1:5070@hg-held"
