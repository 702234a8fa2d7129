"""The settings one LM client runs with, as a plain frozen dataclass.

It mirrors the ``lm_client`` group of :class:`dspex.config.Settings` (read it
with :meth:`LMClientConfig.from_settings`) without importing pydantic, so the
client stays cheap to import and easy to build in tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dspex.actors._lm._transport import TRANSPORTS
from dspex.errors import ConfigError

__all__ = ["LMClientConfig"]

_POSITIVE = ("timeout", "backoff_base", "backoff_max", "breaker_reset_timeout")
_COUNTS = ("breaker_failure_threshold", "max_in_flight", "max_response_bytes")
_LIMITS = ("rpm", "tpm")


@dataclass(frozen=True, slots=True)
class LMClientConfig:
    """Retries, timeouts, breaker, rate limits and HTTP of one client (defaults as in Settings).

    ``timeout`` bounds one HTTP attempt; a caller waits at most
    :attr:`call_timeout` for the whole call, retries and backoff included.
    """

    num_retries: int = 3
    timeout: float = 60.0
    backoff_base: float = 0.25
    backoff_max: float = 30.0
    rpm: int | None = None
    tpm: int | None = None
    breaker_failure_threshold: int = 5
    breaker_reset_timeout: float = 30.0
    max_in_flight: int = 512
    transport: str = "auto"
    """``auto`` (h11, httpx for proxied URLs), ``h11`` or ``httpx``."""
    max_response_bytes: int = 32 * 1024 * 1024
    """Largest decoded response body; more is a non-retried ``ProviderError``."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            value = getattr(self, name)
            return ConfigError(
                f"lm_client.{name}={value!r} is invalid; use {fix}",
                key=f"lm_client.{name}",
                value=value,
            )

        if not _is_int(self.num_retries) or self.num_retries < 0:
            raise bad("num_retries", "an int >= 0")
        for name in _POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise bad(name, "a number of seconds > 0")
        for name in _COUNTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise bad(name, "an int >= 1")
        for name in _LIMITS:
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise bad(name, "an int >= 1, or None for no limit")
        if self.transport not in TRANSPORTS:
            raise bad("transport", "'auto', 'h11' or 'httpx'")
        if self.backoff_max < self.backoff_base:
            raise bad("backoff_max", f"seconds >= backoff_base ({self.backoff_base!r})")

    @classmethod
    def from_settings(cls, group: Any, **overrides: Any) -> LMClientConfig:
        """Read any object with these attributes (e.g. ``Settings.lm_client_for(model)``)."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {name: getattr(group, name) for name in names if hasattr(group, name)}
        return cls(**{**values, **_checked(overrides, names)})

    def replace(self, **changes: Any) -> LMClientConfig:
        """A copy with ``changes`` applied (validated)."""
        names = [f.name for f in dataclasses.fields(self)]
        return dataclasses.replace(self, **_checked(changes, names))

    @property
    def call_timeout(self) -> float:
        """Longest a caller waits: every attempt, every backoff, plus slack for a restart."""
        return (self.num_retries + 1) * self.timeout + self.num_retries * self.backoff_max + 10.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(changes: dict[str, Any], names: list[str]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown LM client setting(s) {unknown}; valid names are {names}",
            key=f"lm_client.{unknown[0]}",
        )
    return changes
