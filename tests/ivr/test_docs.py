"""docs/ivr.md stays true: its tables are the code's, its TOML examples parse and match the files."""

from __future__ import annotations

import re
import tomllib
from datetime import date, datetime
from pathlib import Path

from gateway.ivr.calendar import Calendar, is_open
from gateway.ivr.flow import IvrConfig, SpeechRouteNode, parse_ivr_toml
from gateway.ivr.machine import enter_table_markdown, transition_table_markdown
from tests.ivr.test_fakes import DEFAULT_FLOW_TOML

DOC = Path(__file__).resolve().parents[2] / "docs" / "ivr.md"


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_transition_table_is_the_codes() -> None:
    assert transition_table_markdown() in DOC.read_text(encoding="utf-8")


def test_the_node_entry_table_is_the_codes() -> None:
    assert enter_table_markdown() in DOC.read_text(encoding="utf-8")


def test_the_default_flow_in_the_docs_is_the_file() -> None:
    assert toml_blocks()[-1] == DEFAULT_FLOW_TOML.read_text(encoding="utf-8")
    assert parse_ivr_toml(toml_blocks()[-1]).flow.id == "12345-default"


def office_time(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 10, 0)


def test_the_calendar_example_parses_with_the_2026_holidays() -> None:
    raw_calendars = tomllib.loads(toml_blocks()[0])["ivr"]["calendars"]
    calendars = {name: Calendar.model_validate(raw) for name, raw in raw_calendars.items()}
    office = calendars["office"]
    assert calendars["hotline"].always_open
    assert len(office.holidays) == 33
    assert date(2026, 2, 14) in office.makeup_workdays
    assert is_open(office, office_time(2026, 2, 14))  # 调休 Saturday
    assert not is_open(office, office_time(2026, 10, 5))  # 国庆, a Monday
    assert not is_open(office, office_time(2026, 3, 14))  # ordinary Saturday


def test_the_speech_route_example_fits_into_the_default_flow() -> None:
    [example] = [block for block in toml_blocks()[:-1] if 'type = "speech_route"' in block]
    flow = tomllib.loads(example)["ivr"]["flow"]
    node = SpeechRouteNode.model_validate(flow["nodes"]["navigation"])
    assert set(node.confirm_prompts) < set(node.routes)
    # Its prompts and queue nodes are the default flow's: the example replaces the shipped node and stays valid.
    raw = tomllib.loads(DEFAULT_FLOW_TOML.read_text(encoding="utf-8"))["ivr"]
    raw["flow"]["prompts"].update(flow["prompts"])
    raw["flow"]["nodes"]["navigation"] = flow["nodes"]["navigation"]
    config = IvrConfig.model_validate(raw)
    assert config.flow.nodes["navigation"] == node
