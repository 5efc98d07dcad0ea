"""Navigation accuracy on speech synthesized at test time (espeak-ng cmn-latn-pinyin, 3 speeds).

The bounds are the figures measured when this was written (docs/asr.md, "Measured") minus a margin,
so a regression fails CI while the TTS's run-to-run sameness keeps the test stable.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.asr.navigation import Decision, Thresholds, decide
from gateway.asr.settings import DEFAULT_TABLE
from peers.speech import IN_DOMAIN, OUT_OF_DOMAIN, SPEEDS, read_pcm, sox_noise, synthesize

THRESHOLDS = Thresholds()


def navigate(recognizer: Any, path: Path) -> Decision:
    rate, pcm = read_pcm(path)
    stream = recognizer.open(rate)
    segments = []
    for at in range(0, len(pcm), 1600):
        segments += stream.feed(pcm[at : at + 1600])
    segments += stream.finish()
    return decide(segments, DEFAULT_TABLE, THRESHOLDS)


@pytest.fixture(scope="module")
def results(recognizer: Any, tts: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Counter[str]]:
    folder = tmp_path_factory.mktemp("nav")
    tally: dict[str, Counter[str]] = {"in": Counter(), "out": Counter(), "noise": Counter()}
    for i, (text, target) in enumerate([*IN_DOMAIN.items(), *((t, None) for t in OUT_OF_DOMAIN)]):
        for speed in SPEEDS:
            d = navigate(recognizer, synthesize(text, folder / f"{i}_{speed}.wav", speed=speed))
            if target is None:
                tally["out"][d.action] += 1
            elif d.action == "reject":
                tally["in"]["reject"] += 1
            else:
                tally["in"][f"{d.action}_{'right' if d.target == target else 'wrong'}"] += 1
    for kind in ("whitenoise", "pinknoise", "brownnoise"):
        tally["noise"][navigate(recognizer, sox_noise(folder / f"{kind}.wav", 3, kind)).action] += 1
    tally["noise"][navigate(recognizer, sox_noise(folder / "quiet.wav", 3, volume=0.001)).action] += 1
    print("\nnavigation tally:", {k: dict(v) for k, v in tally.items()})
    return tally


@pytest.mark.slow
def test_in_domain_accuracy(results: dict[str, Counter[str]]) -> None:
    n = sum(results["in"].values())
    assert n == len(IN_DOMAIN) * len(SPEEDS)
    accepted_right = results["in"]["accept_right"] / n
    routed_right = (results["in"]["accept_right"] + results["in"]["confirm_right"]) / n
    accepted_wrong = results["in"]["accept_wrong"] / n
    assert accepted_right >= 0.20
    assert routed_right >= 0.40
    assert accepted_wrong <= 0.12


@pytest.mark.slow
def test_out_of_domain_rejection(results: dict[str, Counter[str]]) -> None:
    n = sum(results["out"].values())
    assert results["out"]["accept"] == 0  # never route a caller on out-of-domain speech
    assert results["out"]["reject"] / n >= 0.8


@pytest.mark.slow
def test_noise_and_silence_are_rejected(results: dict[str, Counter[str]]) -> None:
    assert results["noise"] == Counter({"reject": 4})
