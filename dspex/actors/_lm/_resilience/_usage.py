"""Usage accounting for one model's client: tokens and call outcomes.

A :class:`UsageMeter` outlives client restarts (it belongs to the client's
slot, not to an incarnation), so totals survive a crash. It is updated on the
client's loop thread and read from anywhere, under one small lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

from dspex.actors._lm._types import Usage

if TYPE_CHECKING:
    from dspex.actors._lm._resilience._stats import LMClientStats

__all__ = ["UsageMeter"]


class UsageMeter:
    """Running totals behind :class:`LMClientStats`; thread-safe."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._prompt = 0
        self._completion = 0

    def count(self, name: str, n: int = 1) -> None:
        """Bump one of the integer counters of :class:`LMClientStats`."""
        with self._lock:
            self._counts[name] += n

    def success(self, usage: Usage) -> None:
        with self._lock:
            self._counts["successes"] += 1
            self._prompt += usage.prompt_tokens
            self._completion += usage.completion_tokens

    def failure(self, error: BaseException) -> None:
        with self._lock:
            self._counts["failures"] += 1
            self._errors[type(error).__name__] += 1

    def snapshot(self) -> LMClientStats:
        # Imported here: a stats snapshot is rare, and its dataclass costs a cold start ~1 ms.
        from dspex.actors._lm._resilience._stats import LMClientStats

        with self._lock:
            c = self._counts
            return LMClientStats(
                model=self.model,
                calls=c["calls"],
                shared=c["shared"],
                upstream_requests=c["upstream_requests"],
                successes=c["successes"],
                failures=c["failures"],
                retries=c["retries"],
                throttled=c["throttled"],
                circuit_rejections=c["circuit_rejections"],
                usage=Usage(self._prompt, self._completion),
                errors=dict(self._errors),
            )
