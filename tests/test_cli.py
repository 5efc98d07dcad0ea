"""The command line: which config a command reads, and a description for every option."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from gateway.cli import DEFAULT_CONFIG, PROJECT_ROOT, build_parser, find_config


def test_an_explicit_config_wins_then_the_environment(tmp_path: Path) -> None:
    assert find_config("a.toml", {"HG_CONFIG": "b.toml"}, tmp_path) == ("a.toml", "--config")
    assert find_config(None, {"HG_CONFIG": "b.toml"}, tmp_path) == ("b.toml", "$HG_CONFIG")


def test_the_config_here_then_one_above_then_the_projects_own(tmp_path: Path) -> None:
    here = tmp_path / "checkout"
    (here / "config").mkdir(parents=True)
    (here / DEFAULT_CONFIG).write_text("")
    assert find_config(None, {}, here) == (DEFAULT_CONFIG, "the current directory")
    below = here / "gateway" / "web"
    below.mkdir(parents=True)
    assert find_config(None, {}, below) == (str(here / DEFAULT_CONFIG), "the project's own")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert find_config(None, {}, elsewhere) == (str(PROJECT_ROOT / DEFAULT_CONFIG), "the project's own")


def test_check_config_from_another_directory_reads_the_projects_config_and_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    # Without credentials the example config is refused, but it is the project's that was read.
    assert f"config: {PROJECT_ROOT / DEFAULT_CONFIG} (the project's own)" in done.stderr
    assert "no such file" not in done.stderr


def _actions(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def test_every_option_of_every_command_has_a_description() -> None:
    undescribed = [
        f"{path} {action.dest}" for path, action in _actions(build_parser(), "hotline-gateway") if not action.help
    ]
    assert undescribed == []


def test_every_command_has_a_description() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert set(helps) == set(subparsers.choices) and all(helps.values())
