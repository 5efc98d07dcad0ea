"""Prompts: every prompt with text but no recording is rendered to an 8 kHz mono WAV.

espeak-ng speaks Mandarin with the `cmn-latn-pinyin` voice (plain `cmn` spells pinyin in English),
sox resamples to telephone rate and normalizes. An admin's recording (`file` in the flow) always
wins. Position announcements (您前面还有{n}位) are rendered once per n up to `max_position`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

VOICE = "cmn-latn-pinyin"
RATE = 8000
_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """0..999 in Chinese numerals, as a prompt should say it (十二, 一百零五)."""
    if not 0 <= n <= 999:
        raise ValueError("only 0..999")
    if n < 10:
        return _DIGITS[n]
    if n < 20:
        return "十" + (_DIGITS[n % 10] if n % 10 else "")
    if n < 100:
        return _DIGITS[n // 10] + "十" + (_DIGITS[n % 10] if n % 10 else "")
    rest = n % 100
    tail = "" if rest == 0 else ("零" + chinese_number(rest) if rest < 10 else _one_ten(rest))
    return _DIGITS[n // 100] + "百" + tail


def _one_ten(n: int) -> str:
    # 110 is 一百一十, not 一百十.
    return "一" + chinese_number(n) if n < 20 else chinese_number(n)


@dataclass(frozen=True, slots=True)
class PromptFile:
    prompt_id: str
    text: str
    path: Path
    recorded: bool  # an admin's recording, not TTS


def prompt_wav(prompts_dir: Path, flow_id: str, prompt_id: str, n: int | None = None) -> Path:
    name = prompt_id if n is None else f"{prompt_id}_{n}"
    return prompts_dir / flow_id / f"{name}.wav"


def prompt_files(
    prompts: dict[str, tuple[str, str | None]],
    prompts_dir: Path,
    flow_id: str,
    base_dir: Path,
    max_position: int,
) -> Iterator[PromptFile]:
    """Every file the flow may play: (id -> (text, recorded file or None))."""
    for prompt_id, (text, recorded) in sorted(prompts.items()):
        if recorded:
            path = Path(recorded) if Path(recorded).is_absolute() else base_dir / recorded
            yield PromptFile(prompt_id, text, path, recorded=True)
        elif "{n}" in text:
            for n in range(max_position + 1):
                spoken = text.replace("{n}", chinese_number(n))
                yield PromptFile(prompt_id, spoken, prompt_wav(prompts_dir, flow_id, prompt_id, n), recorded=False)
        else:
            yield PromptFile(prompt_id, text, prompt_wav(prompts_dir, flow_id, prompt_id), recorded=False)


def render(text: str, out: Path, speed: int = 150) -> None:
    """Speak `text` into `out` (8 kHz, mono, 16-bit, normalized to -3 dBFS).

    Safe with any number of renderers at once (workers starting together on an empty folder): each
    writes its own temporary file beside `out` and renames it over `out`, which is atomic, so a
    reader only ever sees a whole prompt and the last renderer's copy wins. A fixed temporary name
    (`<prompt>.part.wav`) once made workers truncate each other's file and fail the rename (exit 1).
    """
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is not installed; `apt-get install espeak-ng sox` renders prompts")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "tts.wav"
        subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(speed), "-w", str(raw), text], check=True, timeout=60)
        # A name no other renderer uses, in out's own folder (a rename is atomic only within one file
        # system), created by sox itself so the prompt gets the usual permissions.
        partial = out.with_name(f".{out.stem}.{os.getpid()}.{secrets.token_hex(4)}.part.wav")
        try:
            subprocess.run(
                ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(partial), "norm", "-3"],
                check=True,
                timeout=60,
            )
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)  # only left behind when sox failed


def render_missing(files: list[PromptFile], force: bool = False, speed: int = 150) -> list[Path]:
    rendered = []
    for item in files:
        if item.recorded:
            if not item.path.exists():
                raise ConfigError(f"prompt {item.prompt_id}: recording {item.path} does not exist")
            continue
        if force or not item.path.exists():
            render(item.text, item.path, speed)
            rendered.append(item.path)
    return rendered
