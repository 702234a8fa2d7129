"""Speculative evaluation for GEPA: warm the LM cache for work the engine will likely ask for.

GEPA is a chain of dependent rounds (evaluate the parent on a minibatch,
reflect, evaluate the child on the minibatch, then on the whole valset if it
did better), so at real LM latencies its wall time is the number of rounds
times the latency, whatever the concurrency. A :class:`Speculator` shortens
the chain: the first time a candidate is evaluated it also runs that
candidate on the valset (``"valset"``) and the trainset (``"all"``) in the
background. The engine's later evaluations then make the very same LM calls,
which the cache answers or single-flight joins while still in flight.

The engine's results are unchanged: speculation only runs the program (no
metric, nothing journaled) and its answers reach the engine through the cache
under the same keys. What it costs is requests for candidates the engine
rejects; it is off by default. It needs the LM cache (``cache=False`` LMs
gain nothing).

Runs on one thread of its own with an event loop: each prefetch is an
``acall`` of the program, awaited natively for dspex's built-in modules.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

from dspex.errors import UsageError

__all__ = ["SPECULATE_LEVELS", "Speculator", "check_speculate"]

logger = logging.getLogger("dspex.programs")

SpeculateLevel = Literal["off", "valset", "all"]
SPECULATE_LEVELS: Final = ("off", "valset", "all")
_JOIN_SECONDS: Final = 10.0


def check_speculate(value: Any) -> SpeculateLevel:
    """``GEPA(speculate=...)`` as a level; True means ``"all"``, False ``"off"``."""
    if value is True:
        return "all"
    if value is False or value is None:
        return "off"
    if value not in SPECULATE_LEVELS:
        raise UsageError(
            f"GEPA(speculate={value!r}): use False (the default), 'valset' (prefetch each new "
            "candidate's valset evaluation) or 'all' / True (its trainset too)"
        )
    return value  # type: ignore[no-any-return]


class Speculator:
    """Background prefetch of candidates' evaluations (the engine's thread calls ``saw``)."""

    def __init__(
        self,
        level: SpeculateLevel,
        *,
        trainset: Sequence[Any],
        valset: Sequence[Any],
        concurrency: int,
    ) -> None:
        self.level = level
        self.examples: list[Any] = list(valset)
        if level == "all":
            seen = {id(x) for x in self.examples}
            self.examples += [x for x in trainset if id(x) not in seen]
        self.concurrency = max(1, concurrency)
        self.started = 0
        """Prefetch runs started (for logs and tests)."""
        self._seen: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit: asyncio.Semaphore | None = None
        # The loop thread runs in the compile's context: its settings (lm, adapter),
        # budgets and trace context reach every prefetch run.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve,), name="dspex-gepa-speculator", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._limit = asyncio.Semaphore(self.concurrency)
        self._loop.run_forever()

    def saw(self, key: str, build: Callable[[], Any], evaluating: Sequence[Any]) -> None:
        """A candidate (``key``) is being evaluated on ``evaluating``: prefetch the rest, once."""
        if key in self._seen:
            return
        self._seen.add(key)
        skip = {id(x) for x in evaluating}
        todo = [x for x in self.examples if id(x) not in skip]
        if not todo:
            return
        program = build()
        self.started += len(todo)
        self._loop.call_soon_threadsafe(self._spawn, program, todo)

    def _spawn(self, program: Any, examples: list[Any]) -> None:
        for example in examples:
            task = self._loop.create_task(self._prefetch(program, example))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _prefetch(self, program: Any, example: Any) -> None:
        assert self._limit is not None
        async with self._limit:
            try:
                await program.acall(**example.inputs())
            except Exception as exc:  # a guess that failed costs nothing but the call
                logger.debug("GEPA speculation: a prefetch failed: %s", exc)

    def close(self) -> None:
        """Cancel the prefetches still running and stop the thread (the engine's thread)."""
        if not self._thread.is_alive():
            return

        def stop() -> None:
            for task in list(self._tasks):
                task.cancel()
            gathered = asyncio.gather(*self._tasks, return_exceptions=True)
            gathered.add_done_callback(lambda _: self._loop.stop())

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(_JOIN_SECONDS)
        if self._thread.is_alive():
            logger.warning("GEPA speculation: the prefetch thread did not stop in time")
            return
        self._loop.close()
