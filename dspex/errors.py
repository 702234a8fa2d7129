"""The one error tree of dspex.

Every error dspex raises derives from :class:`DSPexError`. A user's misuse
(bad config, bad signature, bad argument) is kept apart from runtime failures
(a provider fault, a crashed run), so callers can tell "fix your code" from
"try again later"::

    DSPexError
    ├── UsageError                  misuse of the API; the message names the fix
    │   ├── ConfigError             a setting with a bad key or value
    │   ├── SignatureError          a signature that cannot be parsed or built
    │   └── StateKeyError           a saved state lacks a predictor's entry (a KeyError)
    ├── SupervisionError            the actor runtime itself
    │   ├── StartError              a child failed to start or to acknowledge init
    │   ├── MaxChildrenError        a dynamic supervisor is full
    │   ├── RegistryError           name taken / name not registered
    │   ├── ActorStoppedError       the actor (or runtime) is gone
    │   └── CallTimeoutError        an ask got no reply in time
    ├── LMError                     a call to a language model failed
    │   ├── RateLimitError          HTTP 429 or a local rate limit
    │   ├── LMTimeoutError          the provider did not answer in time
    │   ├── ProviderError           5xx, bad reply, dropped connection
    │   │   └── AuthenticationError 401/403: bad or missing API key
    │   ├── ContextWindowError      the prompt exceeds the model's context window
    │   └── CircuitOpenError        the client's breaker is open; failing fast
    ├── AdapterParseError           an LM reply did not match the signature
    ├── ProgramError                user code in a program run raised
    ├── OverloadedError             a program server's queue is full
    ├── BudgetExceededError         a cost or token budget is spent; no new LM call starts
    ├── LocalModelError             the embedded local model is missing or broken
    └── RetrieverError              a retrieval server (ColBERTv2) failed or answered wrongly

This module imports nothing from dspex, so every layer may import it.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "ActorStoppedError",
    "AdapterParseError",
    "AuthenticationError",
    "BudgetExceededError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "ContextWindowError",
    "DSPexError",
    "LMError",
    "LMTimeoutError",
    "LocalModelError",
    "MaxChildrenError",
    "OverloadedError",
    "ProgramError",
    "ProviderError",
    "RateLimitError",
    "RegistryError",
    "RetrieverError",
    "SignatureError",
    "StartError",
    "StateKeyError",
    "SupervisionError",
    "UsageError",
]


class DSPexError(Exception):
    """Root of every error dspex raises."""


class UsageError(DSPexError, ValueError):
    """The API was used wrongly; the message says what to change."""


class ConfigError(UsageError):
    """A setting has an unknown key or a bad value.

    ``key`` is the dotted setting name and ``value`` the rejected value (already
    redacted when the key holds a secret).
    """

    def __init__(self, message: str, *, key: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class SignatureError(UsageError, TypeError):
    """A signature could not be parsed or built.

    Also a ``TypeError`` (DSPy raises one for a malformed signature class), as
    well as a ``ValueError`` through UsageError.

    ``position`` is the 0-based character offset in the signature string, when
    the signature came from a string.
    """

    def __init__(
        self, message: str, *, signature: str | None = None, position: int | None = None
    ) -> None:
        super().__init__(message)
        self.signature = signature
        self.position = position


class StateKeyError(UsageError, KeyError):
    """A saved state has no entry for one of the program's predictors.

    A ``KeyError`` too, as DSPy raises one for a missing key when loading.
    """

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class SupervisionError(DSPexError):
    """The actor runtime could not do what was asked."""


class StartError(SupervisionError):
    """A child failed in its start function or ``on_start``, or did not ack in time."""


class MaxChildrenError(SupervisionError):
    """A dynamic supervisor already runs ``max_children`` children."""


class RegistryError(SupervisionError, KeyError):
    """A name is already taken, or is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class ActorStoppedError(SupervisionError):
    """The actor, or the runtime it belonged to, has stopped."""


class CallTimeoutError(SupervisionError, builtins.TimeoutError):
    """An ``ask``/``get`` received no reply within its timeout."""


class LMError(DSPexError):
    """A call to a language model failed.

    ``model`` names the model, ``status`` the HTTP status when there was one,
    and ``retryable`` whether retrying the same request may succeed.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        if retryable is not None:
            self.retryable = retryable


class RateLimitError(LMError):
    """The provider (HTTP 429) or the local limiter refused the call.

    ``retry_after`` is the delay in seconds the provider asked for, if any.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, model=model, status=status, retryable=retryable)
        self.retry_after = retry_after


