"""CallMachine, branch by branch, on the default 12345 flow (and small variations of it)."""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from gateway.ivr import flow as flow_module
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
)
from gateway.ivr.events import (
    EVENT_TYPES,
    AgentAnswered,
    AgentFailed,
    AgentHungUp,
    AgentOffered,
    AgentRinging,
    Answered,
    Digit,
    HungUp,
    IntakeRefused,
    Position,
    PromptFinished,
    RecordingFinished,
    SpeechResult,
    TimerFired,
)
from gateway.ivr.flow import IvrConfig
from gateway.ivr.machine import ENTER, TRANSITIONS, CallMachine, Phase
from tests.ivr.test_fakes import DEFAULT_FLOW_TOML, NOON, FakeAdapter, default_config, default_machine

Raw = dict[str, Any]

GENERAL = EnqueueCall("general", 1)
ENTERPRISE = EnqueueCall("enterprise", 2)
HOLD = Play("hold", barge_in=False)
DEFAULT_CONFIG = default_config()


def machine_with(mutate: Callable[[Raw], None]) -> CallMachine:
    raw = tomllib.loads(DEFAULT_FLOW_TOML.read_text(encoding="utf-8"))["ivr"]
    mutate(raw)
    config = IvrConfig.model_validate(raw)
    return CallMachine(config.flow, config.calendars)


def phase_of(call: FakeAdapter) -> Phase:
    """The phase, read through a call so mypy does not narrow it across steps."""
    return call.machine.state


def only_timer(actions: list[Action]) -> StartTimer:
    [timer] = actions
    assert isinstance(timer, StartTimer)
    return timer


def kinds(actions: list[Action]) -> list[str]:
    """Action class names, with the timer kind for timers: enough to read a sequence at a glance."""
    out = []
    for action in actions:
        if isinstance(action, StartTimer | CancelTimer):
            out.append(f"{type(action).__name__}({action.name.split('#')[0]})")
        else:
            out.append(type(action).__name__)
    return out


@pytest.fixture
def call() -> FakeAdapter:
    return FakeAdapter(default_machine())


def at_menu(call: FakeAdapter) -> FakeAdapter:
    call.answer()
    call.finish_prompt()  # greeting
    assert phase_of(call) is Phase.MENU_PROMPT
    return call


def queued_general(call: FakeAdapter) -> FakeAdapter:
    at_menu(call).feed(Digit("0"))
    assert phase_of(call) is Phase.QUEUED
    return call


def bridged(call: FakeAdapter) -> FakeAdapter:
    queued_general(call).feed(AgentAnswered())
    return call


@pytest.fixture
def agent_call() -> FakeAdapter:
    """A call on a machine that rings an agent for 20 s at most (`[voice] agent_answer_timeout`)."""
    config = DEFAULT_CONFIG
    return FakeAdapter(CallMachine(config.flow, config.calendars, agent_answer_seconds=20.0))


@pytest.fixture
def ringing(agent_call: FakeAdapter) -> FakeAdapter:
    """Queued in general; a1's seat accepted and a1's phone rings."""
    queued_general(agent_call).feed(AgentOffered("a1", "sip:1001@127.0.0.1:5080"))
    return agent_call


# --- the table itself ------------------------------------------------------------------------------


def test_the_table_has_a_row_for_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)
    for row in TRANSITIONS.values():
        assert set(row) <= set(EVENT_TYPES)


def test_hang_up_is_handled_in_every_live_phase() -> None:
    assert all(HungUp in row for phase, row in TRANSITIONS.items() if phase is not Phase.DONE)


def test_every_node_type_can_be_entered() -> None:
    node_union = typing.get_args(typing.get_args(flow_module.Node)[0])
    assert set(ENTER) == set(node_union)


def test_not_an_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not an IVR event"):
        default_machine().handle("1")  # type: ignore[arg-type]


# --- before the answer ---------------------------------------------------------------------------


def test_nothing_happens_before_the_answer(call: FakeAdapter) -> None:
    assert phase_of(call) is Phase.IDLE
    assert call.feed(Digit("0")) == []
    assert call.feed(PromptFinished("greeting")) == []
    assert call.machine.path == []
    assert call.machine.ignored == 2
    assert call.machine.node_id is None


