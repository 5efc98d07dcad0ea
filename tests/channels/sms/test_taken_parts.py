"""The pure pieces that keep the rest of a long SMS already taken from being taken again: what a part
held (`part_digest`), the session's bounded memory of messages it handed over (`HandedOver`), a
message's concatenation (`concatenation_of`) and the adapter's decision (`taken_before`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.channels.sms.link import Concatenation
from gateway.channels.sms.session import Answer, concatenation_of
from gateway.channels.sms.text import UCS2, Complete, HandedOver, Incomplete, PartKey, part_digest
from gateway.channels.sms_channel import taken_before

KEY = PartKey("13800138000", "12345", 0x12, 3)


@dataclass(frozen=True)
class Part:
    digest: str
    answers: tuple[Answer, ...] = ()


def test_a_part_digest_depends_on_the_coding_and_the_bytes() -> None:
    body = "路灯坏了".encode("utf-16-be")
    assert part_digest(UCS2, body) == part_digest(UCS2, bytes(body))
    assert part_digest(UCS2, body) != part_digest(UCS2, body + b"\x00\x21")
    assert part_digest(UCS2, body) != part_digest(0, body)


def test_handed_over_knows_a_part_as_it_was_and_nothing_else() -> None:
    handed = HandedOver(limit=2)
    handed.add(KEY, [(1, "a"), (2, "b"), (3, "c")])
    assert handed.holds(KEY, 2, "b")
    assert not handed.holds(KEY, 2, "x")  # another text under the same reference
    assert not handed.holds(PartKey(KEY.source, KEY.dest, KEY.ref, 4), 2, "b")


def test_handed_over_forgets_the_oldest_message_beyond_its_limit() -> None:
    handed = HandedOver(limit=2)
    keys = [PartKey(KEY.source, KEY.dest, ref, 2) for ref in (1, 2, 3)]
    for key in keys:
        handed.add(key, [(1, "a")])
    assert len(handed) == 2
    assert not handed.holds(keys[0], 1, "a") and handed.holds(keys[2], 1, "a")
    with pytest.raises(ValueError):
        HandedOver(limit=0)


def test_a_concatenation_names_the_parts_present_with_their_digests() -> None:
    whole = Complete(KEY, (Part("a"), Part("b"), Part("c")))
    assert concatenation_of(whole) == Concatenation(KEY, ((1, "a"), (2, "b"), (3, "c")))
    rest = Incomplete(KEY, (Part("b"), Part("c")), present=(2, 3), missing=(1,))
    assert concatenation_of(rest) == Concatenation(KEY, ((2, "b"), (3, "c")))
    single = PartKey(KEY.source, KEY.dest, 0, 1)
    assert concatenation_of(Complete(single, (Part("a"),))) is None


def test_the_rest_of_a_message_is_taken_before_only_when_every_part_was_as_it_is() -> None:
    rest = Concatenation(KEY, ((2, "b"), (3, "c")))
    assert taken_before([b"b", b"c"], rest)
    assert taken_before(["b", "c"], rest)
    assert not taken_before([b"b", None], rest)  # part 3 never taken: a message of its own
    assert not taken_before([b"b", b"x"], rest)  # another text under the same reference
    assert not taken_before([], Concatenation(KEY, ()))
