"""Usage accounting for one model's client: tokens and call outcomes.

A :class:`UsageMeter` outlives client restarts (it belongs to the client's
slot, not to an incarnation), so totals survive a crash. It is updated on the
client's loop thread and read from anywhere, under one small lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from dspex.actors._lm._types import Usage

__all__ = ["LMClientStats", "UsageMeter"]


@dataclass(frozen=True, slots=True)
class LMClientStats:
    """A snapshot of one model's client counters.

    ``calls`` counts requests handed to the client (including those that
    shared a flight), ``upstream_requests`` the HTTP attempts actually made.
    """

    model: str
    calls: int = 0
    shared: int = 0
    upstream_requests: int = 0
    successes: int = 0
    failures: int = 0
    retries: int = 0
    throttled: int = 0
    circuit_rejections: int = 0
    usage: Usage = field(default_factory=Usage)
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.usage.total_tokens


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