def test_hang_up_before_the_answer_is_abandoned(call: FakeAdapter) -> None:
    assert call.feed(HungUp()) == []
    assert call.machine.finished
    assert call.machine.outcome == "abandoned"


# --- play and business hours ---------------------------------------------------------------------


def test_answer_plays_the_greeting(call: FakeAdapter) -> None:
    assert call.answer() == [Play("greeting", barge_in=True)]
    assert (call.machine.state, call.machine.node_id) == (Phase.PLAY, "greeting")


def test_a_second_answer_is_ignored(call: FakeAdapter) -> None:
    call.answer()
    assert call.feed(Answered(NOON, "1", "2")) == []


def test_greeting_then_7x24_hours_then_menu(call: FakeAdapter) -> None:
    call.answer()
    assert call.finish_prompt() == [Play("main_menu", barge_in=True)]
    assert call.machine.node_id == "main_menu"


def test_non_human_keys_do_not_interrupt_a_play_node(call: FakeAdapter) -> None:
    call.answer()
    assert call.feed(Digit("1")) == []
    assert call.machine.path == []


def test_a_stale_prompt_end_is_ignored(call: FakeAdapter) -> None:
    call.answer()
    assert call.feed(PromptFinished("main_menu")) == []
    assert phase_of(call) is Phase.PLAY


def _office_hours(raw: Raw) -> None:
    raw["calendars"]["hotline"] = {"weekly": {"mon": ["09:00-17:00"]}, "holidays": ["2026-01-05"]}


@pytest.mark.parametrize(
    ("now", "prompt"),
    [
        (datetime(2026, 1, 12, 10, 0), "main_menu"),  # Monday, open
        (datetime(2026, 1, 12, 18, 0), "closed"),  # Monday evening
        (datetime(2026, 1, 5, 10, 0), "closed"),  # a (test) holiday
        (datetime(2026, 1, 13, 10, 0), "closed"),  # Tuesday: no hours
    ],
)
def test_business_hours_route_by_the_answer_time(now: datetime, prompt: str) -> None:
    call = FakeAdapter(machine_with(_office_hours))
    call.answer(now)
    assert call.finish_prompt() == [Play(prompt, barge_in=True)]


# --- menu ----------------------------------------------------------------------------------------


def test_option_during_the_prompt_barges_in(call: FakeAdapter) -> None:
    at_menu(call)
    actions = call.feed(Digit("1"))
    assert actions[:3] == [StopPrompt(), ENTERPRISE, HOLD]
    assert kinds(actions[3:]) == ["StartTimer(queue.position)", "StartTimer(queue.max_wait)"]
    assert only_timer(actions[4:]).seconds == 120
    assert call.machine.path == ["1"]
    assert call.machine.outcome == "queued:enterprise"


def test_option_after_the_prompt_cancels_the_input_timer(call: FakeAdapter) -> None:
    at_menu(call)
    timer = only_timer(call.finish_prompt())
    assert timer.seconds == 5
    actions = call.feed(Digit("2"))
    assert actions == [CancelTimer(timer.name), Play("speech", barge_in=True)]
    assert phase_of(call) is Phase.SPEECH_PROMPT


def test_invalid_key_plays_the_invalid_prompt_then_the_menu_again(call: FakeAdapter) -> None:
    at_menu(call)
    assert call.feed(Digit("7")) == [StopPrompt(), Play("invalid", barge_in=True)]
    assert phase_of(call) is Phase.MENU_PROMPT
    assert call.finish_prompt() == [Play("main_menu", barge_in=True)]
    assert kinds(call.finish_prompt()) == ["StartTimer(input.timeout)"]
    assert phase_of(call) is Phase.MENU_WAIT
    assert call.machine.path == ["7"]


def test_keys_work_during_the_invalid_prompt(call: FakeAdapter) -> None:
    at_menu(call).feed(Digit("*"))
    assert call.feed(Digit("1"))[:2] == [StopPrompt(), ENTERPRISE]
    assert call.machine.path == ["*", "1"]


def with_timeout_prompt(raw: Raw) -> None:
    raw["flow"]["prompts"]["no_input"] = {"text": "对不起，没有收到您的按键。"}
    raw["flow"]["nodes"]["main_menu"].update(timeout_prompt="no_input", max_retries=2)


