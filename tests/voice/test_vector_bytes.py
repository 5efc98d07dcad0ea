"""Live audio frames leave PJSIP through `vector_bytes`, which reads pj.ByteVector's memory directly."""

from __future__ import annotations

import pjsua2 as pj
from hypothesis import given
from hypothesis import strategies as st

from gateway.voice.engine import _vector_bytes_fast, _vector_bytes_slow, vector_bytes


def _vector(data: bytes) -> pj.ByteVector:
    vector = pj.ByteVector()
    for value in data:
        vector.push_back(value)
    return vector


def test_the_fast_reader_is_the_one_in_use_here() -> None:
    # On this platform (CPython, libstdc++) the layout check passes; elsewhere the slow path is used.
    assert vector_bytes is _vector_bytes_fast


@given(st.binary(max_size=640))
def test_the_fast_reader_gives_exactly_the_vector_bytes(data: bytes) -> None:
    vector = _vector(data)
    assert vector_bytes(vector) == _vector_bytes_slow(vector) == data


def test_a_frame_buffer_copied_out_of_a_media_frame_reads_the_same() -> None:
    frame = pj.MediaFrame()
    frame.buf = _vector(bytes(range(256)) + bytes(64))
    assert vector_bytes(frame.buf) == bytes(range(256)) + bytes(64)
