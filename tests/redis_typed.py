"""Typed views of redis-py replies, for tests.

redis-py types a reply as the union of what any client could return (`bytes | str | None`,
`list[...] | None`, RESP2 lists or RESP3 dicts) because it cannot know whether a client decodes
responses. The suite's clients never do, and a missing value is the test's failure. Each helper here
narrows one kind of reply once, and fails the test with the reply in the message when it has
another shape, so tests read plain `str` (or, where a receiver's view matters, the raw bytes).
"""

from __future__ import annotations

from collections.abc import Iterable

# A stream entry as a receiver gets it from the suite's clients: its id and its fields, as bytes.
RawEntry = tuple[bytes, dict[bytes, bytes]]
Entry = tuple[str, dict[str, str]]


def _unexpected(what: str, reply: object) -> AssertionError:
    return AssertionError(f"expected {what} from Redis, got {reply!r}")


def raw(value: object) -> bytes:
    """A string reply as the client returned it; a missing one (None) fails the test."""
    if not isinstance(value, bytes):
        raise _unexpected("a bytes string", value)
    return value


def text(value: object) -> str:
    """A string reply (a key, a field, a stream id) decoded; a missing one (None) fails the test."""
    return raw(value).decode()


def texts(reply: Iterable[object]) -> list[str]:
    """A list reply of strings (KEYS, LRANGE, SMEMBERS...) decoded, in the reply's order."""
    return [text(value) for value in reply]


def raw_fields(reply: object) -> dict[bytes, bytes]:
    """A hash or a stream entry's fields as the client returned them."""
    if not isinstance(reply, dict):
        raise _unexpected("a field map", reply)
    return {raw(name): raw(value) for name, value in reply.items()}


def fields(reply: object) -> dict[str, str]:
    """A hash (HGETALL) or a stream entry's fields, decoded."""
    return {name.decode(): value.decode() for name, value in raw_fields(reply).items()}


def raw_entries(reply: object) -> list[RawEntry]:
    """An XRANGE/XREVRANGE reply (or one stream's part of an XREAD reply) as the client returned
    it: what a receiver of the stream parses."""
    if not isinstance(reply, list):
        raise _unexpected("a list of stream entries", reply)
    entries = []
    for entry in reply:
        if not (isinstance(entry, tuple | list) and len(entry) == 2):
            raise _unexpected("a stream entry (id, fields)", entry)
        entries.append((raw(entry[0]), raw_fields(entry[1])))
    return entries


def stream_entries(reply: object) -> list[Entry]:
    """An XRANGE/XREVRANGE reply decoded: (entry id, fields) in the stream's order."""
    return [(entry_id.decode(), fields(values)) for entry_id, values in raw_entries(reply)]


def read_entries(reply: object, stream: str) -> list[Entry]:
    """The entries of `stream` in an XREAD/XREADGROUP reply (a RESP2 list of [stream, entries]);
    a reply without that stream fails the test."""
    if not isinstance(reply, list):
        raise _unexpected(f"an XREAD reply naming {stream}", reply)
    for part in reply:
        if isinstance(part, list | tuple) and len(part) == 2 and text(part[0]) == stream:
            return stream_entries(part[1])
    raise _unexpected(f"an XREAD reply naming {stream}", reply)
