"""Test support for the IVR core: a fake adapter that executes actions and checks the media contract.

The fake keeps what a real adapter would keep (the playing prompt, the recording, armed timers, the
queue slot, the agent's phone) on a virtual clock, and asserts every action is legal at the moment
it arrives: no ``StopPrompt`` with nothing playing, no ``CancelTimer`` of an unknown timer, no ``Play``
of an undefined prompt, no second agent leg, nothing left running once the machine is finished.
Other IVR tests import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from gateway.ivr.actions import (
    Action,
    Bridge,
    CancelTimer,
    Dequeue,
    DialAgent,
    DropAgent,
    EnqueueCall,
    HangUp,
    Play,
    QueryPosition,
    Requeue,
    ScreenPop,
    SetTicketField,
    StartRecording,
    StartTimer,
    StopPrompt,
    StopRecording,
)
from gateway.ivr.events import (
    AgentFailed,
    AgentHungUp,
    Answered,
    Event,
    HungUp,
    PromptFinished,
    RecordingFinished,
    TimerFired,
)
from gateway.ivr.flow import IvrConfig, parse_ivr_toml
from gateway.ivr.machine import CallMachine, Phase

DEFAULT_FLOW_TOML = Path(__file__).resolve().parents[2] / "config" / "flows" / "12345.toml"
PROMPT_SECONDS = 4.0  # every prompt "plays" this long on the virtual clock
NOON = datetime(2026, 3, 10, 12, 0)  # a Tuesday


def default_config() -> IvrConfig:
    return parse_ivr_toml(DEFAULT_FLOW_TOML.read_text(encoding="utf-8"))


def default_machine() -> CallMachine:
    config = default_config()
    return CallMachine(config.flow, config.calendars)


@dataclass
class FakeAdapter:
    """Executes actions like the real adapter would, asserting the contract of ``gateway.ivr.actions``."""

    machine: CallMachine
    clock: float = 0.0
    playing: str | None = None
    prompt_ends: float = 0.0
    recording: str | None = None
    timers: dict[str, float] = field(default_factory=dict)  # name -> deadline on the virtual clock
    queued: str | None = None
    bridged: bool = False
    agent_leg: str | None = None  # the agent whose phone rings or talks
    requeued: list[Requeue] = field(default_factory=list)
    hung_up: bool = False
    fields: dict[str, str] = field(default_factory=dict)
    played: list[Play] = field(default_factory=list)
    prompt_seconds: dict[str, float] = field(default_factory=dict)  # how long each prompt plays; else PROMPT_SECONDS

    def feed(self, event: Event) -> list[Action]:
        was_finished = self.machine.finished
        self._observe(event)
        actions = self.machine.handle(event)
        if was_finished:
            assert actions == [], "a finished machine must not act"
        for action in actions:
            self._apply(action)
        self._check_invariants()
        return actions

    def answer(self, now: datetime = NOON) -> list[Action]:
        return self.feed(Answered(now=now, caller="13800000000", called="12345"))

    def finish_prompt(self) -> list[Action]:
        assert self.playing is not None, "nothing is playing"
        self.clock = max(self.clock, self.prompt_ends)
        return self.feed(PromptFinished(self.playing))

    def fire(self, kind: str) -> list[Action]:
        """Fire the armed timer whose name starts with ``kind``."""
        [name] = [n for n in self.timers if n.startswith(kind + "#")]
        self.clock = max(self.clock, self.timers[name])
        return self.feed(TimerFired(name))

    def next_silent_event(self) -> Event:
        """What happens next to a caller who never presses anything: the earliest prompt end or timer."""
        deadlines: list[tuple[float, Event]] = [(t, TimerFired(n)) for n, t in self.timers.items()]
        if self.playing is not None:
            deadlines.append((self.prompt_ends, PromptFinished(self.playing)))
        assert deadlines, f"a silent caller is stuck in {self.machine.state} at {self.machine.node_id}"
        when, event = min(deadlines, key=lambda pair: pair[0])
        self.clock = max(self.clock, when)
        return event

    # --- contract checks -------------------------------------------------------------------------

    def _observe(self, event: Event) -> None:
        if isinstance(event, PromptFinished) and event.prompt_id == self.playing:
            self.playing = None
        elif isinstance(event, TimerFired):
            self.timers.pop(event.name, None)
        elif isinstance(event, RecordingFinished):
            self.recording = None
        elif isinstance(event, HungUp):
            self.hung_up = True
        elif isinstance(event, AgentHungUp) and self.bridged:
            self.bridged, self.agent_leg = False, None
        elif isinstance(event, AgentFailed) and not self.bridged:  # a bridged leg's end is AgentHungUp
            self.agent_leg = None

    def _apply(self, action: Action) -> None:
        flow = self.machine.flow
        if isinstance(action, Play):
            assert action.prompt in flow.prompts, f"undefined prompt {action.prompt!r}"
            flow.prompts[action.prompt].render(action.params)  # placeholders must all be filled
            seconds = self.prompt_seconds.get(action.prompt, PROMPT_SECONDS)
            self.playing, self.prompt_ends = action.prompt, self.clock + seconds
            self.played.append(action)
        elif isinstance(action, StopPrompt):
            assert self.playing is not None, "StopPrompt with nothing playing"
            self.playing = None
        elif isinstance(action, StartRecording):
            assert self.recording is None, "two recordings at once"
            self.recording = action.kind
        elif isinstance(action, StopRecording):
            assert self.recording is not None, "StopRecording with no recording"
            self.recording = None
        elif isinstance(action, StartTimer):
            assert action.name not in self.timers and action.seconds > 0
            self.timers[action.name] = self.clock + action.seconds
        elif isinstance(action, CancelTimer):
            assert action.name in self.timers, f"cancel of unknown timer {action.name!r}"
            del self.timers[action.name]
        else:
            self._apply_call_control(action)

    def _apply_call_control(self, action: Action) -> None:
        if isinstance(action, EnqueueCall):
            assert self.queued is None and not self.bridged, "enqueued twice"
            self.queued = action.queue
        elif isinstance(action, Dequeue | QueryPosition):
            assert self.queued == action.queue, f"{action} but queued in {self.queued}"
            if isinstance(action, Dequeue):
                self.queued = None
        elif isinstance(action, Bridge):
            assert self.queued is not None, "Bridge while not queued"
            self.queued, self.bridged = None, True
        elif isinstance(action, HangUp):
            assert not self.hung_up, "HangUp after the call ended"
            self.hung_up = True
        elif isinstance(action, SetTicketField):
            self.fields[action.name] = action.value
        else:
            self._apply_agent_leg(action)

    def _apply_agent_leg(self, action: Action) -> None:
        if isinstance(action, DialAgent):
            assert self.queued is not None and self.agent_leg is None, "DialAgent while not queued or ringing"
            self.agent_leg = action.agent
        elif isinstance(action, DropAgent):
            assert self.agent_leg is not None, "DropAgent with no agent leg"
            self.agent_leg = None
        elif isinstance(action, ScreenPop):
            assert action.agent == self.agent_leg, "ScreenPop for an agent whose phone does not ring"
        elif isinstance(action, Requeue):
            assert self.queued is not None, "Requeue while not queued"
            self.requeued.append(action)
        else:  # pragma: no cover - a new action type needs a branch here
            raise AssertionError(f"unknown action {action!r}")

    def _check_invariants(self) -> None:
        machine = self.machine
        assert machine.error is None, f"machine failed: {machine.error!r}"
        if machine.node_id is not None:
            assert machine.node_id in machine.flow.nodes
        if self.hung_up:
            assert machine.finished, "the call ended but the machine is not finished"
        if machine.finished:
            assert not self.timers, f"timers left running: {self.timers}"
            assert self.recording is None, "recording left running"
            assert self.queued is None, "call left in a queue"
            assert self.agent_leg is None, "an agent's phone left up"
        if machine.state is Phase.QUEUED:
            assert self.queued is not None


def run_silent(adapter: FakeAdapter, max_steps: int, stop_when_queued: bool = True) -> int:
    """Play a caller who never presses a key; return the number of events it took to settle."""
    for step in range(max_steps):
        if adapter.machine.finished or (stop_when_queued and adapter.machine.state is Phase.QUEUED):
            return step
        adapter.feed(adapter.next_silent_event())
    raise AssertionError(f"not settled after {max_steps} events: {adapter.machine.state}")


# --- the fake itself ---------------------------------------------------------------------------------


def test_fake_rejects_a_stop_with_nothing_playing() -> None:
    adapter = FakeAdapter(default_machine())
    with pytest.raises(AssertionError, match="nothing playing"):
        adapter._apply(StopPrompt())


def test_fake_rejects_an_undefined_prompt() -> None:
    adapter = FakeAdapter(default_machine())
    with pytest.raises(AssertionError, match="undefined prompt"):
        adapter._apply(Play("nope", barge_in=True))
