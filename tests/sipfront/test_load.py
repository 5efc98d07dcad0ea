"""40 simultaneous callers through Kamailio over 20 media workers: spread by call load, every call
answered and recorded, the 41st refused with 503 by the front.

Real redis-server, Kamailio, 20 worker processes and SIPp with RTP (speech pcap) on every call.
Speech navigation is off here: a PocketSphinx process per worker is not what this test is about
(docs/deploy.md, Costs).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gateway.ticket import Ticket
from peers import audio
from peers.sip import Peers, dtmf_scenario
from tests.sipfront.front_stack import FrontStack, StackArgs, front_stack

pytestmark = pytest.mark.slow

WORKERS = 20
CALLERS = 2 * WORKERS  # calls_per_worker = 4 legs: 2 callers and their agent legs
SPEECH_MS = 7300  # the speech pcap plays to its end before the digit (SIPp plays one pcap at a time)
HOLD_MS = 3000  # after the digit: all callers are up at once (2 s ramp at 20 calls/s) for a while


async def _callers_per_worker(stack: FrontStack) -> dict[str, str] | None:
    info = await stack.worker_info()
    counts = {worker_id: i.get("callers", "-") for worker_id, i in info.items()}
    return counts if all(c == "2" for c in counts.values()) else None


async def _recorded(stack: FrontStack, n: int) -> list[Ticket] | None:
    done = [t for t in await stack.tickets() if t.status == "abandoned" and t.attachments]
    return done if len(done) >= n else None


async def test_40_callers_spread_2_per_worker_all_recorded_and_the_41st_gets_503(
    stack_args: StackArgs, peers: Peers, pcap_playback: None
) -> None:
    tmp_path = stack_args["tmp_path"]
    asr = {"enabled": False, "navigation_enabled": False}
    async with front_stack(**stack_args, workers=WORKERS, asr=asr, deadline=240) as stack:
        # Each caller speaks (pcap), presses 0 (queued: no agent is logged in), holds, hangs up.
        scenario = dtmf_scenario("0", pause_ms_before=SPEECH_MS, hold_ms_after=HOLD_MS, out_dir=tmp_path)
        sipp = await peers.sipp(
            scenario, target=stack.front, service="12345", calls=CALLERS + 1, concurrency=CALLERS + 1, rate=20
        )

        # All 40 up at once: exactly 2 on every worker, by Kamailio's count and by the workers' own.
        targets = await stack.wait_targets(
            lambda t: sum(x.load for x in t.values()) == CALLERS, 15, f"{CALLERS} calls up"
        )
        assert Counter(t.load for t in targets.values()) == {2: WORKERS}, targets
        per_worker = await stack.wait_for(lambda: _callers_per_worker(stack), 5)
        assert len(per_worker) == WORKERS

        result = await sipp.wait(60)
        assert result.successful == CALLERS, str(result)
        assert dict(result.statuses) == {200: CALLERS, 503: 1}, str(result)
        await stack.wait_targets(lambda t: all(x.load == 0 for x in t.values()), 10, "every load back to 0")

        # Every caller's ticket: queued by the digit, abandoned at hang-up, with its recording.
        tickets = await stack.wait_for(lambda: _recorded(stack, CALLERS), 30)
        assert len(tickets) == CALLERS
        assert Counter(t.voice.worker for t in tickets if t.voice) == {w: 2 for w in stack.workers}
        seconds = []
        for ticket in tickets:
            recording = Path(ticket.attachments[0].path or "")
            assert recording.is_relative_to(stack.recordings), recording
            seconds.append(audio.duration(recording))
            assert audio.rms(recording) > 0.02, f"{recording} holds the caller's speech"
        expected = (SPEECH_MS + 400 + HOLD_MS) / 1000
        assert min(seconds) > expected - 1.0 and max(seconds) < expected + 3.0, seconds