class LMTimeoutError(LMError, builtins.TimeoutError):
    """The provider did not answer within the client's timeout."""

    retryable = True


class ProviderError(LMError):
    """The provider failed: a 5xx, a malformed reply or a dropped connection."""

    retryable = True


class AuthenticationError(ProviderError):
    """The provider rejected the API key (HTTP 401/403), or none was given."""

    retryable = False


class ContextWindowError(LMError):
    """The provider refused the prompt as longer than the model's context window.

    Not retryable: the same prompt fails again, so the caller must shorten it
    (ReAct drops its oldest trajectory step). ``prompt_tokens`` and
    ``context_window`` are the provider's own counts, when it states them.
    """

    retryable = False

    def __init__(
        self,
        message: str = "the prompt exceeds the model's context window",
        *,
        model: str | None = None,
        status: int | None = None,
        prompt_tokens: int | None = None,
        context_window: int | None = None,
    ) -> None:
        # A message default: DSPy code raises ContextWindowExceededError() bare.
        super().__init__(message, model=model, status=status)
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window


class CircuitOpenError(LMError):
    """The client's circuit breaker is open, so the call failed fast.

    ``retry_at`` is the monotonic time at which the breaker half-opens.
    """

    retryable = False

    def __init__(
        self, message: str, *, model: str | None = None, retry_at: float | None = None
    ) -> None:
        super().__init__(message, model=model)
        self.retry_at = retry_at


class AdapterParseError(DSPexError):
    """An LM reply could not be parsed into the signature's output fields.

    ``raw`` is the reply text, ``field`` the offending field when known.
    """

    def __init__(
        self,
        message: str,
        signature: Any = None,
        lm_response: str | None = None,
        dspy_message: str | None = None,
        parsed_result: Any = None,
        *,
        raw: str | None = None,
        adapter: str | None = None,
        field: str | None = None,
    ) -> None:
        if raw is None and lm_response is not None:
            # DSPy's form, used by custom adapters written for DSPy:
            # AdapterParseError(adapter_name, signature, lm_response, message, parsed_result).
            adapter, raw = message, lm_response
            expected = ", ".join(getattr(signature, "output_fields", {}) or {})
            message = (
                (f"{dspy_message}\n\n" if dspy_message else "")
                + f"Adapter {adapter} failed to parse the LM response. \n\n"
                f"LM Response: {lm_response} \n\n"
                f"Expected to find output fields in the LM response: [{expected}] \n\n"
            )
            if parsed_result is not None:
                message += (
                    "Actual output fields parsed from the LM response: "
                    f"[{', '.join(parsed_result)}] \n\n"
                )
        super().__init__(message)
        self.raw = raw if raw is not None else ""
        self.adapter = adapter
        self.field = field
        self.signature = signature
        self.parsed_result = parsed_result

    # DSPy's attribute names for the same facts (``dspy.utils.exceptions.AdapterParseError``).
    @property
    def adapter_name(self) -> str | None:
        return self.adapter

    @property
    def lm_response(self) -> str:
        return self.raw


class ProgramError(DSPexError):
    """User code in a program run raised.

    The original exception is ``__cause__`` (and ``original``), so its type and
    traceback survive the trip back from the run's actor thread. A wrapped user
    exception keeps its message (``str(e)`` is the original's); the run is in
    ``run_id`` / ``run_label`` and a note.
    """

    run_id: int | None = None
    """The program run the error came from (also named in the exception's notes)."""
    run_label: str | None = None

    def __init__(self, message: str, *, original: BaseException | None = None) -> None:
        super().__init__(message)
        self.original = original


class OverloadedError(DSPexError):
    """A program server's queue is full; the request was not accepted."""


class BudgetExceededError(DSPexError):
    """A cost or token budget is spent, so no new LM call starts.

    ``budget`` names the limit (``"max_cost_usd"`` or ``"max_tokens"``),
    ``scope`` whose it is (``"Evaluate"``, ``"compile"``, ``"runtime"``...),
    ``limit`` its value and ``spent`` what was spent when the call was refused.
    """

    def __init__(
        self, message: str, *, budget: str, scope: str, limit: float, spent: float
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.scope = scope
        self.limit = limit
        self.spent = spent


class LocalModelError(DSPexError):
    """The embedded local model is not installed or failed to start."""


class RetrieverError(DSPexError, ValueError):
    """A retrieval server (``ColBERTv2``) failed, timed out or answered wrongly.

    A ``ValueError`` too, as DSPy raises for a server's error answer. ``url``
    is the server's, ``status`` the HTTP status when there was one.
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
