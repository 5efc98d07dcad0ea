"""Every log line of the suite is scanned for secrets and personal data (a pytest plugin).

Logs must carry masked phone numbers and no secrets (docs/design.md, Security). This plugin puts a
handler on the root logger for the whole session, at INFO (what operators run), and checks every
record, its traceback included, for: the suite's API keys, seat tokens and SIP passwords; full
mobile numbers (with or without +86); mainland ID-card numbers; bearer tokens. A test during which
a leaking line is logged fails at teardown, naming the logger and the kind of leak (never the
secret itself). Output of processes a test starts (`hotline-gateway run`, media workers) is checked
with `assert_no_leaks` by the tests that read it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest

# Digits runs must stand alone: stream ids, timestamps and ULIDs hold long digit runs of other lengths.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "a mobile number": re.compile(r"(?<![0-9A-Za-z])(?:\+?86[- ]?)?1[3-9][0-9]{9}(?![0-9])"),
    "an ID-card number": re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])"),
    "a bearer token": re.compile(r"(?i)\bbearer\s+(?!realm=)[A-Za-z0-9._~+/=-]{16,}"),
}

_secrets: list[str] = []


def register_secrets(values: Iterable[str]) -> None:
    """Secrets the suite uses (keys, tokens, passwords): any log line containing one is a leak."""
    _secrets.extend(value for value in values if len(value) >= 16 and value not in _secrets)


def leaks_in(text: str) -> list[str]:
    """The kinds of leak found in `text` (empty when it is clean)."""
    found = [kind for kind, pattern in _PATTERNS.items() if pattern.search(text)]
    # A log may cut a secret short at either end: 16 of its characters are as telling.
    if any(secret[:16] in text or secret[-16:] in text for secret in _secrets):
        found.append("a secret of the suite")
    return found


def assert_no_leaks(text: str, where: str) -> None:
    """For the output of a process a test ran: fail naming the kinds of leak, with masked lines."""
    lines = [line for line in text.splitlines() if leaks_in(line)]
    if lines:  # not a bare assert: pytest's introspection would print the leaking lines unmasked
        kinds = sorted({kind for line in lines for kind in leaks_in(line)})
        masked = "\n".join(_masked(line) for line in lines[:5])
        raise AssertionError(f"{where} logged {', '.join(kinds)}:\n{masked}")


def _masked(line: str) -> str:
    for pattern in _PATTERNS.values():
        line = pattern.sub("<masked>", line)
    for secret in _secrets:
        line = line.replace(secret, "<secret>").replace(secret[:16], "<secret>").replace(secret[-16:], "<secret>")
    return line[:300]


@dataclass(frozen=True, slots=True)
class Leak:
    logger: str
    kinds: tuple[str, ...]
    line: str


class LeakScanner(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.leaks: list[Leak] = []
        self._formatter = logging.Formatter("%(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._formatter.format(record)
        except Exception:  # a record that cannot be formatted is the logging module's report to make
            return
        kinds = leaks_in(text)
        if kinds:
            self.leaks.append(Leak(record.name, tuple(kinds), _masked(text.splitlines()[0] if text else "")))


_scanner = LeakScanner()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_scanner)
    # Production logs at INFO: scan what operators would see, whatever the suite's own level.
    for name in ("gateway", "aiohttp", "websockets"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_scanner)


@pytest.fixture(autouse=True)
def _no_leaks_in_logs() -> Iterator[None]:
    start = len(_scanner.leaks)
    yield
    found = _scanner.leaks[start:]
    if found:
        report = "\n".join(f"  {leak.logger}: {', '.join(leak.kinds)}: {leak.line}" for leak in found[:10])
        pytest.fail(f"{len(found)} log line(s) leaked secrets or personal data:\n{report}", pytrace=False)
