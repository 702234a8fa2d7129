"""The evaluation journal: one JSON line per finished example, for crash-safe resume.

Each line records ``index`` (position in the devset), ``hash`` (sha256 of the
example's canonical JSON, so a changed devset is detected), ``score``, the
``prediction``'s fields and ``error`` (a repr, or null). Lines are written
by the evaluation's consumer thread only. Every line is handed to the OS at
once (a ``kill -9`` or Ctrl-C loses nothing written) and fsync'd in small
batches (so a power cut loses at most the last fraction of a second).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dspex.errors import UsageError

__all__ = ["Journal", "JournalEntry", "example_hash"]

logger = logging.getLogger("dspex.programs")

_SYNC_EVERY_LINES: Final = 64
_SYNC_EVERY_SECONDS: Final = 0.5


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One finished example as read back from a journal."""

    index: int
    hash: str
    score: Any
    prediction: dict[str, Any] | None
    error: str | None


def example_hash(example: Any) -> str:
    """sha256 of the example's fields and input keys as canonical JSON (hex).

    The input keys are part of it: the same record with other inputs runs the
    program differently. Values JSON cannot hold are hashed by ``str()``.
    """
    to_dict = getattr(example, "toDict", None)
    fields = to_dict() if callable(to_dict) else dict(example)
    keys = getattr(example, "_input_keys", None)
    canonical = json.dumps(
        {"fields": fields, "inputs": sorted(keys) if keys is not None else None},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prediction_fields(prediction: Any) -> dict[str, Any] | None:
    """A prediction as a plain dict for the journal (None when there is none)."""
    if prediction is None:
        return None
    to_dict = getattr(prediction, "toDict", None)
    if callable(to_dict):
        return to_dict()  # type: ignore[no-any-return]
    if isinstance(prediction, Mapping):
        return dict(prediction)
    return {"value": prediction}


def journal_score(score: Any) -> Any:
    """The score as JSON holds it: bools and numbers as they are, others as float."""
    if score is None or type(score) in (bool, int, float):
        return score
    try:
        return float(score)
    except (TypeError, ValueError):
        return None


class Journal:
    """An append-only JSONL file of finished examples, bound to one devset.

    :meth:`open` reads what an earlier run finished (tolerating a last line
    cut short by a crash), checks it against the devset and keeps the file
    open for :meth:`append`. Only the thread consuming evaluation results
    uses it. Another process holding the same journal open is refused.
    """

    def __init__(self, path: Path, hashes: Sequence[str], fd: int) -> None:
        self.path = path
        self._hashes = hashes
        self._fd = fd
        self._unsynced = 0
        self._last_sync = time.monotonic()

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], devset: Sequence[Any]
    ) -> tuple[Journal, dict[int, JournalEntry]]:
        """Open (or create) the journal at ``path`` for ``devset``.

        Returns the journal and the entries already recorded, by devset index
        (for an index recorded twice, the later line wins). Raises
        :class:`UsageError` if the file was written for a different devset or
        is corrupt before its last line.
        """
        where = Path(path)
        if where.is_dir():
            raise UsageError(
                f"journal={str(path)!r} is a directory; pass a file path such as "
                f"{str(where / 'eval.jsonl')!r}"
            )
        hashes = [example_hash(example) for example in devset]
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UsageError(
                f"journal={str(path)!r} cannot be opened ({exc.strerror}); pass a writable "
                "file path"
            ) from exc
        try:
            _lock(fd, where)
            entries = _read(fd, where, hashes)
        except BaseException:
            os.close(fd)
            raise
        return cls(where, hashes, fd), entries

    def append(self, index: int, score: Any, prediction: Any, error: BaseException | None) -> None:
        """Record one finished example; the line reaches the OS before this returns."""
        record = {
            "index": index,
            "hash": self._hashes[index],
            "score": journal_score(score),
            "prediction": prediction_fields(prediction),
            "error": None if error is None else repr(error),
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        data = line.encode("utf-8")
        while data:  # one write per line unless the OS takes it in parts
            written = os.write(self._fd, data)
            data = data[written:]
        self._unsynced += 1
        now = time.monotonic()
        if self._unsynced >= _SYNC_EVERY_LINES or now - self._last_sync >= _SYNC_EVERY_SECONDS:
            self._sync(now)

    def _sync(self, now: float) -> None:
        os.fsync(self._fd)
        self._unsynced = 0
        self._last_sync = now

    def close(self) -> None:
        """fsync what is pending and close the file (idempotent)."""
        if self._fd < 0:
            return
        try:
            if self._unsynced:
                self._sync(time.monotonic())
        finally:
            os.close(self._fd)  # closing also drops the lock
            self._fd = -1


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(
            f"journal {str(path)!r} is in use by another running evaluation; wait for it "
            "to finish or pass a different journal path"
        ) from None


def _read(fd: int, path: Path, hashes: Sequence[str]) -> dict[int, JournalEntry]:
    """Parse the journal, drop a torn last line (truncating it away), check hashes."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    body, newline, tail = data.rpartition(b"\n")
    if not newline:
        body, tail = b"", data
    if tail:
        # Every record is written with its newline in one write, so bytes after
        # the last newline are a line a crash cut short: that example runs again.
        logger.warning(
            "journal %s: ignoring an incomplete last line (%d bytes), most likely cut short "
            "by a crash; that example will run again",
            path,
            len(tail),
        )
        os.ftruncate(fd, len(body) + len(newline))
    entries: dict[int, JournalEntry] = {}
    if not body:
        return entries
    for number, raw in enumerate(body.split(b"\n"), start=1):
        if not raw.strip():
            continue
        entry = _parse(raw)
        if entry is None:
            raise UsageError(
                f"journal {str(path)!r} line {number} is not a journal record: "
                f"{raw[:80].decode('utf-8', 'replace')!r}. Remove that line, or delete the "
                "file to start over"
            )
        _check(entry, number, path, hashes)
        entries[entry.index] = entry
    return entries


def _parse(raw: bytes) -> JournalEntry | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    index, digest = record.get("index"), record.get("hash")
    prediction, error = record.get("prediction"), record.get("error")
    if (
        isinstance(index, bool)
        or not isinstance(index, int)
        or not isinstance(digest, str)
        or not (prediction is None or isinstance(prediction, dict))
        or not (error is None or isinstance(error, str))
    ):
        return None
    return JournalEntry(index, digest, record.get("score"), prediction, error)


def _check(entry: JournalEntry, number: int, path: Path, hashes: Sequence[str]) -> None:
    if 0 <= entry.index < len(hashes) and hashes[entry.index] == entry.hash:
        return
    if not 0 <= entry.index < len(hashes):
        found = f"the devset has only {len(hashes)} examples"
    else:
        found = f"devset[{entry.index}] now hashes to {hashes[entry.index][:12]}"
    raise UsageError(
        f"journal {str(path)!r} was written for a different devset: line {number} records "
        f"example {entry.index} with hash {entry.hash[:12]}, but {found}. Pass a new "
        "journal path for this devset, or delete the file to start over"
    )
