"""DSPy's ``dspy.utils.exceptions`` path: DSPy's error names, as dspex's own classes.

Each DSPy name is an alias of the dspex error that means the same thing, so
``except ContextWindowExceededError`` catches what dspex raises and code
that raises a DSPy name raises a member of dspex's tree (see dspex.errors).
DSPy's finer LM categories without a dspex counterpart map to the nearest
dspex class: transport, server and unexpected faults are all
``ProviderError`` (retryable), an invalid request is ``LMError``.
"""

from dspex.errors import (
    AdapterParseError,
    AuthenticationError,
    ContextWindowError,
    DSPexError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
)

DSPyError = DSPexError
ContextWindowExceededError = ContextWindowError
LMProviderError = ProviderError
LMTransportError = ProviderError
LMServerError = ProviderError
LMUnexpectedError = ProviderError
LMAuthError = AuthenticationError
LMNotConfiguredError = AuthenticationError
LMRateLimitError = RateLimitError
LMInvalidRequestError = LMError

__all__ = [
    "AdapterParseError",
    "ContextWindowExceededError",
    "DSPyError",
    "LMAuthError",
    "LMError",
    "LMInvalidRequestError",
    "LMNotConfiguredError",
    "LMProviderError",
    "LMRateLimitError",
    "LMServerError",
    "LMTimeoutError",
    "LMTransportError",
    "LMUnexpectedError",
]
