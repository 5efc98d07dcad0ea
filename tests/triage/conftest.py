"""The triage tests read the example catalogue from ../shared/triage beside the project (or
TRIAGE_DATA): it is never copied into the repo."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from gateway.triage.catalogue import Category, load_catalogue
from tests.conftest import missing

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "gateway.toml"
# The example config's `[sensitive]` words, raw (a config factory's `sensitive=`).
SHIPPED_SENSITIVE = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["sensitive"]

SHARED_TRIAGE = Path(os.environ.get("TRIAGE_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "triage"))


def shared_file(name: str, what: str) -> Path:
    """A file of the example data in ../shared/triage (or $TRIAGE_DATA); its absence fails the test."""
    path = SHARED_TRIAGE / name
    if not path.exists():
        missing(f"{what} is not at {path}")
    return path


@pytest.fixture(scope="session")
def catalogue_path() -> Path:
    return shared_file("catalogue.toml", "the example dispatch catalogue")


@pytest.fixture(scope="session")
def catalogue(catalogue_path: Path) -> tuple[Category, ...]:
    return load_catalogue(catalogue_path)
