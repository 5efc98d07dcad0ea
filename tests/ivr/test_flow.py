"""Flow model: the default 12345 flow parses, and every validation rule reports its field path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.ivr.calendar import ALWAYS_OPEN
from gateway.ivr.flow import (
    BusinessHoursNode,
    CollectSpeechNode,
    Flow,
    HangupNode,
    IvrConfig,
    MenuNode,
    PromptSpec,
    QueueNode,
    RecordMessageNode,
    SatisfactionNode,
    SpeechRouteNode,
    parse_ivr_toml,
)
from gateway.ivr.machine import CallMachine
from tests.ivr.test_fakes import DEFAULT_FLOW_TOML, default_config

Raw = dict[str, Any]


def small_flow() -> Raw:
    """A valid flow touching most node types; tests break one thing at a time."""
    return {
        "id": "t",
        "human_queue": "general",
        "start": "hours",
        "prompts": {
            "menu": {"text": "请按1"},
            "bad": {"text": "输入有误"},
            "hold": {"text": "请稍候"},
            "pos": {"text": "您前面还有{n}位"},
            "msg": {"text": "请留言"},
            "bye": {"text": "再见"},
        },
        "nodes": {
            "hours": {"type": "business_hours", "calendar": "cal", "open": "menu", "closed": "message"},
            "menu": {
                "type": "menu",
                "prompt": "menu",
                "options": {"1": "queue"},
                "invalid_prompt": "bad",
                "default": "queue",
            },
            "queue": {
                "type": "queue",
                "queue": "general",
                "hold_prompt": "hold",
                "position_prompt": "pos",
                "overflow": "message",
            },
            "message": {"type": "record_message", "prompt": "msg", "next": "bye"},
            "bye": {"type": "hangup", "prompt": "bye"},
        },
    }


def errors_of(raw: Raw) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        Flow.model_validate(raw)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def test_small_flow_is_valid() -> None:
    flow = Flow.model_validate(small_flow())
    assert flow.human_node_id == "queue"
    assert flow.human_key == "0"


def test_default_flow_parses() -> None:
    config = default_config()
    flow = config.flow
    assert flow.id == "12345-default"
    assert flow.start == "greeting"
    assert flow.human_key == "0"
    assert flow.human_node_id == "queue_general"
    assert config.calendars["hotline"] == ALWAYS_OPEN
    menu = flow.nodes["main_menu"]
    assert isinstance(menu, MenuNode)
    assert menu.options == {"1": "queue_enterprise", "2": "speech", "3": "navigation"}
    enterprise = flow.nodes["queue_enterprise"]
    assert isinstance(enterprise, QueueNode)
    assert (enterprise.queue, enterprise.priority) == ("enterprise", 2)
    assert isinstance(flow.nodes["speech"], CollectSpeechNode)
    assert isinstance(flow.nodes["closed_message"], RecordMessageNode)
    assert isinstance(flow.nodes["hours"], BusinessHoursNode)
    survey = flow.nodes["survey"]
    assert isinstance(survey, SatisfactionNode)
    assert survey.ratings == {"1": "satisfied", "2": "basic", "3": "unsatisfied"}
    navigation = flow.nodes["navigation"]
    assert isinstance(navigation, SpeechRouteNode)
    assert navigation.routes == {
        "housing": "queue_housing",
        "enterprise": "queue_enterprise",
        "tax": "queue_general",
        "traffic": "queue_general",  # no traffic queue in config/gateway.toml
    }
    assert set(navigation.confirm_prompts) == {"housing", "enterprise"}
    assert (navigation.confirm_key, navigation.default) == ("1", "queue_general")
    # Only queues every config running this flow has (the shipped one and the tests' shared one).
    queues = {node.queue for node in flow.nodes.values() if isinstance(node, QueueNode)}
    assert queues == {"general", "enterprise", "housing"}


def test_default_prompts_are_the_12345_texts() -> None:
    prompts = default_config().flow.prompts
    # 幺二三四五: the number as it is said (espeak-ng read "12345" as 一万两千三百四十五).
    assert prompts["greeting"].text == "您好，欢迎致电幺二三四五政务服务便民热线。"
    assert prompts["main_menu"].text == "人工服务请按0，企业服务请按1，语音留言请按2，语音导航请按3。"
    assert prompts["navigation"].text == "请说出您要办理的业务，例如：住房、税务、交通、企业服务。"
    assert prompts["confirm_housing"].text == "您要办理的是住房业务吗？是请按1，其他业务请按2。"
    assert prompts["speech"].text == "请在提示音后简要说出您的诉求，说完请挂机或按井号键。"
    assert prompts["closed"].text == "现在是非工作时间，请在提示音后留言，我们将尽快回电。"
    assert prompts["overflow"].text == "当前等待人数较多，请在提示音后留言，我们将尽快回电。"
    assert prompts["hold"].text == "坐席正忙，请稍候。"
    assert prompts["survey"].text == "满意请按1，基本满意请按2，不满意请按3。"
    assert prompts["position"].render((("n", "3"),)) == "您前面还有3位，请耐心等待。"


def test_flows_are_frozen() -> None:
    flow = default_config().flow
    with pytest.raises(ValidationError):
        flow.start = "bye"  # type: ignore[misc]


def _set(path: str, value: Any) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        *parents, last = path.split(".")
        target = raw
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        *parents, last = path.split(".")
        target = raw
        for key in parents:
            target = target[key]
        del target[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "loc", "message"),
    [
        (_set("start", "nowhere"), "start", "unknown node 'nowhere'"),
        (_set("nodes.menu.options.1", "nowhere"), "nodes.menu.options.1", "unknown node 'nowhere'"),
        (_set("nodes.menu.default", "nowhere"), "nodes.menu.default", "unknown node"),
        (_set("nodes.queue.overflow", "nowhere"), "nodes.queue.overflow", "unknown node"),
        (_set("nodes.menu.invalid_prompt", "nope"), "nodes.menu.invalid_prompt", "unknown prompt 'nope'"),
        (_set("nodes.bye.prompt", "nope"), "nodes.bye.prompt", "unknown prompt 'nope'"),
        (_set("nodes.menu.options.12", "queue"), "nodes.menu.options.12", "one DTMF key"),
        (_set("nodes.menu.options.A", "queue"), "nodes.menu.options.A", "one DTMF key"),
        (_set("nodes.menu.options.0", "queue"), "nodes.menu.options.0", "is the human key"),
        (_set("human_key", "00"), "human_key", "one DTMF key"),
        (_set("human_queue", "vip"), "human_queue", "no single queue node serves human_queue 'vip'"),
        (_set("human_node", "menu"), "human_node", "must name a queue node"),
        (_set("nodes.queue.satisfaction_node", "bye"), "nodes.queue.satisfaction_node", "satisfaction node"),
        (_set("nodes.orphan", {"type": "hangup"}), "nodes.orphan", "unreachable"),
        (_set("prompts.bad.text", "输入{x}有误"), "prompts.bad.text", "unknown placeholder"),
        (_set("prompts.bad.text", "输入{有误"), "prompts.bad.text", "bad braces"),
        (_set("nodes.menu.default", "menu"), "nodes.menu", "silent loop without caller input: menu -> menu"),
        (_delete("nodes.menu.invalid_prompt"), "nodes.menu.menu.invalid_prompt", "Field required"),
        (_set("nodes.menu.surprise", 1), "nodes.menu.menu.surprise", "Extra inputs"),
        (_set("nodes.menu.type", "ivr"), "nodes.menu", "does not match any of the expected tags"),
        (_set("nodes.menu.timeout_seconds", 0), "nodes.menu.menu.timeout_seconds", "greater than 0"),
    ],
)
def test_validation_names_the_field(mutate: Callable[[Raw], None], loc: str, message: str) -> None:
    raw = copy.deepcopy(small_flow())
    mutate(raw)
    found = errors_of(raw)
    assert any(where == loc and message in what for where, what in found), found


def test_a_silent_loop_through_several_nodes_is_reported_once_with_its_path() -> None:
    raw = small_flow()
    raw["prompts"]["p"] = {"text": "提示"}
    raw["nodes"]["menu"]["default"] = "a"
    raw["nodes"]["a"] = {"type": "play", "prompt": "p", "next": "b"}
    raw["nodes"]["b"] = {"type": "play", "prompt": "p", "next": "menu"}
    [(_, message)] = errors_of(raw)
    assert "silent loop" in message
    assert "menu -> a -> b -> menu" in message


def test_a_loop_through_a_queue_is_fine() -> None:
    raw = small_flow()
    raw["nodes"]["message"]["next"] = "queue"  # after the message, wait again: progress is the queue
    raw["nodes"]["bye"]["prompt"] = None
    raw["nodes"]["menu"]["options"]["2"] = "bye"
    Flow.model_validate(raw)


def test_a_loop_through_caller_input_is_fine() -> None:
    raw = small_flow()
    raw["prompts"]["p"] = {"text": "提示"}
    raw["nodes"]["menu"]["options"]["9"] = "again"
    raw["nodes"]["again"] = {"type": "play", "prompt": "p", "next": "menu"}
    Flow.model_validate(raw)


def test_all_problems_are_reported_together() -> None:
    raw = small_flow()
    raw["start"] = "x"
    raw["nodes"]["menu"]["options"]["#"] = "y"
    raw["prompts"]["bad"]["text"] = "{oops}"
    assert {loc for loc, _ in errors_of(raw)} == {"start", "nodes.menu.options.#", "prompts.bad.text"}


def test_the_human_node_may_be_named_when_several_queues_serve_the_human_queue() -> None:
    raw = small_flow()
    raw["nodes"]["queue2"] = dict(raw["nodes"]["queue"], priority=3)
    raw["nodes"]["menu"]["options"]["2"] = "queue2"
    assert any("no single queue node" in msg for _, msg in errors_of(raw))
    raw["human_node"] = "queue2"
    assert Flow.model_validate(raw).human_node_id == "queue2"


def test_the_position_placeholder_only_in_position_prompts() -> None:
    raw = small_flow()
    raw["nodes"]["bye"]["prompt"] = "pos"  # "{n}" would be spoken literally at the goodbye
    raw["nodes"]["queue"]["position_prompt"] = None
    [(loc, message)] = errors_of(raw)
    assert loc == "prompts.pos.text"
    assert "{n}" in message


def test_prompt_render() -> None:
    assert PromptSpec(text="您前面还有{n}位").render((("n", "2"),)) == "您前面还有2位"
    assert PromptSpec(text="再见", file="bye.wav").render() == "再见"


def test_ivr_config_checks_calendars_with_the_path() -> None:
    with pytest.raises(ValidationError) as info:
        IvrConfig.model_validate({"flow": small_flow(), "calendars": {}})
    [error] = info.value.errors()
    assert error["loc"] == ("flow", "nodes", "hours", "calendar")
    assert "unknown calendar 'cal'" in error["msg"]


def test_nested_flow_errors_keep_the_prefix() -> None:
    raw = small_flow()
    raw["start"] = "x"
    with pytest.raises(ValidationError) as info:
        IvrConfig.model_validate({"flow": raw, "calendars": {"cal": {"always_open": True}}})
    assert info.value.errors()[0]["loc"] == ("flow", "start")


def test_the_machine_refuses_a_missing_calendar() -> None:
    flow = Flow.model_validate(small_flow())
    with pytest.raises(ValidationError, match="unknown calendar"):
        CallMachine(flow, {})


def test_parse_ivr_toml_reads_the_ivr_section() -> None:
    text = DEFAULT_FLOW_TOML.read_text(encoding="utf-8")
    assert parse_ivr_toml(text) == default_config()
    assert parse_ivr_toml(text.replace("[ivr.", "[voice."), section="voice").flow.id == "12345-default"


# --- speech_route -------------------------------------------------------------------------------------


def route_flow() -> Raw:
    """small_flow with a speech_route node as menu option 2."""
    raw = copy.deepcopy(small_flow())
    raw["prompts"]["nav"] = {"text": "请说出您要办理的业务"}
    raw["prompts"]["sure"] = {"text": "您要办理的是住房业务吗？是请按1"}
    raw["nodes"]["menu"]["options"]["2"] = "nav"
    raw["nodes"]["nav"] = {
        "type": "speech_route",
        "prompt": "nav",
        "routes": {"housing": "queue", "tax": "bye"},
        "confirm_prompts": {"housing": "sure"},
        "default": "queue",
    }
    return raw


def test_route_flow_is_valid_with_defaults() -> None:
    node = Flow.model_validate(route_flow()).nodes["nav"]
    assert isinstance(node, SpeechRouteNode)
    assert (node.confirm_key, node.listen_seconds, node.silence_seconds) == ("1", 8.0, None)
    assert node.confirm_timeout_seconds == 6.0


def errors_of_route_flow(mutate: Callable[[Raw], None]) -> list[tuple[str, str]]:
    raw = route_flow()
    mutate(raw)
    return errors_of(raw)


@pytest.mark.parametrize(
    ("mutate", "loc", "message"),
    [
        (_set("nodes.nav.routes.housing", "nowhere"), "nodes.nav.routes.housing", "unknown node 'nowhere'"),
        (_set("nodes.nav.default", "nowhere"), "nodes.nav.default", "unknown node 'nowhere'"),
        (_set("nodes.nav.prompt", "nope"), "nodes.nav.prompt", "unknown prompt 'nope'"),
        (_set("nodes.nav.confirm_prompts.housing", "nope"), "nodes.nav.confirm_prompts.housing", "unknown prompt"),
        (_set("nodes.nav.confirm_prompts.parking", "sure"), "nodes.nav.confirm_prompts.parking", "no route for"),
        (_set("nodes.nav.confirm_key", "0"), "nodes.nav.confirm_key", "is the human key"),
        (_set("nodes.nav.confirm_key", "11"), "nodes.nav.confirm_key", "one DTMF key"),
        (_set("nodes.nav.confirm_key", "A"), "nodes.nav.confirm_key", "one DTMF key"),
        (_set("nodes.nav.routes", {}), "nodes.nav.speech_route.routes", "at least 1 item"),
        (_set("nodes.nav.routes", {"": "queue"}), "nodes.nav.speech_route.routes..[key]", "at least 1 character"),
        (_set("nodes.nav.listen_seconds", 0), "nodes.nav.speech_route.listen_seconds", "greater than 0"),
        (_set("nodes.nav.silence_seconds", -1), "nodes.nav.speech_route.silence_seconds", "greater than 0"),
        (_set("nodes.nav.confirm_timeout_seconds", 0), "nodes.nav.speech_route.confirm_timeout_seconds", "than 0"),
        (_delete("nodes.nav.default"), "nodes.nav.speech_route.default", "Field required"),
        (_set("prompts.sure.text", "您前面还有{n}位"), "prompts.sure.text", "only filled in a queue's position_prompt"),
    ],
)
def test_speech_route_validation_names_the_field(mutate: Callable[[Raw], None], loc: str, message: str) -> None:
    found = errors_of_route_flow(mutate)
    assert any(where == loc and message in what for where, what in found), found


def test_default_is_a_silent_edge() -> None:
    raw = route_flow()
    raw["nodes"]["nav"]["default"] = "again"
    raw["nodes"]["again"] = {"type": "play", "prompt": "nav", "next": "nav"}
    [(loc, message)] = errors_of(raw)
    assert (loc, message) == ("nodes.nav", "silent loop without caller input: nav -> again -> nav")


def test_a_node_reached_only_through_a_route_is_reachable() -> None:
    raw = route_flow()
    raw["nodes"]["tax_bye"] = {"type": "hangup", "prompt": "bye"}
    raw["nodes"]["nav"]["routes"]["tax"] = "tax_bye"
    Flow.model_validate(raw)


def test_routes_are_not_silent_edges() -> None:
    raw = route_flow()
    raw["nodes"]["nav"]["routes"]["again"] = "nav"  # "say it again": only speech takes this edge
    Flow.model_validate(raw)


def test_hangup_prompt_is_optional() -> None:
    assert HangupNode(type="hangup").prompt is None
