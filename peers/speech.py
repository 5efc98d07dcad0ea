"""Speech for tests and benchmarks: Mandarin TTS (espeak-ng), WAV helpers, noise, the shared test
audio, and what callers say to the navigation grammar (in and out of its domain)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


def write_wav(path: Path, pcm: bytes, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


def read_pcm(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), wav.readframes(wav.getnframes())


def have_tts() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def synthesize(text: str, path: Path, speed: int = 160, rate: int = 8000) -> Path:
    """Mandarin TTS as the baseline measured it: espeak-ng cmn-latn-pinyin, sox to 16-bit mono."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def sox_noise(
    path: Path, seconds: float = 2.0, kind: str = "whitenoise", rate: int = 8000, volume: float = 0.3
) -> Path:
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "synth",
            str(seconds),
            kind,
            "vol",
            str(volume),
        ],
        check=True,
    )
    return path


# Navigation phrases and the target each one means; phrases the grammar must refuse; TTS speeds.
IN_DOMAIN = {
    "我要办理住房业务": "housing", "住房": "housing", "物业": "housing", "房子的问题": "housing",
    "税务": "tax", "我要交税": "tax", "交通": "traffic", "交通问题": "traffic",
    "企业服务": "enterprise", "企业": "enterprise", "人工服务": "human", "人工": "human",
    "我要投诉": "complaint", "咨询": "consult",
}  # fmt: skip
OUT_OF_DOMAIN = ["今天天气怎么样", "我想听一首歌", "你们几点下班", "帮我查一下快递", "喂喂你好", "我家楼下的路灯坏了"]
SPEEDS = (130, 160, 190)
