from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.ivr.prompts import chinese_number, prompt_files, render_missing
from gateway.ivr.wav import rms_per_second, wav_info


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
    prompts = {
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
