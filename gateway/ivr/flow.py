"""The IVR flow: a prompt table and a graph of typed nodes, validated once at load time.

A flow is configuration, not code: ``[ivr.flow]`` in the gateway TOML (see ``config/flows/12345.toml`` and
``docs/ivr.md``). Validation rejects anything the machine could trip over at call time, so
``CallMachine`` can index ``flow.nodes`` and ``flow.prompts`` without checks. Every problem is
reported as a pydantic error whose ``loc`` is the field path (``nodes.main_menu.options.0``).
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterator, Mapping
from typing import Annotated, ClassVar, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.ivr.calendar import Calendar
from gateway.ivr.events import DTMF_DIGITS

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, object]
"""(field path, message, offending value) — turned into one pydantic line error."""

Seconds = Annotated[float, Field(gt=0)]
Retries = Annotated[int, Field(ge=0, le=9)]
Name = Annotated[str, Field(min_length=1)]

POSITION_PLACEHOLDER = "n"
"""The only placeholder a prompt may use, and only as a queue's ``position_prompt``: 您前面还有{n}位."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromptSpec(_Frozen):
    """One prompt: the Simplified Chinese text (for TTS and logs) and an optional recorded file."""

    text: Name
    file: str | None = None

    def render(self, params: tuple[tuple[str, str], ...] = ()) -> str:
        """The text with ``Play.params`` filled in."""
        return self.text.format_map(dict(params)) if params else self.text


class _Node(_Frozen):
    """Common graph accessors; subclasses list which fields hold node and prompt ids."""

    NODE_FIELDS: ClassVar[tuple[str, ...]] = ()
    SILENT_FIELDS: ClassVar[tuple[str, ...]] = ()
    """Edges taken without caller input (end of prompt, timeouts): these must not form a cycle."""
    PROMPT_FIELDS: ClassVar[tuple[str, ...]] = ()

    def node_refs(self) -> Iterator[tuple[Loc, str, bool]]:
        """(field path, target node id, silent?) for every outgoing edge."""
        for name in self.NODE_FIELDS:
            target = getattr(self, name)
            if target is not None:
                yield (name,), target, name in self.SILENT_FIELDS

    def prompt_refs(self) -> Iterator[tuple[Loc, str]]:
        for name in self.PROMPT_FIELDS:
            prompt = getattr(self, name)
            if prompt is not None:
                yield (name,), prompt


class PlayNode(_Node):
    """Play a prompt, then go to ``next``."""

    NODE_FIELDS = SILENT_FIELDS = ("next",)
    PROMPT_FIELDS = ("prompt",)

    type: Literal["play"]
    prompt: Name
    next: Name


class MenuNode(_Node):
    """Play ``prompt`` and wait for one key; ``max_retries`` bad or missing keys lead to ``default``."""

    NODE_FIELDS = SILENT_FIELDS = ("default",)
    PROMPT_FIELDS = ("prompt", "invalid_prompt", "timeout_prompt")

    type: Literal["menu"]
    prompt: Name
    options: dict[str, Name]
    timeout_seconds: Seconds = 6.0
    max_retries: Retries = 2
    invalid_prompt: Name
    timeout_prompt: str | None = None
    default: Name

    def node_refs(self) -> Iterator[tuple[Loc, str, bool]]:
        yield from super().node_refs()
        for digit, target in self.options.items():
            yield ("options", digit), target, False


class CollectSpeechNode(_Node):
    """Record the caller's spoken request (streamed to ASR), then go to ``next``."""

    NODE_FIELDS = SILENT_FIELDS = ("next",)
    PROMPT_FIELDS = ("prompt",)

    type: Literal["collect_speech"]
    prompt: Name
    max_seconds: Seconds = 60.0
    silence_seconds: Seconds = 2.0
    next: Name


class QueueNode(_Node):
    """Queue the call for an agent, play hold audio and announce the position until answered.

    ``overflow``: where the call goes after ``max_wait_seconds`` or when the queue is full;
    ``unavailable``: where it goes when the ticket store is out of reach (an apology, then a voice
    message the worker keeps until the store is back); unset, ``overflow`` serves for that too.
    """

    NODE_FIELDS = ("overflow", "unavailable", "satisfaction_node")
    PROMPT_FIELDS = ("hold_prompt", "position_prompt")

    type: Literal["queue"]
    queue: Name
    priority: int = 0
    hold_prompt: Name
    position_prompt: str | None = None
    position_interval_seconds: Seconds = 30.0
    max_wait_seconds: Seconds | None = None
    overflow: Name
    unavailable: str | None = None
    satisfaction_node: str | None = None


