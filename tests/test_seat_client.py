"""The terminal seat's core: what it prints (safely) and how it follows every server frame."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clients.seat import (
    HELP,
    NO_COMMANDS,
    Mode,
    SeatView,
    Step,
    describe,
    on_command,
    on_message,
    terminal_safe,
)
from gateway.errors import InvalidRequest

INTERACTIVE = Mode()
BACKGROUND = Mode(interactive=False)
AUTO = Mode(auto=True, interactive=False)
HOLDING = SeatView(logged_in=True, state="ready", claimed=("T1", "T2"), calls=("T1",))


def ticket(ticket_id: str = "T1", status: str = "offered", **extra: Any) -> dict[str, Any]:
    return {"id": ticket_id, "channel": "web", "queue": "general", "status": status, "text": "路灯不亮", **extra}


def test_escape_sequences_and_bidi_controls_are_escaped_newlines_kept() -> None:
    hostile = "清屏\x1b[2J\x1b]0;pwned\x07\x1b[31m$ sudo\x1b[0m\r\x9b1m\u202egnp.exe\u2066x\u2069\x00\x7f"
    safe = terminal_safe(hostile + "\n第二行\t")
    assert safe == (
        "清屏\\x1b[2J\\x1b]0;pwned\\x07\\x1b[31m$ sudo\\x1b[0m\\x0d\\x9b1m\\u202egnp.exe\\u2066x\\u2069\\x00\\x7f"
        "\n第二行\\x09"
    )
    assert terminal_safe("幸福路12号　路灯不亮三天了") == "幸福路12号　路灯不亮三天了"


@given(st.text())
def test_nothing_but_newlines_of_control_characters_survives(text: str) -> None:
    safe = terminal_safe(text)
    assert all(ch == "\n" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) for ch in safe)
    assert safe.count("\n") == text.count("\n")


def test_a_citizens_extra_lines_are_indented_under_the_ticket() -> None:
    text = describe(ticket(text="第一行\n新工单 (请在 20 秒内接受):", citizen={"name": "陈先生"}))
    assert text.splitlines()[-2:] == ["  诉求: 第一行", "      新工单 (请在 20 秒内接受):"]


def test_welcome_resumes_claims_and_turns_ready() -> None:
    frame = {
        "type": "welcome",
        "v": 1,
        "agent": "1001",
        "name": "张敏",
        "queues": ["general"],
        "session": "s1",
        "state": "away",
    }
    step = on_message(SeatView(), {**frame, "resumed": [ticket("T9", "claimed")]}, INTERACTIVE)
    assert step.view == SeatView(logged_in=True, state="away", claimed=("T9",))
    assert step.send == ({"type": "state", "state": "ready"},)
    assert step.say[0].startswith("已登录: 张敏") and NO_COMMANDS not in step.say
    background = on_message(SeatView(), {**frame, "resumed": []}, BACKGROUND)
    assert NO_COMMANDS in background.say and "--auto" in NO_COMMANDS
    auto = on_message(SeatView(), {**frame, "resumed": [ticket("T9", "claimed")]}, AUTO)
    assert auto.send[1:] == ({"type": "submit", "ticket": "T9"},)


def test_an_offer_is_shown_with_how_to_act_on_it() -> None:
    frame = {"type": "offer", "ticket": ticket("T3"), "expires_in": 20}
    step = on_message(HOLDING, frame, INTERACTIVE)
    assert step.view.offered == "T3" and step.send == ()
    assert "诉求: 路灯不亮" in step.say[0] and step.say[1] == "命令: a 接受  d 拒绝"
    assert on_message(HOLDING, frame, BACKGROUND).say[1] == NO_COMMANDS
    assert on_message(HOLDING, frame, AUTO).send == ({"type": "accept", "ticket": "T3"},)


def test_an_offer_revoked_is_no_longer_offered() -> None:
    view = replace(HOLDING, offered="T3")
    assert (
        on_message(view, {"type": "offer_revoked", "ticket": "T3", "reason": "no_answer"}, INTERACTIVE).view == HOLDING
    )
    assert on_message(view, {"type": "offer_revoked", "ticket": "T4", "reason": "no_answer"}, INTERACTIVE).view == view


def test_a_state_the_server_set_is_the_seats_state() -> None:
    step = on_message(HOLDING, {"type": "state", "state": "away", "reason": "missed_offer"}, INTERACTIVE)
    assert step.view.state == "away" and step.say == ("状态: away (missed_offer)", "输入 ready 恢复接单")


def test_a_claimed_ticket_is_held_once_and_an_update_is_reported() -> None:
    view = replace(HOLDING, offered="T3")
    step = on_message(view, {"type": "ticket", "ticket": ticket("T3", "claimed")}, INTERACTIVE)
    assert step.view.claimed == ("T1", "T2", "T3") and step.view.offered is None
    assert step.say == ("已接单 T3", "命令: s 提交  r 文字 回复市民")
    again = on_message(step.view, {"type": "ticket", "ticket": ticket("T3", "claimed")}, INTERACTIVE)
    assert again.view == step.view and again.say == ("工单 T3 已更新",)
    auto = on_message(view, {"type": "ticket", "ticket": ticket("T3", "claimed")}, AUTO)
    assert auto.send == ({"type": "submit", "ticket": "T3"},)
    gone = on_message(HOLDING, {"type": "ticket", "ticket": ticket("T2", "submitted")}, INTERACTIVE)
    assert gone.view.claimed == ("T1",)


def test_a_screen_pop_is_a_ringing_call_of_a_held_ticket() -> None:
    step = on_message(
        replace(HOLDING, calls=()), {"type": "screen_pop", "ticket": ticket("T2", "claimed")}, INTERACTIVE
    )
    assert step.view.calls == ("T2",) and step.view.claimed == ("T1", "T2")
    assert step.say[0].startswith("\n来电振铃")


def test_a_revoked_ticket_is_no_longer_held_and_s_does_not_submit_it() -> None:
    step = on_message(HOLDING, {"type": "revoked", "ticket": "T1", "reason": "caller_hung_up"}, INTERACTIVE)
    assert step.view.claimed == ("T2",) and step.view.calls == ()
    assert step.say == ("工单 T1 已收回 (caller_hung_up)",)
    assert on_command(step.view, "s").send == ({"type": "submit", "ticket": "T2"},)
    last = on_message(step.view, {"type": "revoked", "ticket": "T2", "reason": "worker_died"}, INTERACTIVE)
    nothing = on_command(last.view, "s")
    assert nothing.send == () and nothing.say == ("没有可提交的工单",)


def test_an_ended_call_leaves_the_ticket_to_submit() -> None:
    step = on_message(HOLDING, {"type": "call_ended", "ticket": "T1", "reason": "worker_died"}, INTERACTIVE)
    assert step.view.calls == () and step.view.claimed == ("T1", "T2")
    assert on_command(step.view, "s").send == ({"type": "submit", "ticket": "T1"},)


def test_acks_settle_what_they_answer() -> None:
    submitted = on_message(HOLDING, {"type": "ack", "re": 1, "ticket": "T1", "status": "submitted"}, Mode(limit=1))
    assert submitted.view.claimed == ("T2",) and submitted.view.submitted == 1 and submitted.stop
    assert not on_message(HOLDING, {"type": "ack", "re": 1, "ticket": "T1", "status": "submitted"}, INTERACTIVE).stop
    declined = {"type": "ack", "re": 2, "ticket": "T5", "status": "declined"}
    assert on_message(replace(HOLDING, offered="T5"), declined, AUTO).view == HOLDING
    assert on_message(HOLDING, {"type": "ack", "re": 3, "state": "busy"}, AUTO).view.state == "busy"
    replied = {"type": "ack", "re": 4, "ticket": "T1", "outbox": "1-0"}
    assert on_message(HOLDING, replied, AUTO).say == ("已回复市民 (工单 T1)",)
    assert on_message(HOLDING, {"type": "ack", "re": 5, "ticket": "T1", "status": "claimed"}, AUTO).say == ()


def test_errors_pongs_transcripts_and_unknown_frames() -> None:
    error = {
        "type": "error",
        "code": "invalid",
        "message": "bad",
        "re": None,
        "fields": [{"path": "fields.text", "message": "x"}],
    }
    assert on_message(HOLDING, error, AUTO).say == ("[错误] invalid: bad", "  fields.text: x")
    assert on_message(HOLDING, {"type": "pong", "re": 3, "time": "t"}, AUTO) == Step(HOLDING)
    timing = {"start": 0, "end": 1.2, "confidence": 0.8}
    partial = {"type": "transcript", "ticket": "T1", "segment": {"text": "我家", "final": False, **timing}}
    assert on_message(HOLDING, partial, AUTO).say == ()
    final = {"type": "transcript", "ticket": "T1", "segment": {"text": "我家门口\n路灯坏了", "final": True, **timing}}
    assert on_message(HOLDING, final, AUTO).say == ("[市民 T1] 我家门口\n      路灯坏了",)
    unknown = on_message(HOLDING, {"type": "x" * 1000}, AUTO)
    assert unknown.view == HOLDING and len(unknown.say[0]) < 60


def test_a_frame_missing_what_it_must_hold_raises() -> None:
    with pytest.raises(InvalidRequest) as caught:
        on_message(HOLDING, {"type": "offer"}, AUTO)
    assert [field.path for field in caught.value.fields] == ["ticket", "expires_in"]


def test_commands() -> None:
    assert on_command(HOLDING, "q").stop
    assert on_command(HOLDING, "   ").send == () and on_command(HOLDING, "").say == ()
    assert on_command(HOLDING, "a").say == ("没有待接受的工单",)
    offered = replace(HOLDING, offered="T7")
    assert on_command(offered, "a").send == ({"type": "accept", "ticket": "T7"},)
    assert on_command(offered, "d").send == ({"type": "decline", "ticket": "T7"},)
    assert on_command(HOLDING, "r").say == ("用法: r 回复内容",)
    assert on_command(HOLDING, "r 已派人处理").send == ({"type": "reply", "ticket": "T1", "text": "已派人处理"},)
    assert on_command(SeatView(), "r hi").say == ("没有可回复的工单",)
    assert on_command(HOLDING, "busy").send == ({"type": "state", "state": "busy"},)
    assert on_command(HOLDING, "help").say == (HELP,)
