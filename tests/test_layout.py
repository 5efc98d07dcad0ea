"""Processes have clear jobs: the core does not load telephony or speech libraries."""

from __future__ import annotations

import subprocess
import sys


def test_the_core_process_loads_no_pjsua2_or_speech_engine() -> None:
    code = (
        "import sys, gateway.app, gateway.cli, gateway.voice_link; "
        "print(sorted(m for m in ('pjsua2', 'pocketsphinx', 'vosk') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