class BusinessHoursNode(_Node):
    """Branch on the named calendar at the call's answer time."""

    NODE_FIELDS = SILENT_FIELDS = ("open", "closed")

    type: Literal["business_hours"]
    calendar: Name
    open: Name
    closed: Name


class HangupNode(_Node):
    """Optionally play a goodbye prompt, then hang up."""

    PROMPT_FIELDS = ("prompt",)

    type: Literal["hangup"]
    prompt: str | None = None


class RecordMessageNode(_Node):
    """Record a voice message (off hours, overflow), then go to ``next``."""

    NODE_FIELDS = SILENT_FIELDS = ("next",)
    PROMPT_FIELDS = ("prompt",)

    type: Literal["record_message"]
    prompt: Name
    max_seconds: Seconds = 120.0
    next: Name


class SatisfactionNode(_Node):
    """Post-call survey: one key from ``ratings``; then ``next`` (or hang up when unset)."""

    NODE_FIELDS = SILENT_FIELDS = ("next",)
    PROMPT_FIELDS = ("prompt", "invalid_prompt")

    type: Literal["satisfaction"]
    prompt: Name
    ratings: dict[str, Name]
    timeout_seconds: Seconds = 8.0
    max_retries: Retries = 1
    invalid_prompt: str | None = None
    next: str | None = None


class SpeechRouteNode(_Node):
    """智能语音导航: the caller says what they need and is routed by the adapter's grammar decision.

    ``routes`` maps navigation targets (free strings: ``housing``, ``tax``) to nodes. A ``confirm``
    decision plays ``confirm_prompts[target]`` and waits for ``confirm_key``; a target without a
    confirm prompt is accept-only. Unsure, rejected, unknown, unconfirmed or silent: ``default``.
    """

    NODE_FIELDS = SILENT_FIELDS = ("default",)
    PROMPT_FIELDS = ("prompt",)

    type: Literal["speech_route"]
    prompt: Name
    routes: Annotated[dict[Name, Name], Field(min_length=1)]
    confirm_prompts: dict[Name, Name] = Field(default_factory=dict)
    confirm_key: str = "1"
    listen_seconds: Seconds = 8.0
    silence_seconds: Seconds | None = None  # TOML has no null: leaving it out is the only way to say none
    confirm_timeout_seconds: Seconds = 6.0
    default: Name

    def node_refs(self) -> Iterator[tuple[Loc, str, bool]]:
        yield from super().node_refs()
        # Routes need the caller to speak, so they are not silent edges.
        for target, node_id in self.routes.items():
            yield ("routes", target), node_id, False

    def prompt_refs(self) -> Iterator[tuple[Loc, str]]:
        yield from super().prompt_refs()
        for target, prompt in self.confirm_prompts.items():
            yield ("confirm_prompts", target), prompt


Node = Annotated[
    PlayNode
    | MenuNode
    | CollectSpeechNode
    | QueueNode
    | BusinessHoursNode
    | HangupNode
    | RecordMessageNode
    | SatisfactionNode
    | SpeechRouteNode,
    Field(discriminator="type"),
]


class Flow(_Frozen):
    """A whole IVR flow (``[ivr.flow]``)."""

    id: Name
    human_key: str = "0"
    """一键直达人工: this key, in any node except the queue and the survey, queues the caller."""
    human_queue: Name
    human_node: str | None = None
    """The queue node the human key jumps to; defaults to the only queue node serving ``human_queue``."""
    start: Name
    prompts: dict[str, PromptSpec]
    nodes: dict[str, Node]

    @model_validator(mode="after")
    def _check(self) -> Flow:
        problems = list(_flow_problems(self))
        if problems:
            raise_problems("Flow", problems)
        return self

    @property
    def human_node_id(self) -> str:
        """The resolved queue node of the human key (validation guarantees it exists)."""
        found = _human_node(self)
        assert found is not None, "validated flows always have a human node"
        return found