def test_timeout_plays_the_timeout_prompt_then_the_menu() -> None:
    call = FakeAdapter(machine_with(with_timeout_prompt))
    at_menu(call).finish_prompt()
    assert call.fire("input.timeout") == [Play("no_input", barge_in=True)]
    assert call.finish_prompt() == [Play("main_menu", barge_in=True)]


def test_after_max_retries_the_default_node() -> None:
    call = FakeAdapter(machine_with(with_timeout_prompt))
    at_menu(call).finish_prompt()
    call.fire("input.timeout")  # retry 1
    call.finish_prompt()
    call.finish_prompt()
    call.feed(Digit("9"))  # retry 2 (invalid key, counted with timeouts)
    call.finish_prompt()
    call.finish_prompt()
    actions = call.fire("input.timeout")  # third failure > max_retries = 2
    assert actions[:2] == [GENERAL, HOLD]
    assert call.machine.node_id == "queue_general"
    assert call.machine.path == ["9"]


def test_the_shipped_menu_repeats_itself_once_after_silence_then_queues(call: FakeAdapter) -> None:
    # No timeout prompt: the repeat of the menu is the cue; max_retries = 1.
    at_menu(call).finish_prompt()
    assert call.fire("input.timeout") == [Play("main_menu", barge_in=True)]
    call.finish_prompt()
    assert call.fire("input.timeout")[:2] == [GENERAL, HOLD]


def test_the_shipped_menu_counts_an_invalid_key_with_a_timeout(call: FakeAdapter) -> None:
    at_menu(call).finish_prompt()
    call.fire("input.timeout")  # retry 1
    assert call.feed(Digit("9"))[:3] == [StopPrompt(), GENERAL, HOLD]  # second failure > max_retries = 1
    assert call.machine.path == ["9"]


def test_zero_retries_go_straight_to_default() -> None:
    call = FakeAdapter(machine_with(lambda raw: raw["flow"]["nodes"]["main_menu"].update(max_retries=0)))
    at_menu(call)
    assert call.feed(Digit("5"))[:2] == [StopPrompt(), GENERAL]


def test_a_stale_timer_is_ignored(call: FakeAdapter) -> None:
    at_menu(call)
    timer = only_timer(call.finish_prompt())
    call.feed(Digit("8"))  # cancels the timer; the adapter may still deliver it
    assert call.machine.handle(TimerFired(timer.name)) == []
    assert call.machine.handle(TimerFired("input.timeout#999")) == []
    assert phase_of(call) is Phase.MENU_PROMPT


def test_timer_names_are_unique_and_carry_a_sequence() -> None:
    call = FakeAdapter(machine_with(with_timeout_prompt))  # two retries: two timeouts in the menu
    at_menu(call).finish_prompt()
    names = []
    for _ in range(2):
        names.append(next(iter(call.timers)))
        call.fire("input.timeout")
        call.finish_prompt()
        call.finish_prompt()
    assert len(set(names)) == 2
    assert all(name.startswith("input.timeout#") for name in names)


# --- the human key ---------------------------------------------------------------------------------


def test_human_key_during_the_greeting(call: FakeAdapter) -> None:
    call.answer()
    actions = call.feed(Digit("0"))
    assert actions[:3] == [StopPrompt(), GENERAL, HOLD]
    assert call.machine.path == ["0"]
    assert call.machine.node_id == "queue_general"


def test_human_key_in_the_menu_wait(call: FakeAdapter) -> None:
    at_menu(call).finish_prompt()
    actions = call.feed(Digit("0"))
    assert kinds(actions[:2]) == ["CancelTimer(input.timeout)", "EnqueueCall"]
    assert actions[1] == GENERAL


def test_human_key_is_ignored_once_queued(call: FakeAdapter) -> None:
    queued_general(call)
    ignored = call.machine.ignored
    assert call.feed(Digit("0")) == []
    assert call.feed(Digit("1")) == []
    assert call.machine.path == ["0"]
    assert call.machine.ignored == ignored + 2


def test_human_key_is_ignored_while_talking_to_an_agent(call: FakeAdapter) -> None:
    bridged(call)
    assert call.feed(Digit("0")) == []


# --- collect_speech ------------------------------------------------------------------------------


