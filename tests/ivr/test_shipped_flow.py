"""The shipped flow (config/flows/12345.toml) through the pure machine, with its prompts as long as
a worker plays them: rendered here the way a worker renders them (espeak-ng, sox, the same speed).

12345 practice is one key to a human and an answer within 15 s: a caller who presses nothing must
reach the queue after at most one repeat of the menu, and docs/ivr.md says how long that takes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gateway.ivr.flow import MenuNode
from gateway.ivr.machine import Phase
from gateway.voice.prompts import render
from gateway.voice.wav import wav_seconds
from tests.conftest import missing
from tests.ivr.test_fakes import FakeAdapter, default_config, default_machine, run_silent

DOC = Path(__file__).resolve().parents[2] / "docs" / "ivr.md"


@pytest.fixture(scope="module")
def spoken_seconds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """Each fixed prompt of the shipped flow: how many seconds it plays (placeholders left out)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        missing("espeak-ng and sox render the prompts (Debian packages espeak-ng, sox)")
    folder = tmp_path_factory.mktemp("shipped-prompts")
    seconds = {}
    for prompt_id, spec in default_config().flow.prompts.items():
        if spec.file is None and "{" not in spec.text:
            render(spec.text, folder / f"{prompt_id}.wav")  # the speed a worker renders at
            seconds[prompt_id] = wav_seconds(folder / f"{prompt_id}.wav")
    return seconds


def test_a_silent_caller_reaches_a_person_after_one_repeat_of_the_menu(spoken_seconds: dict[str, float]) -> None:
    call = FakeAdapter(default_machine(), prompt_seconds=spoken_seconds)
    call.answer()
    run_silent(call, 20)
    assert call.machine.state is Phase.QUEUED and call.queued == "general"
    played = [play.prompt for play in call.played]
    assert played == ["greeting", "main_menu", "main_menu", "hold"], "the menu and one repeat, no more"
    menu = default_config().flow.nodes["main_menu"]
    assert isinstance(menu, MenuNode)
    waited = spoken_seconds["greeting"] + 2 * spoken_seconds["main_menu"] + 2 * menu.timeout_seconds
    assert call.clock == pytest.approx(waited)
    assert call.clock <= 40, f"{call.clock:.1f} s of menus before a silent caller is queued"
    # docs/ivr.md states the figure.
    stated = re.search(r"silent caller is queued after (\d+) s", DOC.read_text(encoding="utf-8"))
    assert stated is not None and int(stated[1]) == round(call.clock), round(call.clock)
