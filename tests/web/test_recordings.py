"""A ticket's recording served to the console: seekable (HTTP range requests answered 206 with the
bytes asked), for the agent holding the ticket or a supervisor only, and only from the recordings
directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.ticket import Attachment, Citizen
from tests.conftest import ConfigFactory
from tests.helpers import Seat, queued_ticket, running_gateway
from tests.web.console.support import console_listen
from tests.web.test_seats_console import SUPERVISOR_TOKEN, SUPERVISORS, console_client

# A WAV-sized file of known bytes: the ranges asked can be checked byte for byte.
AUDIO = bytes(range(256)) * 64


@pytest.fixture
def recordings_config(config_factory: ConfigFactory, tmp_path: Path) -> GatewayConfig:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    return config_factory(**console_listen(), supervisors=SUPERVISORS, voice={"recordings_dir": str(recordings)})


async def test_the_holder_seeks_in_a_recording_others_get_nothing(
    recordings_config: GatewayConfig, tmp_path: Path
) -> None:
    recordings = recordings_config.resolve(recordings_config.voice.recordings_dir)
    (recordings / "call-1.wav").write_bytes(AUDIO)
    (tmp_path / "secret.wav").write_bytes(b"not a recording")
    attachments = (
        Attachment(kind="recording", path=str(recordings / "call-1.wav"), mime="audio/wav", seconds=4.0),
        Attachment(kind="recording", path="../secret.wav", mime="audio/wav"),  # outside the directory
    )
    ticket = queued_ticket("rec-1", channel="voice", citizen=Citizen(phone="13812345678"), attachments=attachments)
    async with running_gateway(recordings_config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        await gateway.queue.intake(ticket, "worker:w1")
        assert (await seat.expect("offer"))["ticket"]["id"] == ticket.id
        path = f"/console/api/recording?ticket={ticket.id}&n=0"
        async with console_client(bound, "a1") as agent:
            async with agent.get(path) as whole:
                assert (whole.status, await whole.read()) == (200, AUDIO)
                assert whole.headers["Accept-Ranges"] == "bytes"
                assert whole.headers["Content-Type"] == "audio/wav"
                assert whole.headers["Cache-Control"] == "private, no-store"
            async with agent.get(path, headers={"Range": "bytes=1000-1999"}) as part:
                assert (part.status, await part.read()) == (206, AUDIO[1000:2000])
                assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(AUDIO)}"
            for wrong in (
                f"ticket={ticket.id}&n=1",
                f"ticket={ticket.id}&n=2",
                f"ticket={ticket.id}&n=x",
                "ticket=nope",
            ):
                async with agent.get(f"/console/api/recording?{wrong}") as refused:
                    assert refused.status == 404, wrong
                    assert b"secret" not in await refused.read()
        async with console_client(bound, "a2") as other, other.get(path) as refused:  # not the holder
            assert refused.status == 404
        async with console_client(bound, None) as nobody, nobody.get(path) as refused:
            assert refused.status == 401
        async with (
            console_client(bound, "s1", SUPERVISOR_TOKEN) as supervisor,
            supervisor.get(path, headers={"Range": "bytes=-16"}) as tail,
        ):
            assert (tail.status, await tail.read()) == (206, AUDIO[-16:])
        await seat.close()
