"""The two-tier response cache: a memory LRU in front of SQLite on disk.

Reads happen in the caller's thread (a hit must cost microseconds, far less
than an actor round trip), so the store is thread-safe on its own. Writes to
disk are done by whoever calls :meth:`CacheStore.persist` — the ``Cache``
actor — so callers never wait on disk I/O.

The disk tier is SQLite in WAL mode with a busy timeout, so several processes
may share one cache directory. It is bounded by bytes: past the bound the
least recently written rows are evicted. A directory that cannot be written
(read-only, permission denied) degrades to memory only, with one warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from dspex._record import Record
from dspex.actors._lm._prices import replace_response
from dspex.actors._lm._types import Completion, LMResponse, Usage

__all__ = ["CacheStats", "CacheStore", "decode_response", "encode_response"]

log = logging.getLogger("dspex.cache")

DB_NAME = "dspex-cache.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    written REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_written ON entries (written);
"""


def encode_response(response: LMResponse) -> bytes:
    """Serialize a response as JSON (never pickle: a cache file must not run code)."""
    payload: dict[str, Any] = {
        "c": [[c.text, c.finish_reason] for c in response.completions],
        "u": [response.usage.prompt_tokens, response.usage.completion_tokens],
        "m": response.model,
    }
    if any(c.tool_calls or c.reasoning_content or c.citations for c in response.completions):
        # native tool calls, reasoning and citations, only when present (older entries
        # lack them; citations, the third, only when some completion has them)
        payload["x"] = [
            [list(c.tool_calls), c.reasoning_content, *([list(c.citations)] if c.citations else [])]
            for c in response.completions
        ]
    if response.embeddings:  # only when present: chat entries keep their old bytes
        payload["e"] = [list(v) for v in response.embeddings]
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_response(blob: bytes) -> LMResponse:
    payload = json.loads(blob)
    extra = payload.get("x") or [[[], None]] * len(payload["c"])
    return LMResponse(
        completions=tuple(
            Completion(text, reason, tuple(more[0]), more[1], tuple(more[2] if more[2:] else ()))
            for (text, reason), more in zip(payload["c"], extra, strict=True)
        ),
        usage=Usage(*payload["u"]),
        model=payload["m"],
        cache_hit=True,
        embeddings=tuple(tuple(v) for v in payload.get("e", ())),
    )


