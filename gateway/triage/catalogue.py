"""The dispatch catalogue (分派目录) and the labelled contacts the suggestion learns from.

Both are read once at start and kept as frozen data: `load_catalogue` (TOML, `[[category]]`) and
`load_examples` (TSV: id, category, style, text). A problem names the file and the line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError

Style = Literal["sms", "wechat", "agent", "asr"]
STYLES: frozenset[str] = frozenset({"sms", "wechat", "agent", "asr"})
# The labelled contacts shipped with the gateway (written for it: docs/triage.md).
LABELLED = Path(__file__).parent / "data" / "labelled.tsv"
HELD_OUT_EVERY = 5  # of each category's examples, in file order, every 5th is held out


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: str
    department: str
    description: str
    keywords: tuple[str, ...]
    deadline: str
    enterprise: bool


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled contact: what a citizen wrote or said, and the category it belongs to."""

    id: str
    category: str
    style: Style
    text: str


def load_catalogue(path: Path) -> tuple[Category, ...]:
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"triage catalogue {path}: {exc}") from exc
    categories = tuple(_category(path, index, item) for index, item in enumerate(raw.get("category", [])))
    if not categories:
        raise ConfigError(f"triage catalogue {path}: no [[category]]")
    ids = [category.id for category in categories]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"triage catalogue {path}: duplicate category ids")
    return categories


def _category(path: Path, index: int, item: dict[str, Any]) -> Category:
    try:
        return Category(
            id=str(item["id"]),
            name=str(item["name"]),
            department=str(item["department"]),
            description=str(item.get("description", "")),
            keywords=tuple(str(word) for word in item.get("keywords", [])),
            deadline=str(item.get("deadline", "")),
            enterprise=bool(item.get("enterprise", False)),
        )
    except KeyError as exc:
        raise ConfigError(f"triage catalogue {path}: category[{index}] has no {exc.args[0]}") from exc


def load_examples(path: Path, categories: tuple[Category, ...]) -> tuple[Example, ...]:
    known = {category.id for category in categories}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"triage examples {path}: {exc}") from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        examples.append(_example(f"{path}:{number}", line, known))
    return tuple(examples)


def _example(where: str, line: str, known: set[str]) -> Example:
    fields = line.split("\t")
    if len(fields) != 4:
        raise ConfigError(f"{where}: expected 4 tab-separated fields (id, category, style, text)")
    example_id, category, style, text = (field.strip() for field in fields)
    if category not in known:
        raise ConfigError(f"{where}: no category {category!r} in the catalogue")
    if style not in STYLES:
        raise ConfigError(f"{where}: style must be one of {', '.join(sorted(STYLES))}")
    if not text:
        raise ConfigError(f"{where}: no text")
    return Example(example_id, category, style, text)  # type: ignore[arg-type]  # style checked above


def split(examples: tuple[Example, ...]) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train, held out): per category, in file order, every HELD_OUT_EVERY-th example is held out,
    so the split is deterministic and every category is in both halves."""
    seen: dict[str, int] = {}
    train: list[Example] = []
    held: list[Example] = []
    for example in examples:
        seen[example.category] = seen.get(example.category, 0) + 1
        (held if seen[example.category] % HELD_OUT_EVERY == 0 else train).append(example)
    return tuple(train), tuple(held)
