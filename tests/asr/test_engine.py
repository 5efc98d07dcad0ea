from __future__ import annotations

import dataclasses

import pytest

from gateway.asr.engine import AsrUnavailable, AudioFormatError, PcmFramer, Segment, check_rate, load_recognizer
from gateway.asr.settings import AsrSettings
from gateway.errors import GatewayError


def test_segment_is_frozen_and_compares_without_detail() -> None:
    a = Segment("住房", "住房", 0.0, 1.0, 0.9, True, {"llr": -3})
    b = Segment("住房", "住房", 0.0, 1.0, 0.9, True, {"llr": -4})
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.text = "x"  # type: ignore[misc]


def test_framer_cuts_any_chunking_into_whole_frames() -> None:
    framer = PcmFramer(4)
    assert framer.push(b"\x01") == []
    assert framer.push(b"\x02\x03\x04\x05") == [b"\x01\x02\x03\x04"]
    assert framer.push(b"\x06\x07") == []
    assert framer.rest() == b"\x05\x06"  # the odd byte (half a sample) is dropped


def test_framer_needs_whole_samples() -> None:
    with pytest.raises(ValueError):
        PcmFramer(3)


@pytest.mark.parametrize("rate", [7999, 48001, 0])
def test_unsupported_rates_are_clear_errors(rate: int) -> None:
    with pytest.raises(AudioFormatError, match="not supported"):
        check_rate(rate)


def test_errors_belong_to_the_gateway_tree() -> None:
    assert issubclass(AsrUnavailable, GatewayError)
    # A recognizer that cannot run never refuses a call: it is answered and recorded.
    assert AsrUnavailable.sip_status is None and AsrUnavailable.http_status == 503


def test_vosk_without_model_is_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOSK_MODEL_PATH", raising=False)
    with pytest.raises(AsrUnavailable, match="live dictation is off"):
        load_recognizer(AsrSettings(engine="vosk"))
