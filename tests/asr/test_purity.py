"""text.py and navigation.py are pure: no I/O, clock, process or engine imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway.asr

ASR_DIR = Path(gateway.asr.__file__).parent
FORBIDDEN = {"os", "io", "pathlib", "subprocess", "socket", "asyncio", "threading", "multiprocessing", "time",
             "wave", "logging", "pocketsphinx", "vosk", "numpy", "shutil", "tempfile", "random"}  # fmt: skip


@pytest.mark.parametrize("module", ["text", "navigation", "grammar"])
def test_pure_modules_import_nothing_impure(module: str) -> None:
    tree = ast.parse((ASR_DIR / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & FORBIDDEN
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "open" not in calls and "print" not in calls
