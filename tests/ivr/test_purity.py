"""The call core does no I/O: it must not import telephony, async, network, thread or clock modules.

"Core" is the pure IVR state machine and its data (``gateway/ivr``: events, actions, flow, machine,
calendar) and the media worker's pure decisions (``gateway/voice``: the SIP request check, the
lifeline). The rest of ``gateway/voice`` is adapters (pjsua2, prompt rendering, recording files), which
may do I/O, so the core must not import them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gateway

CORE_MODULES = (
    "gateway.ivr.events",
    "gateway.ivr.actions",
    "gateway.ivr.flow",
    "gateway.ivr.machine",
    "gateway.ivr.calendar",
    "gateway.voice.sip_guard",
    "gateway.voice.lifeline",
)
FORBIDDEN = frozenset({"pjsua2", "asyncio", "redis", "socket", "threading", "time"})
# Not in the brief's list, but just as impure: processes, files, network clients, randomness.
ALSO_FORBIDDEN = frozenset(
    {"subprocess", "os", "pathlib", "shutil", "tempfile", "wave", "multiprocessing", "concurrent", "select",
     "selectors", "signal", "urllib", "http", "aiohttp", "websockets", "random", "uuid", "logging"}
)  # fmt: skip
CLOCK_READS = frozenset({"now", "utcnow", "today", "monotonic", "perf_counter"})
ROOT = Path(gateway.__file__).parent.parent


def source_of(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def tree_of(module: str) -> ast.Module:
    return ast.parse(source_of(module).read_text(encoding="utf-8"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Full names of every module imported (``import a.b``, ``from a.b import c``), at any depth."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def roots(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_nothing_that_does_io(module: str) -> None:
    assert not roots(imported_modules(tree_of(module))) & (FORBIDDEN | ALSO_FORBIDDEN)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_only_core_modules_of_the_package(module: str) -> None:
    ours = {name for name in imported_modules(tree_of(module)) if name.startswith("gateway.")}
    assert ours <= set(CORE_MODULES)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_reads_no_clock(module: str) -> None:
    calls = [
        node.func.attr
        for node in ast.walk(tree_of(module))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert not set(calls) & CLOCK_READS


def test_the_core_modules_exist() -> None:
    assert all(source_of(module).is_file() for module in CORE_MODULES)


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import asyncio.events",
        "from socket import socket",
        "from redis.asyncio import Redis",
        "import os, threading",
        "def f():\n    import pjsua2\n",
    ],
)
def test_the_check_catches_forbidden_imports(source: str) -> None:
    assert roots(imported_modules(ast.parse(source))) & (FORBIDDEN | ALSO_FORBIDDEN)


def test_the_check_ignores_lookalikes() -> None:
    source = "import datetime\nfrom datetime import time\nfrom gateway.ivr import events\nimport timeit"
    assert not roots(imported_modules(ast.parse(source))) & FORBIDDEN
