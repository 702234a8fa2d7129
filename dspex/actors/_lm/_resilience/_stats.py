"""A snapshot of one model's client counters (loaded when stats are first read)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dspex.actors._lm._types import Usage

__all__ = ["LMClientStats"]


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