def listening(call: FakeAdapter) -> FakeAdapter:
    at_menu(call).feed(Digit("2"))
    actions = call.finish_prompt()
    assert actions[0] == StartRecording("speech", 60, 2)
    assert kinds(actions[1:]) == ["StartTimer(speech.max)"]
    assert phase_of(call) is Phase.SPEECH_LISTEN
    return call


def test_a_final_result_is_stored_and_the_call_queued(call: FakeAdapter) -> None:
    listening(call)
    assert call.feed(SpeechResult("我要", 0.5, final=False)) == []
    actions = call.feed(SpeechResult(" 我要反映噪音扰民问题 ", 0.87, final=True))
    assert actions[:2] == [
        SetTicketField("speech_text", "我要反映噪音扰民问题"),
        SetTicketField("speech_confidence", "0.87"),
    ]
    assert kinds(actions[2:5]) == ["StopRecording", "CancelTimer(speech.max)", "EnqueueCall"]
    assert actions[4] == GENERAL


def test_an_empty_final_result_stores_nothing(call: FakeAdapter) -> None:
    listening(call)
    actions = call.feed(SpeechResult("  ", 0.1, final=True))
    assert not any(isinstance(a, SetTicketField) for a in actions)
    assert phase_of(call) is Phase.QUEUED


def test_hash_stops_and_waits_for_the_final_text(call: FakeAdapter) -> None:
    listening(call)
    actions = call.feed(Digit("#"))
    assert kinds(actions) == ["StopRecording", "CancelTimer(speech.max)", "StartTimer(speech.flush)"]
    assert phase_of(call) is Phase.SPEECH_FLUSH
    actions = call.feed(SpeechResult("路灯坏了", 0.9, final=True))
    assert actions[0] == SetTicketField("speech_text", "路灯坏了")
    assert kinds(actions[2:4]) == ["CancelTimer(speech.flush)", "EnqueueCall"]
    assert call.machine.path == ["2", "#"]


def test_max_seconds_then_no_text_in_time(call: FakeAdapter) -> None:
    listening(call)
    assert kinds(call.fire("speech.max")) == ["StopRecording", "StartTimer(speech.flush)"]
    actions = call.fire("speech.flush")
    assert actions[0] == GENERAL
    assert "speech_text" not in call.fields


def test_the_recorder_stopping_by_itself_waits_for_the_text(call: FakeAdapter) -> None:
    listening(call)
    actions = call.feed(RecordingFinished("/rec/1.wav", 12.0))
    assert kinds(actions) == ["CancelTimer(speech.max)", "StartTimer(speech.flush)"]


def test_other_keys_while_listening_are_ignored(call: FakeAdapter) -> None:
    listening(call)
    assert call.feed(Digit("5")) == []


def test_human_key_while_listening_stops_the_recording(call: FakeAdapter) -> None:
    listening(call)
    assert kinds(call.feed(Digit("0"))[:3]) == ["StopRecording", "CancelTimer(speech.max)", "EnqueueCall"]


def test_human_key_while_flushing(call: FakeAdapter) -> None:
    listening(call).feed(Digit("#"))
    assert kinds(call.feed(Digit("0"))[:2]) == ["CancelTimer(speech.flush)", "EnqueueCall"]
    assert call.feed(Digit("1")) == []


def test_hanging_up_while_listening(call: FakeAdapter) -> None:
    listening(call)
    assert kinds(call.feed(HungUp())) == ["StopRecording", "CancelTimer(speech.max)"]
    assert call.machine.outcome == "abandoned"


def test_a_spoken_request_then_hanging_up_in_the_queue_is_a_message(call: FakeAdapter) -> None:
    listening(call).feed(SpeechResult("投诉", 0.8, final=True))
    actions = call.feed(HungUp())
    assert actions[-1] == Dequeue("general", "abandoned")
    assert call.machine.outcome == "message"


# --- queue ---------------------------------------------------------------------------------------


def test_enqueue_sequence(call: FakeAdapter) -> None:
    at_menu(call)
    actions = call.feed(Digit("0"))
    assert kinds(actions) == [
        "StopPrompt",
        "EnqueueCall",
        "Play",
        "StartTimer(queue.position)",
        "StartTimer(queue.max_wait)",
    ]
    assert [a.seconds for a in actions if isinstance(a, StartTimer)] == [30, 300]


