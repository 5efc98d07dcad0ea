"""One module of Redis keys: docs/redis-keys.md lists exactly what `Keys` builds, and the Lua
scripts' own key shapes agree with it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from gateway.keys import Keys
from gateway.queue import scripts

DOC = Path(__file__).resolve().parents[1] / "docs" / "redis-keys.md"
PREFIX = "hg"


def documented_keys(text: str) -> set[str]:
    """The first cell of every table row that names a key: `hg:…`."""
    return set(re.findall(r"^\| `(hg:[^`]*)` \|", text, flags=re.MULTILINE))


def built_keys(keys: Keys) -> set[str]:
    """Every key `Keys` builds, its arguments shown as `{name}`; a method with optional arguments
    is shown without them and with them (two shapes)."""
    found = set()
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name == "prefix":
            continue
        if isinstance(member, property):
            found.add(getattr(keys, name))
            continue
        parameters = list(inspect.signature(member).parameters.values())[1:]
        required = {p.name: f"{{{p.name}}}" for p in parameters if p.default is inspect.Parameter.empty}
        found.add(getattr(keys, name)(**required))
        if len(required) < len(parameters):
            found.add(getattr(keys, name)(**{p.name: f"{{{p.name}}}" for p in parameters}))
    return found


def test_the_document_lists_exactly_the_keys_that_keys_builds() -> None:
    documented = documented_keys(DOC.read_text(encoding="utf-8"))
    built = built_keys(Keys(PREFIX))
    assert not built - documented, f"docs/redis-keys.md does not list: {sorted(built - documented)}"
    assert not documented - built, f"docs/redis-keys.md lists keys Keys does not build: {sorted(documented - built)}"


def test_every_key_of_the_gateway_and_its_workers_is_there() -> None:
    built = built_keys(Keys(PREFIX))
    # A sample across the store, the voice link, the SIP front and `run`, so an empty list fails.
    assert {"hg:t:{ticket_id}", "hg:worker:{worker_id}:inbox", "hg:pool", "hg:run:{host}", "hg:control"} <= built
    assert {"hg:idem:{channel}:{message_id}", "hg:idem:c:{client}:{channel}:{message_id}"} <= built


def _lua_concat(expression: str, values: dict[str, str]) -> str:
    """A Lua string concatenation (`a .. ':q:' .. b`) evaluated with `values` for its names."""
    parts = [part.strip() for part in expression.split("..")]
    return "".join(part[1:-1] if part.startswith("'") else values[part] for part in parts)


def test_the_lua_scripts_build_queue_streams_and_ticket_keys_as_keys_does() -> None:
    keys = Keys(PREFIX)
    (stream,) = re.findall(r"local stream = (prefix \.\. ':q:'[^\n]*)", scripts.OFFER)
    assert _lua_concat(stream, {"prefix": PREFIX, "ARGV[i]": "general", "prio": "7"}) == keys.stream("general", 7)
    (ticket,) = re.findall(r"local tkey = (prefix \.\. ':t:'[^\n]*)", scripts.OFFER)
    assert _lua_concat(ticket, {"prefix": PREFIX, "tid": "01T"}) == keys.ticket("01T")
    assert "tkey .. ':h'" in scripts.OFFER and keys.history("01T") == keys.ticket("01T") + ":h"


def test_the_lua_scripts_read_the_ticket_id_back_out_of_a_ticket_key() -> None:
    every_script = "".join(value for name, value in vars(scripts).items() if name.isupper() and isinstance(value, str))
    patterns = set(re.findall(r"string\.match\(KEYS\[1\], '([^']*)'\)", every_script))
    # The same in Lua and in Python's re: ':t:', then the rest of the key.
    assert patterns == {":t:(.+)$"}
    for prefix in ("hg", "a-b_c", "t"):  # prefixes are config names: no ':' in them
        match = re.search(":t:(.+)$", Keys(prefix).ticket("01KABC"))
        assert match is not None and match.group(1) == "01KABC"
