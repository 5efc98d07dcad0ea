"""The layout shows the architecture: the core process loads no telephony or speech library, and
docs/design.md names every module."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_the_core_process_loads_no_pjsua2_or_speech_engine() -> None:
    code = (
        "import sys, gateway.shell.app, gateway.cli, gateway.voice.link; "
        "print(sorted(m for m in ('pjsua2', 'pocketsphinx', 'vosk') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def listed_modules(text: str) -> set[str]:
    """Module paths named in the Modules table: `gateway/x/y.py`, and `a.py`, `b.py` after it in one cell."""
    found: set[str] = set()
    for line in text.split("## Modules", 1)[1].split("\n## ", 1)[0].splitlines():
        cells = line.split("|")
        if len(cells) < 3:
            continue
        names = re.findall(r"`([\w/]+(?:\.py|\.c)|gateway/[\w/]+/)`", cells[1])
        folder = ""
        for name in names:
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
                found.add(name)
            elif folder:
                found.add(f"{folder}/{name}")
    return found


def test_every_module_under_gateway_is_in_the_design_documents_modules_table() -> None:
    listed = listed_modules(DESIGN.read_text(encoding="utf-8"))
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "gateway").rglob("*")
        if path.suffix in (".py", ".c") and path.name != "__init__.py"
    }
    packages_listed = {name for name in listed if name.endswith("/")}
    missing = {m for m in modules - listed if not any(m.startswith(p) for p in packages_listed)}
    assert not missing, f"docs/design.md's Modules table does not name: {sorted(missing)}"
    gone = {name for name in listed - packages_listed if not (ROOT / name).exists()}
    assert not gone, f"docs/design.md names modules that do not exist: {sorted(gone)}"
