"""Provider fallback: which failures of one model send a call to the next.

``dspex.LM("openai/gpt-4o-mini", fallbacks=[...])`` tries its models in
order. A model is skipped for a call when its client gives up in a way that
says the provider, not the request, is at fault: its circuit breaker is open
(that fails fast, so an open primary costs microseconds per call), a 429 or
a server fault survived every retry, or, if asked for, the call timed out.
Anything else (a bad request, a rejected key, a cancelled run) is the
caller's to see. Each attempt is a whole call on that model's own handle:
its own cache key, history entry and telemetry, so a call is cached and
reported under the model that answered, and a failed attempt has no answer
that could be delivered twice. When the primary's breaker lets its probe
through and the probe succeeds, calls go to the primary again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dspex.errors import (
    AuthenticationError,
    CircuitOpenError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)

__all__ = ["check_fallbacks", "falls_back"]


def falls_back(error: BaseException, *, on_timeout: bool = False) -> bool:
    """Whether ``error`` from one model sends the call on to the next one."""
    if not isinstance(error, LMError):
        return False  # cancelled runs, budgets, bugs: not the provider's fault
    if isinstance(error, CircuitOpenError | RateLimitError):
        return True
    if isinstance(error, LMTimeoutError):
        return on_timeout
    if isinstance(error, AuthenticationError):
        return False
    if isinstance(error, ProviderError):
        # A server fault (5xx) or a dropped connection (no status), after retries.
        return error.status is None or error.status >= 500
    return False


def check_fallbacks(fallbacks: Any, where: str) -> list[Any]:
    """The fallback list as given (model ids or LM objects), refusing anything else."""
    if fallbacks is None:
        return []
    if isinstance(fallbacks, str) or not isinstance(fallbacks, Sequence):
        raise UsageError(
            f"{where}(fallbacks={fallbacks!r}) is invalid; use a list of model ids or LMs, "
            'e.g. fallbacks=["anthropic/claude-3-5-haiku-latest"]'
        )
    for item in fallbacks:
        if not isinstance(item, str) and not callable(getattr(item, "generate", None)):
            raise UsageError(
                f"{where}(fallbacks=[..., {item!r}, ...]): each fallback is a model id "
                "such as 'openai/gpt-4o-mini' or a dspex.LM"
            )
    return list(fallbacks)
