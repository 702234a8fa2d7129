"""Resilience primitives of the LM client: retry policy, breaker, rate limiter,
single-flight, usage accounting, and the pipeline that composes them."""

from typing import TYPE_CHECKING, Any

from dspex.actors._lm._resilience._backoff import RetryPolicy, Sleeper, VirtualSleeper, sleeper_for
from dspex.actors._lm._resilience._breaker import (
    BreakerState,
    CircuitBreaker,
    Permit,
    counts_as_failure,
)
from dspex.actors._lm._resilience._config import LMClientConfig
from dspex.actors._lm._resilience._pipeline import (
    CallInfo,
    CallOptions,
    Deliver,
    Emit,
    Pipeline,
    Send,
)
from dspex.actors._lm._resilience._ratelimit import RateLimiter, TokenBucket, estimate_tokens
from dspex.actors._lm._resilience._shared import (
    LeaseSource,
    SharedRateLimiter,
    install_shared_limits,
    make_limiter,
)
from dspex.actors._lm._resilience._singleflight import SingleFlight
from dspex.actors._lm._resilience._usage import UsageMeter

if TYPE_CHECKING:
    from dspex.actors._lm._resilience._stats import LMClientStats


def __getattr__(name: str) -> Any:
    # LMClientStats loads when first asked for: a fresh process's first call never reads it.
    if name == "LMClientStats":
        from dspex.actors._lm._resilience._stats import LMClientStats

        return LMClientStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BreakerState",
    "CallInfo",
    "CallOptions",
    "CircuitBreaker",
    "Deliver",
    "Emit",
    "LMClientConfig",
    "LMClientStats",
    "LeaseSource",
    "Permit",
    "Pipeline",
    "RateLimiter",
    "RetryPolicy",
    "Send",
    "SharedRateLimiter",
    "SingleFlight",
    "Sleeper",
    "TokenBucket",
    "UsageMeter",
    "VirtualSleeper",
    "counts_as_failure",
    "estimate_tokens",
    "install_shared_limits",
    "make_limiter",
    "sleeper_for",
]
