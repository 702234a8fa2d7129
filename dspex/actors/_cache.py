"""The Cache actor and the client LM handles use to reach it.

Reads never touch the actor: :class:`CacheClient` reads the shared
:class:`CacheStore` in the caller's thread. Writes land in memory at once and
are told to the :class:`Cache` actor, which batches them to disk, so a
crashed or restarting Cache actor costs at most unflushed disk writes, never
a caller's answer. The store outlives actor restarts: memory stays warm.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable
from typing import Any

import pykka

from dspex._record import Record
from dspex.actors._cache_store import CacheStats, CacheStore
from dspex.actors._lm._types import LMResponse
from dspex.supervision import Actor

__all__ = ["Cache", "CacheClient", "Flush", "Persist"]

log = logging.getLogger("dspex.cache")

FLUSH_BATCH = 256


class Persist(Record):
    """Write one entry to the disk tier."""

    key: str
    response: LMResponse


class Flush:
    """Write everything pending now; the reply is the number of rows written."""

    __slots__ = ()


class Cache(Actor):
    """Owns the disk tier of a :class:`CacheStore`: batched writes, eviction, flush on stop."""

    def __init__(
        self, store: CacheStore, emit: Callable[[str, dict[str, Any]], None] | None = None
    ):
        super().__init__()
        self.store = store
        self._pending: dict[str, LMResponse] = {}
        self._emit = emit

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Persist):
            self._pending[message.key] = message.response
            # Flush when the burst is over (inbox drained) or the batch is full.
            if len(self._pending) >= FLUSH_BATCH or self.actor_inbox.empty():
                self._flush()
            return None
        if isinstance(message, Flush):
            return self._flush()
        return super().on_receive(message)

    def stats(self) -> CacheStats:
        """Counters of the store (actor thread; callers may read the store directly)."""
        return self.store.stats()

    def clear(self) -> None:
        self._pending.clear()
        self.store.clear()

    def adopt(self, store: CacheStore) -> CacheStore:
        """Flush pending writes to the current store, then switch to ``store``; returns the old."""
        self._flush()
        old, self.store = self.store, store
        return old

    def _flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        written = self.store.persist(batch.items())
        if self._emit is not None and written:
            self._emit("cache.flush", {"rows": written})
        return written

    def on_stop(self) -> None:
        self._flush()

    def on_failure(self, *exc_info: Any) -> None:
        # Best effort: a crash in a handler should not lose what is queued.
        try:
            self._flush()
        except Exception:
            log.exception("dspex cache: flush during failure failed")


_write_through: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dspex_cache_write_through", default=False
)


def write_through(on: bool = True) -> contextvars.Token[bool]:
    """From here on in this context (and the threads it starts), LM answers are written to
    the disk cache in the caller's thread before the call returns; undo with
    :func:`end_write_through`. Checkpointed compiles use it (docs/optimizers.md)."""
    return _write_through.set(on)


def end_write_through(token: contextvars.Token[bool]) -> None:
    """Undo :func:`write_through`."""
    _write_through.reset(token)


class CacheClient:
    """What an LM handle uses: direct reads, writes that never block on disk.

    ``actor`` returns the current Cache incarnation (or None while it restarts).
    """

    def __init__(
        self, store: CacheStore, actor: Callable[[], pykka.ActorRef[Any] | None] | None = None
    ) -> None:
        self.store = store
        self._actor = actor

    def get(self, key: str) -> LMResponse | None:
        return self.store.get(key)

    def peek_memory(self, key: str) -> LMResponse | None:
        """The memory tier only, a miss not counted (the LM client's loop; ``_slot.Memo``)."""
        return self.store.peek_memory(key)

    def put_memory(self, key: str, response: LMResponse) -> None:
        """Into the memory tier only (the LM client's loop, before a flight ends)."""
        self.store.put_memory(key, response)

    def put(self, key: str, response: LMResponse) -> None:
        self.store.put_memory(key, response)
        if _write_through.get() and self.store.disk_enabled:
            # A checkpointed compile: the answer is on disk before the caller goes on, so
            # a kill -9 loses none that the resumed compile would have to ask for again.
            self.store.persist([(key, response)])
            return
        ref = self._actor() if self._actor is not None else None
        if ref is None or not self.store.disk_enabled:
            return
        # While the actor restarts the entry is still in memory; disk misses one write.
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(Persist(key, response))

    def stats(self) -> CacheStats:
        return self.store.stats()