def test_hold_prompt_loops(call: FakeAdapter) -> None:
    queued_general(call)
    assert call.finish_prompt() == [HOLD]


def test_position_announcements(call: FakeAdapter) -> None:
    queued_general(call)
    actions = call.fire("queue.position")
    assert actions[0] == QueryPosition("general")
    assert kinds(actions[1:]) == ["StartTimer(queue.position)"]
    assert call.feed(Position(3)) == [Play("position", barge_in=False, params=(("n", "3"),))]
    assert call.machine.flow.prompts["position"].render((("n", "3"),)) == "您前面还有3位，请耐心等待。"
    assert call.finish_prompt() == [HOLD]
    assert call.feed(Position(0)) == []  # next in line: nothing useful to say


def test_no_position_prompt_no_announcements() -> None:
    def no_positions(raw: Raw) -> None:
        raw["flow"]["nodes"]["queue_general"].pop("position_prompt")
        raw["flow"]["nodes"]["queue_general"].pop("max_wait_seconds")

    call = FakeAdapter(machine_with(no_positions))
    at_menu(call)
    assert kinds(call.feed(Digit("0"))) == ["StopPrompt", "EnqueueCall", "Play"]
    assert call.feed(Position(2)) == []


def overflowed_sequence(actions: list[Action]) -> None:
    assert kinds(actions) == [
        "StopPrompt",
        "CancelTimer(queue.position)",
        "Dequeue",
        "Play",
    ]
    assert actions[2] == Dequeue("general", "overflow")
    assert actions[3] == Play("overflow", barge_in=True)


def test_max_wait_goes_to_overflow(call: FakeAdapter) -> None:
    queued_general(call)
    overflowed_sequence(call.fire("queue.max_wait"))
    assert (call.machine.state, call.machine.node_id) == (Phase.MESSAGE_PROMPT, "overflow_message")
    assert call.machine.outcome is None


def test_a_full_queue_refusing_the_call_goes_to_overflow_at_once(call: FakeAdapter) -> None:
    queued_general(call)
    actions = call.feed(IntakeRefused("queue_full"))
    assert kinds(actions)[:3] == ["StopPrompt", "CancelTimer(queue.position)", "CancelTimer(queue.max_wait)"]
    assert actions[3:] == [Dequeue("general", "overflow"), Play("overflow", barge_in=True)]
    assert call.machine.refused == "queue_full"


def test_an_unreachable_store_plays_the_apology_then_records_a_message(call: FakeAdapter) -> None:
    queued_general(call)
    actions = call.feed(IntakeRefused("unavailable"))
    assert actions[3:] == [Dequeue("general", "overflow"), Play("unavailable", barge_in=True)]
    assert call.machine.node_id == "unavailable_message" and call.machine.refused == "unavailable"
    assert kinds(call.finish_prompt()) == ["StartRecording", "StartTimer(message.max)"]
    call.feed(HungUp())  # hanging up ends the message
    assert call.machine.outcome == "message"


def test_an_unreachable_store_without_an_unavailable_node_takes_the_overflow() -> None:
    call = FakeAdapter(machine_with(lambda raw: raw["flow"]["nodes"]["queue_general"].pop("unavailable")))
    queued_general(call)
    assert call.feed(IntakeRefused("unavailable"))[-1] == Play("overflow", barge_in=True)


def test_a_refusal_after_the_caller_left_the_queue_is_ignored(call: FakeAdapter) -> None:
    queued_general(call).fire("queue.max_wait")
    assert call.feed(IntakeRefused("queue_full")) == []
    assert call.machine.refused is None


def test_a_refusal_reason_the_machine_cannot_read_is_an_adapter_bug() -> None:
    with pytest.raises(ValueError, match="not a refusal"):
        IntakeRefused("busy")  # type: ignore[arg-type]


def test_agent_failure_while_queued_is_ignored(call: FakeAdapter) -> None:
    queued_general(call)
    assert call.feed(AgentFailed()) == []


def test_hanging_up_in_the_queue(call: FakeAdapter) -> None:
    queued_general(call)
    actions = call.feed(HungUp())
    assert kinds(actions) == ["CancelTimer(queue.position)", "CancelTimer(queue.max_wait)", "Dequeue"]
    assert actions[-1] == Dequeue("general", "abandoned")
    assert call.machine.outcome == "abandoned"


