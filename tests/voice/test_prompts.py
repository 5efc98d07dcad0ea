from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.ivr.flow import parse_ivr_toml
from gateway.voice.prompts import chinese_number, prompt_files, render_missing
from gateway.voice.wav import header_complete, rms_per_second, wav_info
from peers.flows import DEFAULT_FLOW


@pytest.mark.parametrize(
    ("n", "spoken"),
    [
        (0, "零"),
        (7, "七"),
        (10, "十"),
        (12, "十二"),
        (20, "二十"),
        (35, "三十五"),
        (100, "一百"),
        (105, "一百零五"),
        (110, "一百一十"),
        (999, "九百九十九"),
    ],
)
def test_chinese_number(n: int, spoken: str) -> None:
    assert chinese_number(n) == spoken


def test_renders_missing_prompts_at_telephone_rate(tmp_path: Path) -> None:
    recorded = tmp_path / "admin" / "greeting.wav"
    prompts: dict[str, tuple[str, str | None]] = {
        "greeting": ("您好，欢迎致电12345政务服务便民热线。", None),
        "position": ("您前面还有{n}位，请耐心等待。", None),
    }
    files = list(prompt_files(prompts, tmp_path / "prompts", "flow1", tmp_path, max_position=3))
    assert [f.path.name for f in files] == [
        "greeting.wav",
        "position_0.wav",
        "position_1.wav",
        "position_2.wav",
        "position_3.wav",
    ]
    assert files[3].text == "您前面还有二位，请耐心等待。"
    rendered = render_missing(files)
    assert len(rendered) == 5
    info = wav_info(files[0].path)
    assert (info.rate, info.channels) == (8000, 1)
    assert 2.0 < info.seconds < 10.0
    assert max(rms_per_second(files[0].path)) > 0.05, "it speaks"
    assert render_missing(files) == [], "rendered once; kept after"
    # An admin's recording replaces TTS and is never overwritten.
    recorded.parent.mkdir()
    recorded.write_bytes(files[0].path.read_bytes())
    admin = list(prompt_files({"greeting": ("x", "admin/greeting.wav")}, tmp_path / "p", "f", tmp_path, 0))
    assert admin[0].recorded and render_missing(admin, force=True) == []
    missing = list(prompt_files({"greeting": ("x", "admin/absent.wav")}, tmp_path / "p", "f", tmp_path, 0))
    with pytest.raises(ConfigError, match="does not exist"):
        render_missing(missing)


# One renderer, as a worker starting on an empty prompts folder runs it: the shipped flow's prompts.
RENDERER = """
import sys
from pathlib import Path
from gateway.ivr.flow import parse_ivr_toml
from gateway.voice.prompts import prompt_files, render_missing
flow = parse_ivr_toml(Path(sys.argv[1]).read_text(encoding="utf-8")).flow
prompts = {pid: (spec.text, spec.file) for pid, spec in flow.prompts.items()}
folder = Path(sys.argv[2])
print(len(render_missing(list(prompt_files(prompts, folder, flow.id, folder, max_position=2)), speed=300)))
"""


def test_renderers_started_together_on_an_empty_folder_all_succeed_with_whole_prompts(tmp_path: Path) -> None:
    # Workers started at once used to race on `<prompt>.part.wav`: 3 of 4, then 20 of 20, exited 1.
    folder = tmp_path / "prompts"
    command = [sys.executable, "-c", RENDERER, str(DEFAULT_FLOW), str(folder)]
    renderers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [renderer.communicate(timeout=300) for renderer in renderers]
    assert [renderer.returncode for renderer in renderers] == [0] * 4, [err[-800:] for _, err in results]
    flow = parse_ivr_toml(DEFAULT_FLOW.read_text(encoding="utf-8")).flow
    prompts = {pid: (spec.text, spec.file) for pid, spec in flow.prompts.items()}
    expected = {item.path for item in prompt_files(prompts, folder, flow.id, folder, max_position=2)}
    assert set((folder / flow.id).iterdir()) == expected, "every prompt, and no temporary file left"
    assert sum(int(out) for out, _ in results) >= len(expected)  # some rendered twice; none lost
    for path in expected:
        with wave.open(str(path), "rb") as prompt:
            assert (prompt.getframerate(), prompt.getnchannels(), prompt.getsampwidth()) == (8000, 1, 2)
            frames = prompt.getnframes()
            assert frames > 0 and len(prompt.readframes(frames)) == frames * 2, f"{path.name} is whole"
        assert header_complete(path)
