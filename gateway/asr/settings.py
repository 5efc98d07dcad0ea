"""ASR settings: one frozen model, built once in `main()` and passed down (also to pool workers).

It is a pydantic section like the ones in `gateway/config.py`, so it can be embedded there as
`asr: AsrSettings = AsrSettings()`. Model paths left unset come from the environment
(`POCKETSPHINX_MODEL_PATH`, `VOSK_MODEL_PATH`) and then from the team's shared folder beside the repo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_POCKETSPHINX = REPO_ROOT.parent / "shared" / "models" / "pocketsphinx-zh-tdt_sc_8k"

# Targets (queue names) and what callers say for them. Multi-character synonyms are split into the
# model's dictionary words when the grammar is built (企业服务 -> 企业 服务).
DEFAULT_TABLE: dict[str, list[str]] = {
    "housing": ["住房", "房子", "物业"],
    "tax": ["税务", "交税"],
    "traffic": ["交通"],
    "enterprise": ["企业服务", "企业"],
    "human": ["人工", "人工服务"],
    "complaint": ["投诉"],
    "consult": ["咨询"],
}
DEFAULT_LEAD_INS = ["我要", "我要办理", "我想", "我想办理", "我要找", "你好", "请转", "办理"]
DEFAULT_ENDINGS = ["业务", "服务", "问题", "方面", "谢谢"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GrammarSettings(_Section):
    table: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_TABLE))
    lead_ins: list[str] = Field(default_factory=lambda: list(DEFAULT_LEAD_INS))
    endings: list[str] = Field(default_factory=lambda: list(DEFAULT_ENDINGS))
    # The phone-loop path that absorbs out-of-grammar speech. Its entry weight is relative to the
    # keyword path (weight 1); see docs/asr.md for how it was tuned.
    filler: bool = True
    filler_weight: float = Field(default=1e-30, gt=0, le=1)


class ConfidenceSettings(_Section):
    """logistic((llr_per_frame - center) / scale): llr in the decoder's log units (base 1.0001 >> 10)."""

    center: float = -20.0
    scale: float = Field(default=5.0, gt=0)


class PoolSettings(_Section):
    workers: int = Field(default=2, ge=1, le=64)
    streams_per_worker: int = Field(default=4, ge=1, le=256)
    # Chunks a stream may have in flight to its worker before it is marked overflowed (~100 ms each).
    max_pending_chunks: int = Field(default=50, ge=1, le=10_000)
    start_timeout: float = Field(default=60.0, gt=0)


class AsrSettings(_Section):
    engine: Literal["pocketsphinx", "vosk"] = "pocketsphinx"
    pocketsphinx_model_path: str | None = None
    pocketsphinx_dict: str = "mandarin_notone.dic"
    vosk_model_path: str | None = None
    # Vosk phrase hints (runtime grammar); empty = open dictation. "[unk]" is added automatically.
    phrase_hints: list[str] = Field(default_factory=list)
    chunk_ms: int = Field(default=100, ge=10, le=1000)
    endpoint_window: float = Field(default=0.5, gt=0, le=5)
    endpoint_ratio: float = Field(default=0.9, gt=0, lt=1)
    grammar: GrammarSettings = GrammarSettings()
    confidence: ConfidenceSettings = ConfidenceSettings()
    pool: PoolSettings = PoolSettings()

    def pocketsphinx_dir(self) -> Path:
        value = self.pocketsphinx_model_path or os.environ.get("POCKETSPHINX_MODEL_PATH")
        return Path(value) if value else SHARED_POCKETSPHINX

    def vosk_dir(self) -> Path | None:
        value = self.vosk_model_path or os.environ.get("VOSK_MODEL_PATH")
        return Path(value) if value else None
