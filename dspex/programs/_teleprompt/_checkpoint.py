"""Checkpoints: an optimizer compile that survives a crash by replaying its journal.

``compile(..., checkpoint="dir/")`` opens a :class:`Journal` in ``dir``. Each
finished unit of work (one batch of program runs, one proposal) is appended
to ``dir/journal.jsonl`` under a key that is its position in the compile
(``eval:12``) plus a digest of what it was asked (the candidate, the
examples). Rerunning the same compile replays it from the start: the
optimizer is deterministic given a seed and its units' results, so every
unit in the journal is answered from it instead of recomputed, the search
passes through the same states, and once the journal runs out the compile
goes on live. The result is the one an uninterrupted run gives. LM calls of
a unit that was cut off are answered from the disk cache.

``dir/manifest.json`` names the optimizer and fingerprints the program, the
data and the settings; a compile whose fingerprints differ is refused with
the names of what differs. Records are pickled (programs' values need not be
JSON), so load only checkpoints you wrote.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import pickle
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from dspex.actors._cache import end_write_through, write_through
from dspex.errors import UsageError
from dspex.programs._prediction import Prediction

__all__ = [
    "Journal",
    "digest",
    "fingerprint_examples",
    "fingerprint_program",
    "from_plain",
    "open_journal",
    "to_plain",
]

_PREDICTION: Final = "__dspex_prediction__"

logger = logging.getLogger("dspex.programs")

_VERSION: Final = 1
_MANIFEST: Final = "manifest.json"
_JOURNAL: Final = "journal.jsonl"


def digest(value: Any) -> str:
    """A short stable digest of ``value``'s JSON form (``repr`` for what JSON cannot show)."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint_program(program: Any) -> str:
    """The program's saved state (instructions, demos, signatures), digested."""
    return digest([type(program).__qualname__, program.dump_state()])


def fingerprint_examples(examples: Iterable[Any] | None) -> str:
    if examples is None:
        return "none"
    return digest([[sorted(dict(e).items()), sorted(e.inputs().keys())] for e in examples])


def to_plain(value: Any) -> Any:
    """``value`` with each Prediction as its fields (a Prediction refers to its signature
    class, which may be made on the fly and so cannot be pickled)."""
    if isinstance(value, Prediction):
        return {_PREDICTION: {str(k): to_plain(v) for k, v in value.items()}}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    """The inverse of :func:`to_plain`."""
    if isinstance(value, dict):
        if set(value) == {_PREDICTION}:
            return Prediction(**{k: from_plain(v) for k, v in value[_PREDICTION].items()})
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(from_plain(v) for v in value)
    return value


class Journal:
    """The finished units of one compile, on disk (thread-safe; any thread may record)."""

    def __init__(
        self, directory: str | os.PathLike[str], *, optimizer: str, fingerprint: Mapping[str, str]
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._check_manifest(optimizer, dict(fingerprint))
        self._done = self._load()
        self.replayed = 0
        self.recorded = 0
        self._file = (self.directory / _JOURNAL).open("a", encoding="utf-8")
        # LM answers reach the disk cache before their callers go on: a resumed compile
        # then finds every call a killed one had answered (its cut-off unit's too).
        self._durable: contextvars.Token[bool] | None = write_through()

    def _check_manifest(self, optimizer: str, fingerprint: dict[str, str]) -> None:
        path = self.directory / _MANIFEST
        wanted = {"version": _VERSION, "optimizer": optimizer, "fingerprint": fingerprint}
        if not path.exists():
            path.write_text(json.dumps(wanted, indent=2, sort_keys=True), encoding="utf-8")
            return
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"checkpoint={str(self.directory)!r}: {_MANIFEST} is unreadable ({exc}); "
                "delete the directory or pass another one"
            ) from exc
        if found.get("optimizer") != optimizer:
            raise UsageError(
                f"checkpoint={str(self.directory)!r} belongs to another optimizer "
                f"({found.get('optimizer')!r}, not {optimizer!r}); pass another directory"
            )
        old = found.get("fingerprint", {})
        differs = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if differs or found.get("version") != _VERSION:
            raise UsageError(
                f"checkpoint={str(self.directory)!r} was made by a different compile: "
                f"{', '.join(differs) or 'the format version'} "
                f"{'differs' if len(differs) <= 1 else 'differ'} from this one's. Resume with the "
                "same program, data and settings, or pass another directory (or delete it)"
            )

    def _load(self) -> dict[str, tuple[str, Any]]:
        path = self.directory / _JOURNAL
        done: dict[str, tuple[str, Any]] = {}
        if not path.exists():
            return done
        good = 0
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    value = pickle.loads(base64.b64decode(record["value"]))
                except Exception:  # a line torn by the crash: it and what follows are dropped
                    break
                done[record["unit"]] = (record["ask"], value)
                good += len(line)
        if good < path.stat().st_size:
            with path.open("r+b") as handle:
                handle.truncate(good)
        return done

    def replay(self, unit: str, ask: str) -> tuple[bool, Any]:
        """``(True, value)`` if ``unit`` is journaled for this ``ask``, else ``(False, None)``."""
        with self._lock:
            entry = self._done.get(unit)
        if entry is None:
            return False, None
        if entry[0] != ask:
            raise UsageError(
                f"checkpoint={str(self.directory)!r}: the replay diverged at {unit} (the "
                "journal recorded another request there). The LM or metric is not "
                "deterministic, or the code changed; delete the directory to start over"
            )
        self.replayed += 1
        return True, entry[1]

    def record(self, unit: str, ask: str, value: Any) -> None:
        """Append a finished unit (flushed and synced before returning)."""
        try:
            payload = base64.b64encode(pickle.dumps(value)).decode()
        except Exception as exc:  # it will be recomputed on a resume (its LM calls cached)
            logger.warning("checkpoint: %s cannot be saved (%s); it will be redone", unit, exc)
            return
        line = json.dumps({"unit": unit, "ask": ask, "value": payload}) + "\n"
        with self._lock:
            self._done[unit] = (ask, value)
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.recorded += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()
        token, self._durable = self._durable, None
        if token is not None:
            with contextlib.suppress(ValueError):  # closed from another context: it ends there
                end_write_through(token)


def open_journal(
    checkpoint: str | os.PathLike[str] | None,
    *,
    optimizer: str,
    fingerprint: Mapping[str, str],
) -> Journal | None:
    """The journal for ``checkpoint`` (None when no checkpoint was asked for)."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, str | os.PathLike):
        raise UsageError(
            f"{optimizer}.compile(checkpoint={checkpoint!r}): pass a directory path, "
            "e.g. checkpoint='runs/gepa-1/'"
        )
    return Journal(checkpoint, optimizer=optimizer, fingerprint=fingerprint)