class IvrConfig(_Frozen):
    """The ``[ivr]`` section: the flow and the calendars its business_hours nodes name."""

    flow: Flow
    calendars: dict[str, Calendar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_calendars(self) -> IvrConfig:
        problems = [(("flow", *loc), msg, value) for loc, msg, value in calendar_problems(self.flow, self.calendars)]
        if problems:
            raise_problems("IvrConfig", problems)
        return self


def parse_ivr_toml(text: str, section: str = "ivr") -> IvrConfig:
    """Parse TOML text (not a file: the caller does the reading) and validate its ``[ivr]`` table."""
    return IvrConfig.model_validate(tomllib.loads(text)[section])


def raise_problems(title: str, problems: list[Problem]) -> NoReturn:
    """Raise one ``ValidationError`` whose line errors carry each problem's field path."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("ivr_config", "{problem}", {"problem": message}),
            loc=loc,
            input=value,
        )
        for loc, message, value in problems
    ]
    raise ValidationError.from_exception_data(title, details)


def calendar_problems(flow: Flow, calendars: Mapping[str, Calendar]) -> Iterator[Problem]:
    """Every business_hours node whose calendar is not in ``calendars``."""
    for node_id, node in flow.nodes.items():
        if isinstance(node, BusinessHoursNode) and node.calendar not in calendars:
            yield ("nodes", node_id, "calendar"), f"unknown calendar {node.calendar!r}", node.calendar


# --- validation -------------------------------------------------------------------------------------


def _flow_problems(flow: Flow) -> Iterator[Problem]:
    dangling = list(_reference_problems(flow))
    yield from dangling
    yield from _key_problems(flow)
    yield from _placeholder_problems(flow)
    yield from _human_problems(flow)
    # Graph checks only make sense once every edge points at a real node.
    if not dangling and flow.start in flow.nodes:
        yield from _reachability_problems(flow)
        yield from _silent_cycle_problems(flow)


def _reference_problems(flow: Flow) -> Iterator[Problem]:
    if flow.start not in flow.nodes:
        yield ("start",), f"unknown node {flow.start!r}", flow.start
    for node_id, node in flow.nodes.items():
        for loc, target, _silent in node.node_refs():
            if target not in flow.nodes:
                yield ("nodes", node_id, *loc), f"unknown node {target!r}", target
        for loc, prompt in node.prompt_refs():
            if prompt not in flow.prompts:
                yield ("nodes", node_id, *loc), f"unknown prompt {prompt!r}", prompt
        if isinstance(node, SpeechRouteNode):
            yield from _confirm_target_problems(node_id, node)
        if isinstance(node, QueueNode) and node.satisfaction_node is not None:
            target_node = flow.nodes.get(node.satisfaction_node)
            if target_node is not None and not isinstance(target_node, SatisfactionNode):
                loc = ("nodes", node_id, "satisfaction_node")
                yield loc, "must name a satisfaction node", node.satisfaction_node


def _confirm_target_problems(node_id: str, node: SpeechRouteNode) -> Iterator[Problem]:
    # A confirm prompt for a target with no route could only ever lead to default: a typo, surely.
    for target, prompt in node.confirm_prompts.items():
        if target not in node.routes:
            yield ("nodes", node_id, "confirm_prompts", target), f"no route for target {target!r}", prompt


def _key_problems(flow: Flow) -> Iterator[Problem]:
    if flow.human_key not in DTMF_DIGITS:
        yield ("human_key",), "must be one DTMF key (0-9, * or #)", flow.human_key
    for node_id, node in flow.nodes.items():
        if isinstance(node, SpeechRouteNode):
            yield from _confirm_key_problems(flow, node_id, node)
        keyed = {"options": node.options} if isinstance(node, MenuNode) else {}
        if isinstance(node, SatisfactionNode):
            keyed = {"ratings": node.ratings}
        for field, mapping in keyed.items():
            for key in mapping:
                loc = ("nodes", node_id, field, key)
                if key not in DTMF_DIGITS:
                    yield loc, "must be one DTMF key (0-9, * or #)", key
                elif field == "options" and key == flow.human_key:
                    yield loc, f"{key!r} is the human key (human_key) and cannot be a menu option", key


def _confirm_key_problems(flow: Flow, node_id: str, node: SpeechRouteNode) -> Iterator[Problem]:
    loc = ("nodes", node_id, "confirm_key")
    if node.confirm_key not in DTMF_DIGITS:
        yield loc, "must be one DTMF key (0-9, * or #)", node.confirm_key
    elif node.confirm_key == flow.human_key:
        # The human key is handled first everywhere, so this confirmation could never be given.
        yield loc, f"{node.confirm_key!r} is the human key (human_key) and cannot be the confirm key", node.confirm_key


def _placeholder_problems(flow: Flow) -> Iterator[Problem]:
    # "{n}" is filled only for position announcements; anywhere else it would be spoken literally.
    spoken_plain = {
        prompt
        for node in flow.nodes.values()
        for (field, *_), prompt in node.prompt_refs()
        if field != "position_prompt"
    }
    for prompt_id, spec in flow.prompts.items():
        loc = ("prompts", prompt_id, "text")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(spec.text) if name is not None}
        except ValueError as exc:
            yield loc, f"bad braces: {exc}", spec.text
            continue
        if fields - {POSITION_PLACEHOLDER}:
            yield (
                loc,
                f"unknown placeholder(s) {sorted(fields - {POSITION_PLACEHOLDER})}; only {{n}} exists",
                spec.text,
            )
        elif fields and prompt_id in spoken_plain:
            yield (
                loc,
                "{n} is only filled in a queue's position_prompt, but this prompt is used elsewhere",
                spec.text,
            )


def _human_node(flow: Flow) -> str | None:
    if flow.human_node is not None:
        return flow.human_node
    serving = [nid for nid, n in flow.nodes.items() if isinstance(n, QueueNode) and n.queue == flow.human_queue]
    return serving[0] if len(serving) == 1 else None


def _human_problems(flow: Flow) -> Iterator[Problem]:
    if flow.human_node is None:
        if _human_node(flow) is None:
            message = f"no single queue node serves human_queue {flow.human_queue!r}; set human_node"
            yield ("human_queue",), message, flow.human_queue
        return
    node = flow.nodes.get(flow.human_node)
    if not isinstance(node, QueueNode) or node.queue != flow.human_queue:
        message = f"must name a queue node whose queue is human_queue {flow.human_queue!r}"
        yield ("human_node",), message, flow.human_node


def _reachability_problems(flow: Flow) -> Iterator[Problem]:
    # The human key can jump to the human node from anywhere, so it is a root like start.
    roots = [flow.start, *([human] if (human := _human_node(flow)) in flow.nodes else [])]
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node_id = todo.pop()
        if node_id not in seen:
            seen.add(node_id)
            todo.extend(target for _, target, _ in flow.nodes[node_id].node_refs())
    for node_id in flow.nodes:
        if node_id not in seen:
            yield ("nodes", node_id), "unreachable from start (and from the human key)", node_id


def _silent_cycle_problems(flow: Flow) -> Iterator[Problem]:
    """A caller who never presses a key must reach a queue or a hang-up: no silent loops.

    Queue nodes cut the graph (waiting for an agent is progress), so their edges are left out.
    """
    graph = {
        node_id: [target for _, target, silent in node.node_refs() if silent]
        for node_id, node in flow.nodes.items()
        if not isinstance(node, QueueNode)
    }
    for cycle in _cycles(graph):
        loop = " -> ".join([*cycle, cycle[0]])
        yield ("nodes", cycle[0]), f"silent loop without caller input: {loop}", cycle[0]


def _cycles(graph: Mapping[str, list[str]]) -> Iterator[list[str]]:
    """One cycle per back edge found by a depth-first search."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []

    def visit(node_id: str) -> Iterator[list[str]]:
        state[node_id] = 1
        stack.append(node_id)
        for target in graph.get(node_id, []):
            if state.get(target) == 1:
                yield stack[stack.index(target) :]
            elif target not in state:
                yield from visit(target)
        stack.pop()
        state[node_id] = 2

    for node_id in graph:
        if node_id not in state:
            yield from visit(node_id)
