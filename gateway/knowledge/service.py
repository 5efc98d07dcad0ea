"""Opening the knowledge base a config describes (`[knowledge]`), and the import command:
`python -m gateway.knowledge import FILE --config CONFIG` (also `versions`, `use N`)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import GatewayConfig
from gateway.knowledge.base import BUILTIN_SYNONYMS, ImportResult, KnowledgeBase
from gateway.knowledge.text import build_synonyms, parse_synonyms


def open_knowledge(config: GatewayConfig) -> tuple[KnowledgeBase, ImportResult | None]:
    """The base at `database` (its directory made if missing), with the built-in synonyms and those
    of `synonyms`; `entries` imported when the database has no version yet (then the result)."""
    settings = config.knowledge
    database = config.resolve(settings.database)
    database.parent.mkdir(parents=True, exist_ok=True)
    groups = list(BUILTIN_SYNONYMS)
    if settings.synonyms:
        groups += parse_synonyms(config.resolve(settings.synonyms).read_text(encoding="utf-8"))
    base = KnowledgeBase(database, build_synonyms(groups))
    imported = None
    if settings.entries and base.current() is None:
        try:
            imported = base.import_file(config.resolve(settings.entries))
        except BaseException:
            base.close()
            raise
    return base, imported


def describe(result: ImportResult) -> str:
    version = result.version
    return (
        f"version {version.number}: {version.entries} entries ({result.added} added, {result.changed} changed,"
        f" {result.unchanged} unchanged) from {version.source}"
    )


def resolve_file(path: str) -> Path:
    return Path(path).expanduser().resolve()
