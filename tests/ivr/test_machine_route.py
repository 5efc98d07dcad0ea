"""CallMachine in a speech_route node (智能语音导航), transition by transition, on the default flow.

The default flow reaches the node ``navigation`` as menu option 3: housing and enterprise have their own
queues, tax and traffic go to the general queue, and only housing and enterprise can be confirmed.
"""

from __future__ import annotations

import pytest

from gateway.ivr.actions import (
    FIELD_ROUTE,
    FIELD_ROUTE_EVIDENCE,
    Action,
    EnqueueCall,
    Play,
    SetTicketField,
    StartRecording,
    StopPrompt,
)
from gateway.ivr.events import Digit, HungUp, PromptFinished, RecordingFinished, SpeechResult, SpeechRoute, TimerFired
from gateway.ivr.machine import CallMachine, Phase
from tests.ivr.test_fakes import FakeAdapter, default_config, default_machine, run_silent
from tests.ivr.test_machine import GENERAL, HOLD, Raw, at_menu, kinds, machine_with, only_timer, phase_of

HOUSING = EnqueueCall("housing", 1)
ENTERPRISE = EnqueueCall("enterprise", 2)
LISTENING = ["StopRecording", "CancelTimer(route.listen)"]  # what leaving the listen step undoes


def accept(target: str | None, keyword: str = "住房", confidence: float = 0.91) -> SpeechRoute:
    return SpeechRoute("accept", target, keyword, confidence)


def confirm(target: str | None, keyword: str = "住房", confidence: float = 0.55) -> SpeechRoute:
    return SpeechRoute("confirm", target, keyword, confidence)


def reject(target: str | None = None, keyword: str = "", confidence: float = 0.12) -> SpeechRoute:
    return SpeechRoute("reject", target, keyword, confidence)


def fields(actions: list[Action]) -> dict[str, str]:
    return {a.name: a.value for a in actions if isinstance(a, SetTicketField)}


@pytest.fixture
def call() -> FakeAdapter:
    return FakeAdapter(default_machine())


def at_navigation(call: FakeAdapter) -> FakeAdapter:
    assert at_menu(call).feed(Digit("3")) == [StopPrompt(), Play("navigation", barge_in=True)]
    assert (phase_of(call), call.machine.node_id) == (Phase.ROUTE_PROMPT, "navigation")
    return call


def route_listening(call: FakeAdapter) -> FakeAdapter:
    actions = at_navigation(call).finish_prompt()
    assert actions[0] == StartRecording("navigation", 8, 1.5)
    assert only_timer(actions[1:]).seconds == 8 + 2  # listen_seconds + the ASR flush (default 2 s)
    assert phase_of(call) is Phase.ROUTE_LISTEN
    return call


def confirming(call: FakeAdapter, target: str = "housing") -> FakeAdapter:
    actions = route_listening(call).feed(confirm(target))
    assert kinds(actions) == [*LISTENING, "Play"]
    assert actions[-1] == Play(f"confirm_{target}", barge_in=True)
    assert phase_of(call) is Phase.ROUTE_CONFIRM_PROMPT
    return call


# --- the navigation prompt -----------------------------------------------------------------------


def test_other_keys_during_the_navigation_prompt_are_ignored(call: FakeAdapter) -> None:
    at_navigation(call)
    assert call.feed(Digit("1")) == []
    assert call.feed(Digit("#")) == []
    assert call.machine.path == ["3"]


def test_the_human_key_barges_into_the_navigation_prompt(call: FakeAdapter) -> None:
    at_navigation(call)
    assert call.feed(Digit("0"))[:3] == [StopPrompt(), GENERAL, HOLD]
    assert call.machine.path == ["3", "0"]


def test_a_decision_during_the_prompt_is_stale(call: FakeAdapter) -> None:
    at_navigation(call)
    ignored = call.machine.ignored
    assert call.feed(accept("housing")) == []
    assert (phase_of(call), call.machine.ignored) == (Phase.ROUTE_PROMPT, ignored + 1)


def test_without_end_pointing_the_recorder_gets_no_silence_seconds() -> None:
    call = FakeAdapter(machine_with(lambda raw: raw["flow"]["nodes"]["navigation"].pop("silence_seconds")))
    at_navigation(call)
    assert call.finish_prompt()[0] == StartRecording("navigation", 8, None)


def test_the_listen_timer_includes_the_flush_time() -> None:
    config = default_config()
    call = FakeAdapter(CallMachine(config.flow, config.calendars, asr_flush_seconds=0.5))
    at_navigation(call)
    assert only_timer(call.finish_prompt()[1:]).seconds == 8.5


