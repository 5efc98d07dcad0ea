"""The lock file: every install takes exactly the versions chosen, and they satisfy pyproject's ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+) \\$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, Version]:
    found = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonical(match["name"])] = Version(match["version"])
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in declared():
        name = canonical(requirement.name)
        assert name in pinned, f"{requirement.name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {name}=={pinned[name]}, outside pyproject's {requirement.specifier}: "
            "run `make lock`"
        )


def test_every_pin_carries_a_hash() -> None:
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    pinned = [block for block in blocks if "==" in block.split("\n", 1)[0]]
    assert len(pinned) == len(pins())
    for block in pinned:
        assert "--hash=sha256:" in block, block.split("\n", 1)[0]


def test_the_lock_installs_nothing_from_machine_local_indexes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    assert "--extra-index-url" not in text and "--find-links" not in text and "file://" not in text


def test_aiohttp_releases_with_published_advisories_are_excluded() -> None:
    # 3.14.1 fixed CVE-2026-54278 (a compressed body decompressed in one chunk at cleanup), after
    # 3.13.3 (CVE-2025-69223, zip bomb) and 3.12.14 (CVE-2025-53643, request smuggling).
    aiohttp = next(r for r in declared() if canonical(r.name) == "aiohttp")
    for vulnerable in ("3.9.5", "3.12.13", "3.13.2", "3.14.0"):
        assert not aiohttp.specifier.contains(vulnerable)
