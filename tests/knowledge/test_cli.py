"""`python -m gateway.knowledge`: import, versions, use, search on the base a config names."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from gateway.knowledge.__main__ import main
from peers.gateway_config import make_raw_config


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    raw = make_raw_config("tcli", "redis://127.0.0.1:1/0", knowledge={"database": "kb/knowledge.sqlite3"})
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def test_import_versions_use_and_search(
    config_file: Path, knowledge_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(config_file)]
    assert main([*config, "import", str(knowledge_path)]) == 0
    assert "version 1: 300 entries (300 added" in capsys.readouterr().out
    changed = tmp_path / "changed.csv"
    changed.write_text("id,question,answer,category,valid_from\nkb-0105,暖气片不热？,找供热单位。,heating,2024-10-01\n")
    assert main([*config, "import", str(changed)]) == 0
    assert "version 2: 300 entries (0 added, 1 changed, 0 unchanged)" in capsys.readouterr().out
    assert main([*config, "versions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("     1") and lines[1].startswith("*    2") and "changed.csv" in lines[1]
    assert main([*config, "search", "暖气片不热"]) == 0
    assert "kb-0105  暖气片不热？" in capsys.readouterr().out
    assert main([*config, "use", "1"]) == 0 and main([*config, "use", "5"]) == 1
    assert (tmp_path / "kb" / "knowledge.sqlite3").exists()


def test_a_bad_file_is_refused_with_its_lines(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n')
    assert main(["--config", str(config_file), "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "nothing imported" in err and "line 1: question: required" in err
    assert main(["--config", str(config_file), "import", str(tmp_path / "none.jsonl")]) == 1
