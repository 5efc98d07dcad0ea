"""The media worker's spool: a call's ticket kept on disk while the ticket store cannot take it.

When Redis is out of reach (or the queue a callback goes to is full), a call's settlement still
makes its ticket (metadata, recording paths, transcript, the recording waiting for transcription);
the worker writes it here, durably, before the call counts as settled, and files it once the store
takes it (`MediaWorker.file_spool`: at start, when Redis answers again, and at every heartbeat while
entries wait). Exactly once: the ticket's message id is the call's (`policy.callback_ticket`) and
intake is idempotent on it, so an entry filed twice (a worker that died between the store's answer
and the deletion, two workers on one directory) is one ticket; an entry is deleted only after the
store answered.

One file per ticket, `<ticket id>.json` (a ULID the gateway made: nothing from a caller names a
file), written atomically: a temporary file in the same directory, fsync, rename, fsync of the
directory. A worker files an entry only while it holds its `flock`, so workers sharing the directory
do not file the same entry at once. An entry that cannot be read is renamed `*.bad`, kept for a
person, and said in the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.ticket import Ticket, is_ticket_id

log = logging.getLogger("gateway.voice.spool")

VERSION = 1
MAX_ENTRIES = 10_000
"""Entries per spool directory: past it the worker takes no new call (503), so an outage that lasts
cannot fill the disk with calls nobody files."""


@dataclass(frozen=True, slots=True)
class PendingAsr:
    """A recording live recognition missed, to transcribe after the call (`hg:asr:pending`)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A call's ticket to file, and its recording to transcribe later, if any."""

    ticket: Ticket
    pending: PendingAsr | None = None

    def serialize(self) -> bytes:
        document: dict[str, Any] = {"version": VERSION, "ticket": self.ticket.model_dump(mode="json")}
        if self.pending is not None:
            document["pending"] = {"path": self.pending.path, "reason": self.pending.reason}
        return json.dumps(document, ensure_ascii=False).encode()

    @classmethod
    def parse(cls, data: bytes) -> SpoolEntry:
        """The entry, or ValueError saying why it is none."""
        try:
            document = json.loads(data)
            if not isinstance(document, dict) or document.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} spool entry")
            pending = document.get("pending")
            return cls(
                Ticket.model_validate(document["ticket"]),
                PendingAsr(str(pending["path"]), str(pending["reason"])) if pending else None,
            )
        except (ValidationError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a spool entry: {str(exc).splitlines()[0][:160]}") from None


class Spool:
    def __init__(self, directory: Path, max_entries: int = MAX_ENTRIES) -> None:
        self.directory = directory
        self.max_entries = max_entries

    def put(self, entry: SpoolEntry) -> Path:
        """Write `entry` durably (it survives the worker and a power cut once this returns)."""
        if not is_ticket_id(entry.ticket.id):
            raise ValueError("spool entries are named by ticket ids the gateway made")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{entry.ticket.id}.json"
        temporary = self.directory / f".{entry.ticket.id}.{os.getpid()}.tmp"
        with temporary.open("wb") as out:
            out.write(entry.serialize())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_directory(self.directory)
        return path

    def entries(self) -> list[Path]:
        """Waiting entries, oldest first (ticket ids sort by time)."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"))

    def full(self) -> bool:
        return len(self.entries()) >= self.max_entries

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[SpoolEntry | None]:
        """The entry at `path`, held against other workers until the block ends; None when another
        worker holds it, it is gone, or it cannot be read (then it is set aside as `*.bad`)."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            yield None
            return
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if not path.exists():  # filed and deleted by the worker that held it before us
                yield None
                return
            try:
                entry = SpoolEntry.parse(handle.read())
            except ValueError as exc:
                path.rename(path.with_suffix(".bad"))
                log.error("spool entry %s set aside as .bad: %s", path.name, exc)
                yield None
                return
            yield entry

    def remove(self, path: Path) -> None:
        """Delete a filed entry (call it while holding its claim)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _fsync_directory(self.directory)


def _fsync_directory(directory: Path) -> None:
    """A rename or deletion is durable only once the directory itself is synced."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