# --- the decision ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "keyword", "queued"),
    [
        ("housing", "住房", HOUSING),
        ("tax", "个税", GENERAL),
        ("traffic", "交通", GENERAL),
        ("enterprise", "企业", ENTERPRISE),
    ],
)
def test_accept_routes_to_the_targets_node(call: FakeAdapter, target: str, keyword: str, queued: EnqueueCall) -> None:
    route_listening(call)
    actions = call.feed(accept(target, keyword, 0.914))
    assert kinds(actions[:2]) == LISTENING
    assert actions[2:5] == [
        SetTicketField(FIELD_ROUTE, target),
        SetTicketField(FIELD_ROUTE_EVIDENCE, f"accept keyword={keyword} confidence=0.91"),
        queued,
    ]
    assert call.machine.outcome == f"queued:{queued.queue}"
    assert call.machine.path == ["3"]


def test_an_out_of_domain_request_goes_to_default_never_to_a_department(call: FakeAdapter) -> None:
    route_listening(call)
    # The grammar's best (weak) guess was housing, but the adapter rejected it: a person decides.
    actions = call.feed(reject("housing", "房子", 0.2))
    assert kinds(actions[:2]) == LISTENING
    assert fields(actions) == {FIELD_ROUTE_EVIDENCE: "reject target=housing keyword=房子 confidence=0.20"}
    assert actions[3] == GENERAL
    assert not any(isinstance(a, EnqueueCall) and a != GENERAL for a in actions)
    assert call.machine.outcome == "queued:general"
    assert FIELD_ROUTE not in call.fields


def test_a_reject_without_a_keyword(call: FakeAdapter) -> None:
    route_listening(call)
    actions = call.feed(reject())
    assert fields(actions) == {FIELD_ROUTE_EVIDENCE: "reject keyword= confidence=0.12"}
    assert call.machine.node_id == "queue_general"


@pytest.mark.parametrize("decision", [accept("parking", "停车"), confirm("parking", "停车"), accept(None, "停车")])
def test_a_target_the_flow_does_not_route_goes_to_default(call: FakeAdapter, decision: SpeechRoute) -> None:
    route_listening(call)
    actions = call.feed(decision)
    evidence = fields(actions)[FIELD_ROUTE_EVIDENCE]
    assert evidence.startswith("unrouted ")
    assert ("target=parking" in evidence) == (decision.target is not None)
    assert FIELD_ROUTE not in fields(actions)
    assert call.machine.node_id == "queue_general"


def test_confirm_of_an_accept_only_target_goes_to_default(call: FakeAdapter) -> None:
    route_listening(call)
    actions = call.feed(confirm("traffic", "交通", 0.5))  # traffic has no confirm prompt
    assert kinds(actions[:3]) == [*LISTENING, "SetTicketField"]
    assert fields(actions) == {FIELD_ROUTE_EVIDENCE: "unconfirmable target=traffic keyword=交通 confidence=0.50"}
    assert actions[3] == GENERAL


def test_no_decision_in_time_goes_to_default(call: FakeAdapter) -> None:
    route_listening(call)
    actions = call.fire("route.listen")
    assert kinds(actions[:3]) == ["StopRecording", "SetTicketField", "EnqueueCall"]
    assert fields(actions) == {FIELD_ROUTE_EVIDENCE: "timeout"}
    assert actions[2] == GENERAL


def test_the_recorder_stopping_keeps_waiting_for_the_decision(call: FakeAdapter) -> None:
    route_listening(call)
    ignored = call.machine.ignored
    assert call.feed(RecordingFinished("/rec/nav.wav", 8.0)) == []
    assert (phase_of(call), call.machine.ignored) == (Phase.ROUTE_LISTEN, ignored)
    actions = call.feed(accept("enterprise", "企业"))
    assert kinds(actions[:1]) == ["CancelTimer(route.listen)"]  # nothing left to stop
    assert actions[3] == ENTERPRISE


def test_the_recorder_stopping_then_no_decision(call: FakeAdapter) -> None:
    route_listening(call).feed(RecordingFinished(None, 0.0))
    actions = call.fire("route.listen")
    assert actions[:2] == [SetTicketField(FIELD_ROUTE_EVIDENCE, "timeout"), GENERAL]


def test_keys_while_listening(call: FakeAdapter) -> None:
    route_listening(call)
    assert call.feed(Digit("1")) == []
    assert kinds(call.feed(Digit("0"))[:3]) == [*LISTENING, "EnqueueCall"]
    assert call.machine.path == ["3", "0"]


def test_hanging_up_while_listening(call: FakeAdapter) -> None:
    route_listening(call)
    assert kinds(call.feed(HungUp())) == LISTENING
    assert call.machine.outcome == "abandoned"


def test_a_second_decision_is_stale(call: FakeAdapter) -> None:
    route_listening(call).feed(accept("housing"))
    assert call.feed(accept("tax")) == []
    assert call.machine.outcome == "queued:housing"


def test_speech_results_are_not_navigation(call: FakeAdapter) -> None:
    route_listening(call)
    assert call.feed(SpeechResult("住房", 0.9, final=True)) == []
    assert phase_of(call) is Phase.ROUTE_LISTEN