# --- agent and survey ----------------------------------------------------------------------------


def test_agent_answers(call: FakeAdapter) -> None:
    queued_general(call)
    actions = call.feed(AgentAnswered())
    assert kinds(actions) == [
        "StopPrompt",
        "CancelTimer(queue.position)",
        "CancelTimer(queue.max_wait)",
        "Bridge",
    ]
    assert phase_of(call) is Phase.BRIDGED
    assert call.machine.outcome == "bridged:general"
    assert not call.machine.finished


def test_agent_leg_fails_and_the_caller_is_queued_again(ringing: FakeAdapter) -> None:
    actions = ringing.feed(AgentFailed(486))
    assert kinds(actions) == ["CancelTimer(agent.ring)", "Requeue"]
    assert actions[-1] == Requeue("a1", "agent_failed_486")
    assert ringing.machine.outcome == "queued:general"
    assert ringing.playing == "hold", "the caller keeps waiting, the hold prompt still playing"
    ringing.feed(HungUp())
    assert ringing.machine.outcome == "abandoned"


def test_an_offer_rings_the_agent_with_a_ring_timer(agent_call: FakeAdapter) -> None:
    queued_general(agent_call)
    actions = agent_call.feed(AgentOffered("a1", "sip:1001@127.0.0.1:5080"))
    assert actions[0] == DialAgent("a1", "sip:1001@127.0.0.1:5080")
    assert kinds(actions[1:]) == ["StartTimer(agent.ring)"] and only_timer(actions[1:]).seconds == 20.0
    assert agent_call.feed(AgentRinging()) == [ScreenPop("a1")]
    assert agent_call.feed(AgentOffered("boss", "sip:1003@127.0.0.1:5080")) == [], "one phone at a time"


def test_no_ring_timeout_configured_rings_until_the_call_leaves_the_queue(call: FakeAdapter) -> None:
    queued_general(call)
    assert call.feed(AgentOffered("a1", "sip:1001@127.0.0.1:5080")) == [DialAgent("a1", "sip:1001@127.0.0.1:5080")]


def test_a_phone_that_rings_out_is_dropped_and_requeued_as_no_answer(ringing: FakeAdapter) -> None:
    assert ringing.fire("agent.ring") == [DropAgent()]
    assert ringing.feed(AgentRinging()) == [], "no screen pop for a phone being dropped"
    assert ringing.feed(AgentAnswered()) == [], "not bridged to a phone being dropped"
    # The leg's end comes with the phone's answer to our CANCEL: not its reason.
    assert ringing.feed(AgentFailed(200)) == [Requeue("a1", "agent_no_answer")]
    assert ringing.feed(AgentOffered("boss", "sip:1003@x"))[0] == DialAgent("boss", "sip:1003@x")


def test_an_answering_phone_is_bridged_and_its_ring_timer_cancelled(ringing: FakeAdapter) -> None:
    actions = ringing.feed(AgentAnswered())
    assert "CancelTimer(agent.ring)" in kinds(actions) and actions[-1] == Bridge()


@pytest.mark.parametrize("leave", ["caller_hangs_up", "max_wait", "store_lost"])
def test_leaving_the_queue_drops_a_ringing_phone(ringing: FakeAdapter, leave: str) -> None:
    if leave == "caller_hangs_up":
        actions = ringing.feed(HungUp())
    elif leave == "max_wait":
        actions = ringing.fire("queue.max_wait")
    else:
        actions = ringing.feed(IntakeRefused("unavailable"))
    assert actions.count(DropAgent()) == 1
    assert kinds(actions).index("Dequeue") < kinds(actions).index("DropAgent")
    assert ringing.feed(AgentFailed(487)) == [], "its end is no news once the call left the queue"


def test_the_caller_hanging_up_on_the_agent_drops_the_agents_leg(ringing: FakeAdapter) -> None:
    ringing.feed(AgentAnswered())
    assert ringing.feed(HungUp()) == [DropAgent()]
    assert ringing.machine.outcome == "completed"


def test_caller_hangs_up_during_the_conversation(call: FakeAdapter) -> None:
    bridged(call)
    assert call.feed(HungUp()) == []
    assert call.machine.outcome == "completed"