class CacheStats(Record):
    """A snapshot of cache counters."""

    hits: int
    memory_hits: int
    disk_hits: int
    misses: int
    memory_entries: int
    disk_entries: int
    disk_bytes: int
    disk_enabled: bool

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class CacheStore:
    """Thread-safe memory LRU plus optional SQLite disk tier."""

    def __init__(
        self,
        *,
        memory_max_entries: int = 100_000,
        disk_dir: str | os.PathLike[str] | None = None,
        disk_max_bytes: int = 1 << 30,
        memory_enabled: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._memory: LRUCache[str, LMResponse] | None = (
            LRUCache(maxsize=memory_max_entries) if memory_enabled else None
        )
        self.disk_max_bytes = disk_max_bytes
        self._hits_memory = 0
        self._hits_disk = 0
        self._misses = 0
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        self.disk_dir: Path | None = None
        if disk_dir is not None:
            self._open_disk(Path(disk_dir).expanduser())

    # -- disk set-up -----------------------------------------------------------

    def _open_disk(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(f"{directory} is not writable")
            db = sqlite3.connect(
                directory / DB_NAME, timeout=10.0, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            log.warning(
                "dspex cache: disk tier disabled, %s cannot be used (%s); "
                "caching in memory only. Set cache.dir to a writable directory to persist.",
                directory,
                exc,
            )
            return
        self._db = db
        self.disk_dir = directory

    @property
    def disk_enabled(self) -> bool:
        return self._db is not None

    # -- reads (any thread) ----------------------------------------------------

    def peek_memory(self, key: str) -> LMResponse | None:
        """``key`` in the memory tier only; a miss is not counted (the caller's was).

        The LM client's loop asks, right before it would start an upstream request,
        whether the answer arrived since its caller looked (see ``_slot.Memo``).
        """
        memory = self._memory
        if memory is None:
            return None
        with self._lock:
            hit = memory.get(key)
            if hit is not None:
                self._hits_memory += 1
            return hit

    def get(self, key: str) -> LMResponse | None:
        """Look ``key`` up in memory, then on disk; a disk hit is promoted to memory."""
        memory = self._memory
        if memory is not None:
            with self._lock:
                hit = memory.get(key)
                if hit is not None:
                    self._hits_memory += 1
                    return hit
        blob = self._disk_get(key)
        if blob is None:
            with self._lock:
                self._misses += 1
            return None
        try:
            response = decode_response(blob)
        except (ValueError, KeyError, TypeError):
            log.warning("dspex cache: dropping a corrupt entry %s", key[:12])
            with self._lock:
                self._misses += 1
            return None
        with self._lock:
            self._hits_disk += 1
            if memory is not None:
                memory[key] = response
        return response

    def _disk_get(self, key: str) -> bytes | None:
        db = self._db
        if db is None:
            return None
        with self._db_lock:
            try:
                row = db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                log.warning("dspex cache: disk read failed (%s)", exc)
                return None
        return None if row is None else bytes(row[0])

    # -- writes ----------------------------------------------------------------

    def put_memory(self, key: str, response: LMResponse) -> None:
        """Store in the memory tier (caller's thread; cheap)."""
        memory = self._memory
        if memory is not None:
            stored = response if response.cache_hit else _as_hit(response)
            with self._lock:
                memory[key] = stored

    def persist(self, items: Iterable[tuple[str, LMResponse]]) -> int:
        """Write entries to disk in one transaction and enforce the size bound.

        Runs in the Cache actor's thread. Returns the number of rows written.
        """
        db = self._db
        if db is None:
            return 0
        rows = [
            (k, blob, len(blob), time.time()) for k, r in items for blob in [encode_response(r)]
        ]
        if not rows:
            return 0
        with self._db_lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR REPLACE INTO entries (key, value, size, written) VALUES (?,?,?,?)",
                    rows,
                )
                self._evict_locked(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                log.warning("dspex cache: disk write failed (%s); entries stay in memory", exc)
                return 0
        return len(rows)

    def _evict_locked(self, db: sqlite3.Connection) -> None:
        (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
        if total <= self.disk_max_bytes:
            return
        excess = total - self.disk_max_bytes
        freed = 0
        victims: list[str] = []
        for key, size in db.execute("SELECT key, size FROM entries ORDER BY written ASC"):
            victims.append(key)
            freed += size
            if freed >= excess:
                break
        db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in victims])

    def clear(self) -> None:
        """Drop every entry in both tiers."""
        with self._lock:
            if self._memory is not None:
                self._memory.clear()
        db = self._db
        if db is not None:
            with self._db_lock:
                db.execute("DELETE FROM entries")

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with self._db_lock:
                db.close()

    def stats(self) -> CacheStats:
        disk_entries = disk_bytes = 0
        db = self._db
        if db is not None:
            with self._db_lock, contextlib.suppress(sqlite3.Error):
                disk_entries, disk_bytes = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries"
                ).fetchone()
        with self._lock:
            return CacheStats(
                hits=self._hits_memory + self._hits_disk,
                memory_hits=self._hits_memory,
                disk_hits=self._hits_disk,
                misses=self._misses,
                memory_entries=len(self._memory) if self._memory is not None else 0,
                disk_entries=disk_entries,
                disk_bytes=disk_bytes,
                disk_enabled=self._db is not None,
            )


def _as_hit(response: LMResponse) -> LMResponse:
    return replace_response(response, cache_hit=True)  # an unpriced answer stays unpriced