def test_a_decision_in_a_collect_speech_node_is_ignored(call: FakeAdapter) -> None:
    at_menu(call).feed(Digit("2"))
    call.finish_prompt()
    assert phase_of(call) is Phase.SPEECH_LISTEN
    assert call.feed(accept("housing")) == []


# --- confirmation ----------------------------------------------------------------------------------


def test_confirm_key_during_the_confirm_prompt_routes(call: FakeAdapter) -> None:
    confirming(call)
    actions = call.feed(Digit("1"))
    assert actions[:4] == [
        StopPrompt(),
        SetTicketField(FIELD_ROUTE, "housing"),
        SetTicketField(FIELD_ROUTE_EVIDENCE, "confirmed keyword=住房 confidence=0.55"),
        HOUSING,
    ]
    assert call.machine.path == ["3", "1"]


def test_confirm_key_after_the_confirm_prompt_routes(call: FakeAdapter) -> None:
    confirming(call, "enterprise")
    timer = only_timer(call.finish_prompt())
    assert (timer.seconds, phase_of(call)) == (5, Phase.ROUTE_CONFIRM_WAIT)
    actions = call.feed(Digit("1"))
    assert kinds(actions[:3]) == ["CancelTimer(route.confirm)", "SetTicketField", "SetTicketField"]
    assert actions[1] == SetTicketField(FIELD_ROUTE, "enterprise")
    assert actions[3] == ENTERPRISE


@pytest.mark.parametrize("prompt_done", [False, True])
def test_another_key_at_the_confirm_prompt_goes_to_default(call: FakeAdapter, prompt_done: bool) -> None:
    confirming(call)
    if prompt_done:
        call.finish_prompt()
    actions = call.feed(Digit("2"))  # 其他业务请按2
    assert fields(actions) == {FIELD_ROUTE_EVIDENCE: "declined key=2 target=housing keyword=住房 confidence=0.55"}
    assert GENERAL in actions
    assert call.machine.path == ["3", "2"]


def test_no_key_at_the_confirm_prompt_goes_to_default(call: FakeAdapter) -> None:
    confirming(call).finish_prompt()
    actions = call.fire("route.confirm")
    assert actions[:2] == [
        SetTicketField(FIELD_ROUTE_EVIDENCE, "unconfirmed target=housing keyword=住房 confidence=0.55"),
        GENERAL,
    ]


def test_the_human_key_at_the_confirm_prompt(call: FakeAdapter) -> None:
    confirming(call)
    actions = call.feed(Digit("0"))
    assert actions[:2] == [StopPrompt(), GENERAL]
    assert FIELD_ROUTE_EVIDENCE not in fields(actions)
    assert call.machine.path == ["3", "0"]


def test_decisions_after_the_decision_are_stale(call: FakeAdapter) -> None:
    confirming(call)
    assert call.feed(accept("tax")) == []
    call.finish_prompt()
    assert call.feed(reject()) == []
    assert call.feed(RecordingFinished(None, 0.0)) == []
    assert call.feed(Digit("1"))[1] == SetTicketField(FIELD_ROUTE, "housing")


def test_a_stale_listen_timer_after_the_decision_is_ignored(call: FakeAdapter) -> None:
    route_listening(call)
    [listen] = call.timers
    confirming_actions = call.feed(confirm("housing"))
    assert "CancelTimer(route.listen)" in kinds(confirming_actions)
    assert call.machine.handle(TimerFired(listen)) == []
    assert phase_of(call) is Phase.ROUTE_CONFIRM_PROMPT


def test_a_stale_prompt_end_at_the_confirm_prompt_is_ignored(call: FakeAdapter) -> None:
    confirming(call)
    assert call.feed(PromptFinished("navigation")) == []
    assert phase_of(call) is Phase.ROUTE_CONFIRM_PROMPT


def test_hanging_up_while_confirming(call: FakeAdapter) -> None:
    confirming(call).finish_prompt()
    assert kinds(call.feed(HungUp())) == ["CancelTimer(route.confirm)"]
    assert call.machine.outcome == "abandoned"


def test_a_custom_confirm_key() -> None:
    def hash_confirms(raw: Raw) -> None:
        raw["flow"]["nodes"]["navigation"]["confirm_key"] = "#"

    call = FakeAdapter(machine_with(hash_confirms))
    confirming(call)
    assert GENERAL in call.feed(Digit("1"))  # "1" is now just another key
    assert call.machine.path == ["3", "1"]


# --- a silent caller -------------------------------------------------------------------------------


def test_a_silent_caller_at_the_navigation_reaches_the_general_queue(call: FakeAdapter) -> None:
    at_navigation(call)
    run_silent(call, 10)
    assert call.machine.node_id == "queue_general"
    assert call.fields == {FIELD_ROUTE_EVIDENCE: "timeout"}


def test_a_silent_caller_after_a_confirm_reaches_the_general_queue(call: FakeAdapter) -> None:
    confirming(call)
    run_silent(call, 10)
    assert call.machine.node_id == "queue_general"
    assert call.fields[FIELD_ROUTE_EVIDENCE].startswith("unconfirmed ")