def test_agent_hangs_up_then_the_survey(call: FakeAdapter) -> None:
    bridged(call)
    assert call.feed(AgentHungUp()) == [Play("survey", barge_in=True)]
    assert phase_of(call) is Phase.SURVEY_PROMPT
    actions = call.feed(Digit("1"))
    assert actions == [
        StopPrompt(),
        SetTicketField("satisfaction", "satisfied"),
        Play("thanks", barge_in=True),
    ]
    assert call.machine.rating == "satisfied"
    assert call.finish_prompt() == [HangUp("flow_end")]
    assert call.machine.finished
    assert call.machine.outcome == "completed"
    assert call.machine.path == ["0", "1"]


@pytest.mark.parametrize(("key", "rating"), [("1", "satisfied"), ("2", "basic"), ("3", "unsatisfied")])
def test_ratings_after_the_prompt(call: FakeAdapter, key: str, rating: str) -> None:
    bridged(call).feed(AgentHungUp())
    call.finish_prompt()
    actions = call.feed(Digit(key))
    assert kinds(actions)[:2] == ["CancelTimer(input.timeout)", "SetTicketField"]
    assert call.machine.rating == rating


def test_the_human_key_is_just_an_invalid_rating_in_the_survey(call: FakeAdapter) -> None:
    bridged(call).feed(AgentHungUp())
    assert call.feed(Digit("0")) == [StopPrompt(), Play("invalid", barge_in=True)]
    assert call.finish_prompt() == [Play("survey", barge_in=True)]


def test_a_silent_survey_ends_without_a_rating(call: FakeAdapter) -> None:
    bridged(call).feed(AgentHungUp())
    call.finish_prompt()
    assert call.fire("input.timeout") == [Play("survey", barge_in=True)]  # no timeout prompt: replay
    call.finish_prompt()
    assert call.fire("input.timeout") == [Play("thanks", barge_in=True)]  # max_retries = 1
    assert call.machine.rating is None


def test_hanging_up_during_the_survey_is_completed(call: FakeAdapter) -> None:
    bridged(call).feed(AgentHungUp())
    call.feed(HungUp())
    assert (call.machine.outcome, call.machine.rating) == ("completed", None)


def test_survey_without_next_hangs_up() -> None:
    def no_next(raw: Raw) -> None:
        del raw["flow"]["nodes"]["survey"]["next"]
        del raw["flow"]["nodes"]["thanks"]  # would be unreachable

    call = FakeAdapter(machine_with(no_next))
    bridged(call).feed(AgentHungUp())
    assert call.feed(Digit("3"))[-1] == HangUp("survey_done")
    assert call.machine.outcome == "completed"


def test_without_a_survey_the_agent_hanging_up_ends_the_call() -> None:
    call = FakeAdapter(machine_with(lambda raw: raw["flow"]["nodes"]["queue_general"].pop("satisfaction_node")))
    bridged(call)
    assert call.feed(AgentHungUp()) == [HangUp("agent_ended")]
    assert call.machine.outcome == "completed"


# --- record_message and hangup -------------------------------------------------------------------


def recording_message(call: FakeAdapter) -> FakeAdapter:
    queued_general(call).fire("queue.max_wait")
    actions = call.finish_prompt()
    assert actions[0] == StartRecording("message", 120, None)
    assert kinds(actions[1:]) == ["StartTimer(message.max)"]
    assert phase_of(call) is Phase.MESSAGE_RECORD
    return call


def test_hash_ends_the_message(call: FakeAdapter) -> None:
    recording_message(call)
    actions = call.feed(Digit("#"))
    assert kinds(actions) == ["StopRecording", "CancelTimer(message.max)", "Play"]
    assert actions[-1] == Play("goodbye", barge_in=True)
    assert call.finish_prompt() == [HangUp("flow_end")]
    assert call.machine.outcome == "message"
    assert call.machine.path == ["0", "#"]


def test_message_max_seconds(call: FakeAdapter) -> None:
    recording_message(call)
    assert kinds(call.fire("message.max")) == ["StopRecording", "Play"]


def test_recorder_stopping_with_a_file(call: FakeAdapter) -> None:
    recording_message(call)
    assert kinds(call.feed(RecordingFinished("/rec/m.wav", 30.0))) == ["CancelTimer(message.max)", "Play"]
    call.finish_prompt()
    assert call.machine.outcome == "message"


