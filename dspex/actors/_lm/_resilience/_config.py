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

__all__ = ["LMClientConfig", "setting_fix"]

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
    """``auto`` (httptools, httpx for proxied URLs), ``httptools``, ``h11`` or ``httpx``."""
    max_response_bytes: int = 32 * 1024 * 1024
    """Largest decoded response body; more is a non-retried ``ProviderError``."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            fix = setting_fix(field.name, value)
            if fix is not None:
                raise ConfigError(
                    f"lm_client.{field.name}={value!r} is invalid; use {fix}",
                    key=f"lm_client.{field.name}",
                    value=value,
                )
        if self.backoff_max < self.backoff_base:
            raise ConfigError(
                f"lm_client.backoff_max={self.backoff_max!r} is invalid; use seconds >= "
                f"backoff_base ({self.backoff_base!r})",
                key="lm_client.backoff_max",
                value=self.backoff_max,
            )

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


def setting_fix(name: str, value: Any) -> str | None:
    """What client setting ``name`` should be instead of ``value``; None if it is valid."""
    if name == "num_retries":
        return None if _is_int(value) and value >= 0 else "an int >= 0"
    if name in _POSITIVE:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number and value > 0 else "a number of seconds > 0"
    if name in _COUNTS:
        return None if _is_int(value) and value >= 1 else "an int >= 1"
    if name in _LIMITS:
        ok = value is None or (_is_int(value) and value >= 1)
        return None if ok else "an int >= 1, or None for no limit"
    if name == "transport":
        return None if value in TRANSPORTS else "'auto', 'httptools', 'h11' or 'httpx'"
    return None


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
