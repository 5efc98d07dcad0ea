"""Agent phones register at the front (digest auth), and Kamailio restarts lose them (db_mode 0).

Real Kamailio and real baresip phones; no media worker is needed for the registrar.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from peers.sip import PeerError, Peers
from tests.sipfront.front_stack import PHONE_PASSWORDS, FrontStack, StackArgs, front_stack

pytestmark = pytest.mark.slow


async def _register(peers: Peers, stack: FrontStack, wav: Path, user: str, password: str) -> object:
    return await peers.agent(wav, user=user, registrar=stack.front, auth_pass=password, regint=60)


async def test_agent_phone_registers_with_digest_auth_and_a_wrong_password_gets_no_binding(
    stack_args: StackArgs, peers: Peers, tone_wav: Path, baresip_available: None
) -> None:
    async with front_stack(**stack_args, workers=0) as stack:
        assert stack.rpc is not None
        await _register(peers, stack, tone_wav, "1001", PHONE_PASSWORDS["1001"])
        contacts = await stack.rpc.contacts("1001")
        assert len(contacts) == 1 and contacts[0].startswith("sip:1001"), contacts

        with pytest.raises(PeerError, match="failed to register") as refused:
            await _register(peers, stack, tone_wav, "1002", "not-the-password-of-1002")
        assert "401 Unauthorized" in str(refused.value), "the phone's log shows the challenge it could not meet"
        assert await stack.rpc.contacts("1002") == []

        with pytest.raises(PeerError, match="failed to register"):
            await _register(peers, stack, tone_wav, "9999", PHONE_PASSWORDS["1001"])  # unknown user
        assert await stack.rpc.contacts("9999") == []


async def test_killed_kamailio_is_restarted_and_registrations_are_lost_until_the_phone_registers_again(
    stack_args: StackArgs, peers: Peers, tone_wav: Path, baresip_available: None
) -> None:
    async with front_stack(**stack_args, workers=0) as stack:
        assert stack.rpc is not None and stack.kamailio is not None
        stack.kamailio.restart_delay = 0.3
        stack.kamailio.supervise()
        await _register(peers, stack, tone_wav, "1001", PHONE_PASSWORDS["1001"])
        assert await stack.rpc.contacts("1001")
        old_pid = stack.kamailio.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)

        async def restarted() -> bool:
            return stack.kamailio is not None and stack.kamailio.starts == 2 and stack.kamailio.pid is not None

        await stack.wait_for(restarted, 10)
        await stack.wait_for(lambda: _answers(stack), 10)
        assert _live_in_group(old_pid) == [], "nothing of the old Kamailio is left (its whole group was ended)"
        assert await stack.rpc.contacts("1001") == [], "usrloc db_mode 0: bindings are in memory only"
        # A phone's next REGISTER (at its regint; here a phone started now) binds it again.
        await _register(peers, stack, tone_wav, "1001", PHONE_PASSWORDS["1001"])
        assert await stack.rpc.contacts("1001")


def _live_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (an orphan's zombie waits for PID 1)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


async def _answers(stack: FrontStack) -> bool:
    assert stack.rpc is not None
    try:
        await stack.rpc.call("core.uptime")
    except Exception:
        return False
    return True
