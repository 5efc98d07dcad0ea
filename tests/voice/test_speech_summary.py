"""The media worker says once, at start, which recognizers run, for what, and what is missing."""

from __future__ import annotations

from gateway.asr.settings import AsrSettings
from gateway.voice.speech import LiveSpeech, speech_summary


def _off(reason: str) -> LiveSpeech:
    speech = LiveSpeech(AsrSettings(engine="vosk"), lambda event: None)
    speech.unavailable = reason
    return speech


def test_dictation_missing_and_navigation_switched_off_are_said_in_one_line() -> None:
    line = speech_summary(True, _off("Vosk model unavailable (VOSK_MODEL_PATH is not set)"), None, flows_navigate=True)
    assert line == (
        "speech: callers' words into tickets off: Vosk model unavailable (VOSK_MODEL_PATH is not set) "
        "(calls are recorded; `hotline-gateway transcribe --pending` transcribes them once the engine can run); "
        "speech navigation off ([asr] navigation_enabled = false): speech_route menus take their default"
    )


def test_disabled_speech_says_so() -> None:
    assert speech_summary(False, None, None, flows_navigate=True).startswith("speech recognition disabled")


def test_a_recognizer_that_failed_says_why() -> None:
    line = speech_summary(True, None, _off("model not found"), flows_navigate=True)
    assert line == "speech: speech navigation (speech_route menus) off: model not found"
