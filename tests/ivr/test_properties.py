"""Hypothesis: random event sequences against the default flow and against random small valid flows.

Every step runs through ``FakeAdapter``, which asserts the action contract (defined prompts only, no
stop without a start, nothing left running after the end). On top of that:

* the machine never raises and never fails closed on valid events;
* the human key, pressed where it applies, queues the caller and ends the path;
* a stale ``TimerFired`` (cancelled or never started) or ``PromptFinished`` (not playing) does nothing;
* a final ``HungUp`` always finishes the machine;
* a caller who never presses a key reaches a queue or a hang-up in a bounded number of events;
* speech navigation: a ``SpeechRoute`` outside the listening step does nothing; the ticket field
  ``route`` is set only by an accepted routed target or a confirmed one, and then the call enters that
  target's node; anything else from a decision (above all a ``reject``) enters the node's ``default``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ivr.actions import FIELD_ROUTE, FIELD_ROUTE_EVIDENCE, Action, EnqueueCall, SetTicketField, StopPrompt
from gateway.ivr.calendar import ALWAYS_OPEN, Calendar
from gateway.ivr.events import (
    AgentAnswered,
    AgentFailed,
    AgentHungUp,
    AgentOffered,
    AgentRinging,
    Digit,
    Event,
    HungUp,
    IntakeRefused,
    Position,
    PromptFinished,
    RecordingFinished,
    RouteAction,
    SpeechResult,
    SpeechRoute,
    TimerFired,
)
from gateway.ivr.flow import BusinessHoursNode, Flow, QueueNode, SpeechRouteNode
from gateway.ivr.machine import (
    HUMAN_KEY_PHASES,
    OUTCOME_ABANDONED,
    OUTCOME_COMPLETED,
    OUTCOME_HANGUP,
    OUTCOME_MESSAGE,
    CallMachine,
    Phase,
)
from tests.ivr.test_fakes import FakeAdapter, default_config, run_silent

PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
FINAL_OUTCOMES = {OUTCOME_ABANDONED, OUTCOME_COMPLETED, OUTCOME_HANGUP, OUTCOME_MESSAGE}
TIMER_KINDS = [
    "input.timeout",
    "speech.max",
    "speech.flush",
    "message.max",
    "queue.position",
    "queue.max_wait",
    "agent.ring",
    "route.listen",
    "route.confirm",
]
SILENT_STEP_LIMIT = 60

DEFAULT = default_config()
OFFICE = Calendar.model_validate({"weekly": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}})
answer_times = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31))

# --- random valid flows ------------------------------------------------------------------------------

PROMPTS = {
    "p0": {"text": "提示零"},
    "p1": {"text": "提示一"},
    "p2": {"text": "提示二"},
    "pos": {"text": "您前面还有{n}位"},
}
KINDS = [
    "play",
    "menu",
    "collect_speech",
    "queue",
    "business_hours",
    "record_message",
    "satisfaction",
    "hangup",
    "speech_route",
]
ROUTE_TARGETS = ["housing", "tax", "traffic"]
prompt_ids = st.sampled_from(["p0", "p1", "p2"])


@st.composite
def random_flows(draw: st.DrawFn, first: str | None = None) -> Flow:
    """A valid flow by construction: silent edges only point forward, so they cannot loop.

    Node ``n{i}``'s silent edges (next, default, open/closed, overflow) go to a later node; menu options
    and navigation routes may go anywhere (the caller drives those). The last node hangs up. Unreachable
    nodes are pruned. ``first``: the start node's kind (else random).
    """
    size = draw(st.integers(2, 7))
    human_key = draw(st.sampled_from("0*9"))
    kinds = [first or draw(st.sampled_from(KINDS))]
    kinds += [draw(st.sampled_from(KINDS)) for _ in range(size - 2)] + ["hangup"]
    surveys = [f"n{i}" for i, kind in enumerate(kinds) if kind == "satisfaction"]
    nodes = {f"n{i}": draw(_node(kind, i, size, human_key, surveys)) for i, kind in enumerate(kinds)}
    nodes["human"] = {
        "type": "queue",
        "queue": "human",
        "priority": 3,
        "hold_prompt": "p0",
        "position_prompt": draw(st.sampled_from(["pos", None])),
        "position_interval_seconds": 20,
        "max_wait_seconds": draw(st.sampled_from([60, None])),
        "overflow": "human_bye",
        "unavailable": draw(st.sampled_from([None, "human_bye"])),
        "satisfaction_node": draw(st.sampled_from([None, *surveys])),
    }
    nodes["human_bye"] = {"type": "hangup"}
    raw = {"id": "random", "human_key": human_key, "human_queue": "human", "start": "n0", "prompts": PROMPTS}
    return Flow.model_validate({**raw, "nodes": _prune(nodes, ["n0", "human"])})


@st.composite
def _node(draw: st.DrawFn, kind: str, index: int, size: int, human_key: str, surveys: list[str]) -> dict[str, Any]:
    def later() -> str:
        return f"n{draw(st.integers(index + 1, size - 1))}"

    def keys(exclude: str) -> list[str]:
        return draw(st.lists(st.sampled_from([k for k in "123456789*#" if k != exclude]), max_size=3, unique=True))

    prompt = draw(prompt_ids)
    if kind == "play":
        return {"type": kind, "prompt": prompt, "next": later()}
    if kind == "menu":
        options = {key: f"n{draw(st.integers(0, size - 1))}" for key in keys(human_key)}
        timeout_prompt = draw(st.sampled_from([None, "p2"]))
        retries = draw(st.integers(0, 2))
        return {
            "type": kind,
            "prompt": prompt,
            "options": options,
            "invalid_prompt": "p1",
            "timeout_prompt": timeout_prompt,
            "max_retries": retries,
            "default": later(),
        }
    if kind == "collect_speech":
        return {"type": kind, "prompt": prompt, "next": later(), "max_seconds": 30, "silence_seconds": 1.5}
    if kind == "record_message":
        return {"type": kind, "prompt": prompt, "next": later(), "max_seconds": 60}
    if kind == "business_hours":
        return {
            "type": kind,
            "calendar": draw(st.sampled_from(["always", "office"])),
            "open": later(),
            "closed": later(),
        }
    if kind == "queue":
        return {
            "type": kind,
            "queue": draw(st.sampled_from(["general", "enterprise"])),
            "priority": draw(st.integers(0, 5)),
            "hold_prompt": prompt,
            "position_prompt": draw(st.sampled_from(["pos", None])),
            "max_wait_seconds": draw(st.sampled_from([45, None])),
            "overflow": later(),
            "unavailable": draw(st.sampled_from([None, later()])),
            "satisfaction_node": draw(st.sampled_from([None, *surveys])),
        }
    if kind == "satisfaction":
        ratings = {key: f"r{key}" for key in keys("") or ["1"]}
        return {
            "type": kind,
            "prompt": prompt,
            "ratings": ratings,
            "next": draw(st.sampled_from([None, later()])),
        }
    if kind == "speech_route":
        return draw(_speech_route(prompt, later(), size, human_key))
    return {"type": "hangup", "prompt": draw(st.sampled_from([None, prompt]))}


@st.composite
def _speech_route(draw: st.DrawFn, prompt: str, default: str, size: int, human_key: str) -> dict[str, Any]:
    # Routes, like menu options, are taken only on the caller's word, so they may point anywhere.
    targets = draw(st.lists(st.sampled_from(ROUTE_TARGETS), min_size=1, max_size=3, unique=True))
    return {
        "type": "speech_route",
        "prompt": prompt,
        "routes": {target: f"n{draw(st.integers(0, size - 1))}" for target in targets},
        "confirm_prompts": {target: draw(prompt_ids) for target in targets if draw(st.integers(0, 3))},
        "confirm_key": draw(st.sampled_from([k for k in "1#9" if k != human_key])),
        "silence_seconds": draw(st.sampled_from([None, 1.5])),
        "confirm_timeout_seconds": 5,
        "default": default,
    }


def _prune(nodes: dict[str, dict[str, Any]], roots: list[str]) -> dict[str, dict[str, Any]]:
    """Drop nodes nothing reaches (the flow validator rejects them)."""
    edge_fields = ("next", "default", "open", "closed", "overflow", "unavailable", "satisfaction_node")
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = nodes[node_id]
        todo.extend(node[f] for f in edge_fields if node.get(f) is not None)
        todo.extend(node.get("options", {}).values())
        todo.extend(node.get("routes", {}).values())
    return {node_id: node for node_id, node in nodes.items() if node_id in seen}


CALENDARS = {"always": ALWAYS_OPEN, "office": OFFICE}

# --- random events -----------------------------------------------------------------------------------

# An event is drawn as a static "recipe" and built against the adapter's state at that moment, so the
# strategy is built once (per-step strategies made Hypothesis ten times slower). The tags that feed the
# call what it is waiting for (its armed timers, its playing prompt) and keys are weighted up.
TAGS = [
    *["armed_timer"] * 3,
    *["playing_prompt"] * 3,
    *["digit"] * 4,
    "human_key",
    "stale_timer",
    "any_prompt",
    *["speech"] * 2,
    *["route"] * 3,
    "recording",
    "position",
    "refused",
    "agent_offered",
    "agent_ringing",
    "agent_answered",
    "agent_failed",
    "agent_hung_up",
    "hang_up",
]
TEXTS = ["", "路灯不亮", "噪音扰民"]
ROUTE_ACTIONS_IN_ORDER: tuple[RouteAction, ...] = ("accept", "confirm", "reject")
DECISIONS: list[tuple[RouteAction, str | None, str]] = [
    (action, target, keyword)
    for action in ROUTE_ACTIONS_IN_ORDER
    for target, keyword in [("housing", "住房"), ("tax", "税务"), ("traffic", "交通"), ("parking", "停车"), (None, "")]
]
Recipe = tuple[str, int, float, bool]
recipe = st.tuples(st.sampled_from(TAGS), st.integers(0, 63), st.floats(0, 1), st.booleans())
recipes = st.lists(recipe, min_size=15, max_size=60)
# Calls that start in a navigation node: prompt ends, decisions and confirm keys are frequent (to get
# through the navigation prompt, the decision and the confirm prompt), other keys and hang-ups rarer.
NAV_TAGS = [
    *["playing_prompt"] * 5,
    *["route"] * 6,
    *["confirm_key"] * 3,
    *["armed_timer"] * 2,
    *[tag for tag in dict.fromkeys(TAGS) if tag not in ("playing_prompt", "armed_timer")],
]
nav_recipes = st.lists(
    st.tuples(st.sampled_from(NAV_TAGS), st.integers(0, 63), st.floats(0, 1), st.booleans()), min_size=10, max_size=40
)
_FIXED: dict[str, Event] = {
    "agent_offered": AgentOffered("a1", "sip:1001@127.0.0.1:5080"),
    "agent_ringing": AgentRinging(),
    "agent_answered": AgentAnswered(),
    "agent_failed": AgentFailed(486),
    "agent_hung_up": AgentHungUp(),
    "hang_up": HungUp(),
}


def build_event(recipe: Recipe, adapter: FakeAdapter) -> Event:
    tag, number, fraction, flag = recipe
    flow = adapter.machine.flow
    if tag == "armed_timer" and adapter.timers:
        return TimerFired(sorted(adapter.timers)[number % len(adapter.timers)])
    if tag == "playing_prompt" and adapter.playing is not None:
        return PromptFinished(adapter.playing)
    if tag in ("armed_timer", "stale_timer"):
        return TimerFired(f"{TIMER_KINDS[number % len(TIMER_KINDS)]}#{number}")
    if tag in ("playing_prompt", "any_prompt"):
        return PromptFinished(sorted(flow.prompts)[number % len(flow.prompts)])
    if tag == "digit":
        return Digit("0123456789*#"[number % 12])
    if tag == "human_key":
        return Digit(flow.human_key)
    if tag == "speech":
        return SpeechResult(TEXTS[number % len(TEXTS)], fraction, flag)
    node = flow.nodes.get(adapter.machine.node_id or "")
    if tag == "route" and isinstance(node, SpeechRouteNode) and (flag or fraction < 0.5):
        return _fitting_decision(node, number, fraction)
    if tag == "route":
        action, target, keyword = DECISIONS[number % len(DECISIONS)]
        return SpeechRoute(action, target, keyword, fraction)
    if tag == "confirm_key":
        return Digit(node.confirm_key if isinstance(node, SpeechRouteNode) else "1")
    if tag == "recording":
        return RecordingFinished("/rec/x.wav" if flag else None, fraction * 120)
    if tag == "position":
        return Position(number - 1)
    if tag == "refused":
        return IntakeRefused("queue_full" if flag else "unavailable")
    return _FIXED[tag]


def _fitting_decision(node: SpeechRouteNode, number: int, fraction: float) -> SpeechRoute:
    """What a grammar built for this node would say: its own targets, confirms where it can ask."""
    action: RouteAction = ("accept", "confirm", "confirm", "reject")[number % 4]
    targets = sorted(node.confirm_prompts if action == "confirm" and node.confirm_prompts else node.routes)
    return SpeechRoute(action, targets[number % len(targets)], "关键词", fraction)


def drive(flow: Flow, calendars: dict[str, Calendar], now: datetime, steps: list[Recipe]) -> None:
    adapter = FakeAdapter(CallMachine(flow, calendars, agent_answer_seconds=20.0))
    adapter.answer(now)
    for recipe in steps:
        event = build_event(recipe, adapter)
        phase, playing = adapter.machine.state, adapter.playing
        stale = (isinstance(event, TimerFired) and event.name not in adapter.timers) or (
            isinstance(event, PromptFinished) and event.prompt_id != playing
        )
        node_id = adapter.machine.node_id
        actions = adapter.feed(event)
        if stale:
            assert actions == [], f"stale {event} acted on"
        check_navigation(flow, event, phase, node_id, actions, adapter.machine)
        if event == Digit(flow.human_key) and phase in HUMAN_KEY_PHASES:
            human = flow.nodes[flow.human_node_id]
            assert isinstance(human, QueueNode)
            assert EnqueueCall(flow.human_queue, human.priority) in actions
            assert adapter.machine.path[-1] == flow.human_key
            if playing is not None:
                assert actions[0] == StopPrompt(), "barge-in stops the prompt first"
    adapter.feed(HungUp())
    assert adapter.machine.finished
    assert adapter.machine.outcome in FINAL_OUTCOMES
    assert adapter.machine.handle(HungUp()) == []


def check_navigation(
    flow: Flow, event: Event, phase: Phase, node_id: str | None, actions: list[Action], machine: CallMachine
) -> None:
    """Only a routed accept or a confirm key sets ``route`` and enters the route; any other decision: default."""
    routed = [a.value for a in actions if isinstance(a, SetTicketField) and a.name == FIELD_ROUTE]
    evidence = [a.value for a in actions if isinstance(a, SetTicketField) and a.name == FIELD_ROUTE_EVIDENCE]
    node = flow.nodes[node_id] if node_id is not None else None
    if isinstance(event, SpeechRoute) and phase is not Phase.ROUTE_LISTEN:
        assert actions == [], f"stale {event} acted on in {phase}"
    if not isinstance(node, SpeechRouteNode):
        assert not routed and not evidence
        return
    confirmed = phase in (Phase.ROUTE_CONFIRM_PROMPT, Phase.ROUTE_CONFIRM_WAIT) and event == Digit(node.confirm_key)
    if isinstance(event, SpeechRoute) and phase is Phase.ROUTE_LISTEN:
        accepted = event.action == "accept" and event.target in node.routes
        assert routed == ([event.target] if accepted else []), (event, routed)
        asked = machine.state is Phase.ROUTE_CONFIRM_PROMPT  # the decision waits for the caller's key
        assert len(evidence) == (0 if asked else 1), (event, evidence)
        assert not asked or (event.action == "confirm" and event.target in node.confirm_prompts)
        if event.action == "reject":
            assert evidence[0].startswith("reject ")
            assert machine.node_id in landing(flow, node.default), "a rejected request left default"
    else:
        assert bool(routed) == confirmed, f"{event} in {phase}: route {routed}"
    if routed:
        assert machine.node_id in landing(flow, node.routes[routed[0]])


def landing(flow: Flow, node_id: str) -> set[str]:
    """Where entering ``node_id`` can leave the call at once (business_hours nodes pass straight on)."""
    node = flow.nodes[node_id]
    if isinstance(node, BusinessHoursNode):
        return {node_id} | landing(flow, node.open) | landing(flow, node.closed)
    return {node_id}


@PROPERTY_SETTINGS
@given(now=answer_times, steps=recipes)
def test_random_events_on_the_default_flow(now: datetime, steps: list[Recipe]) -> None:
    drive(DEFAULT.flow, dict(DEFAULT.calendars), now, steps)


@PROPERTY_SETTINGS
@given(flow=random_flows(), now=answer_times, steps=recipes)
def test_random_events_on_random_flows(flow: Flow, now: datetime, steps: list[Recipe]) -> None:
    drive(flow, CALENDARS, now, steps)


@PROPERTY_SETTINGS
@given(flow=random_flows(first="speech_route"), now=answer_times, steps=nav_recipes)
def test_random_navigation_on_random_flows(flow: Flow, now: datetime, steps: list[Recipe]) -> None:
    drive(flow, CALENDARS, now, steps)


@PROPERTY_SETTINGS
@given(flow=random_flows(), now=answer_times)
def test_a_silent_caller_reaches_a_queue_or_a_hangup(flow: Flow, now: datetime) -> None:
    adapter = FakeAdapter(CallMachine(flow, CALENDARS))
    adapter.answer(now)
    run_silent(adapter, SILENT_STEP_LIMIT)
    assert adapter.machine.finished or adapter.machine.state is Phase.QUEUED


def test_a_silent_caller_on_the_default_flow_is_queued_for_a_person() -> None:
    adapter = FakeAdapter(CallMachine(DEFAULT.flow, DEFAULT.calendars))
    adapter.answer()
    steps = run_silent(adapter, SILENT_STEP_LIMIT)
    assert adapter.machine.node_id == "queue_general"
    assert steps == 5  # greeting, 2 x (menu prompt, timeout): one repeat of the menu
    # Nobody answers: overflow, message, goodbye, hang-up, all without a key press.
    run_silent(adapter, 200, stop_when_queued=False)  # hold replays every few seconds for 300 s
    assert adapter.machine.outcome == "message"
    assert adapter.machine.path == []


@PROPERTY_SETTINGS
@given(flow=random_flows())
def test_random_flows_are_valid_and_serialisable(flow: Flow) -> None:
    # What the generator builds must survive a round trip through the config format.
    assert Flow.model_validate(flow.model_dump()) == flow