def test_recorder_stopping_without_a_file_is_no_message(call: FakeAdapter) -> None:
    recording_message(call)
    call.feed(RecordingFinished(None, 0.0))
    call.finish_prompt()
    assert call.machine.outcome == "hangup"


def test_hanging_up_after_speaking_the_message(call: FakeAdapter) -> None:
    recording_message(call)
    assert kinds(call.feed(HungUp())) == ["StopRecording", "CancelTimer(message.max)"]
    assert call.machine.outcome == "message"


def test_other_keys_while_recording_a_message_are_ignored(call: FakeAdapter) -> None:
    recording_message(call)
    assert call.feed(Digit("3")) == []


def test_human_key_during_the_overflow_message_queues_again(call: FakeAdapter) -> None:
    recording_message(call)
    assert kinds(call.feed(Digit("0"))[:3]) == ["StopRecording", "CancelTimer(message.max)", "EnqueueCall"]


def test_human_key_during_the_message_prompt(call: FakeAdapter) -> None:
    queued_general(call).fire("queue.max_wait")
    assert call.feed(Digit("0"))[:2] == [StopPrompt(), GENERAL]
    assert call.feed(Digit("4")) == []


def test_closed_then_message_then_goodbye() -> None:
    call = FakeAdapter(machine_with(_office_hours))
    call.answer(datetime(2026, 1, 12, 22, 0))
    assert call.finish_prompt() == [Play("closed", barge_in=True)]
    call.finish_prompt()
    call.fire("message.max")
    assert call.machine.node_id == "bye"
    assert call.feed(Digit("2")) == []
    call.feed(HungUp())  # hanging up during the goodbye is not abandoning
    assert call.machine.outcome == "message"


def test_human_key_during_the_goodbye(call: FakeAdapter) -> None:
    recording_message(call).feed(Digit("#"))
    assert call.feed(Digit("0"))[:2] == [StopPrompt(), GENERAL]


def test_hanging_up_during_the_goodbye_without_a_message() -> None:
    call = FakeAdapter(machine_with(_office_hours))
    call.answer(datetime(2026, 1, 12, 22, 0))
    call.finish_prompt()
    call.finish_prompt()
    call.feed(RecordingFinished(None, 0.0))
    assert call.feed(HungUp()) == []
    assert call.machine.outcome == "hangup"


def test_a_hangup_node_without_prompt_hangs_up_at_once() -> None:
    call = FakeAdapter(machine_with(lambda raw: raw["flow"]["nodes"]["bye"].pop("prompt")))
    recording_message(call)
    assert kinds(call.feed(Digit("#"))) == ["StopRecording", "CancelTimer(message.max)", "HangUp"]
    assert call.machine.finished


# --- finished and failing ------------------------------------------------------------------------


def test_every_event_after_the_end_returns_nothing(call: FakeAdapter) -> None:
    queued_general(call).feed(HungUp())
    for event in (Digit("0"), TimerFired("x#1"), PromptFinished("hold"), AgentAnswered(), HungUp()):
        assert call.machine.handle(event) == []
    assert phase_of(call) is Phase.DONE


def test_a_bug_in_a_handler_fails_closed(call: FakeAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(machine: CallMachine, event: object) -> list[Action]:
        raise RuntimeError("bug")

    queued_general(call)
    monkeypatch.setitem(TRANSITIONS[Phase.QUEUED], Position, broken)
    actions = call.machine.handle(Position(2))
    assert kinds(actions) == [
        "StopPrompt",
        "CancelTimer(queue.position)",
        "CancelTimer(queue.max_wait)",
        "Dequeue",
        "HangUp",
    ]
    assert actions[-1] == HangUp("internal_error")
    assert call.machine.outcome == "error"
    assert isinstance(call.machine.error, RuntimeError)
    assert call.machine.handle(HungUp()) == []


def test_path_is_a_copy(call: FakeAdapter) -> None:
    queued_general(call)
    call.machine.path.append("9")
    assert call.machine.path == ["0"]


def test_bridge_is_emitted_once(call: FakeAdapter) -> None:
    bridged(call)
    assert call.feed(AgentAnswered()) == []
    assert Bridge() not in call.feed(Position(1))
