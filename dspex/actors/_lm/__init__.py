"""The LM stack: everything between ``dspex.LM`` and the provider's HTTP endpoint.

Read it top down, in the order a call takes:

- ``_model``: :class:`LM`, the user's light description of a model (DSPy's ``dspy.LM``).
- ``_types``: the LM protocol (request, response, completion, usage): the one
  seam programs speak.
- ``_handle``: :class:`LMHandle`, what a call holds in the caller's thread
  (cache lookup, submit, wait, resubmit after a client restart).
- ``_slot``: :class:`ClientSlot`, one model's endpoint that outlives client
  incarnations, and a call's attempts.
- ``_client``: :class:`LMClient`, the supervised actor owning one model's I/O.
- ``_clients``: the runtime's table of LM clients (one per distinct client).
- ``_loop``: :class:`IOLoop`, the client's event loop thread.
- ``_transport``: the HTTP seam: the ``Transport`` protocol, the shared body
  reader (decoding, size bound), transport errors, and which transport a URL
  takes; ``_transport_httptools`` (default, direct), ``_transport_h11``
  (direct, on request; both on ``_transport_pool``) and ``_transport_httpx``
  (proxies, or on request) implement it.
- ``_providers/``: wire formats (OpenAI-compatible chat and embeddings,
  OpenAI's Responses API, Anthropic, Gemini).
- ``_embedder``: :class:`Embedder` (DSPy's ``dspy.Embedder``), embeddings
  through the same clients.
- ``_resilience/``: the pipeline a call passes on the loop (retries, breaker,
  rate limits, single-flight, usage).
- ``_local_model`` / ``_local_process``: the embedded llama.cpp server.

Kept light on import: the protocol types load eagerly, everything else on
first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face
from dspex.actors._lm._types import (
    Completion,
    LMProtocol,
    LMRequest,
    LMResponse,
    Message,
    Usage,
)

if TYPE_CHECKING:
    from dspex.actors._lm._cache_key import request_key
    from dspex.actors._lm._client import ClientSlot, LMClient
    from dspex.actors._lm._embedder import Embedder
    from dspex.actors._lm._handle import LMHandle
    from dspex.actors._lm._loop import IOLoop, host_engines
    from dspex.actors._lm._model import LM
    from dspex.actors._lm._resilience import (
        CircuitBreaker,
        LMClientConfig,
        LMClientStats,
        RateLimiter,
        RetryPolicy,
        VirtualSleeper,
    )

_LAZY: dict[str, str] = {
    "CircuitBreaker": "_resilience",
    "ClientSlot": "_client",
    "Embedder": "_embedder",
    "IOLoop": "_loop",
    "LM": "_model",
    "LMClient": "_client",
    "LMClientConfig": "_resilience",
    "LMClientStats": "_resilience",
    "LMHandle": "_handle",
    "RateLimiter": "_resilience",
    "RetryPolicy": "_resilience",
    "VirtualSleeper": "_resilience",
    "host_engines": "_loop",
    "request_key": "_cache_key",
}

__all__ = [
    "LM",
    "CircuitBreaker",
    "ClientSlot",
    "Completion",
    "Embedder",
    "IOLoop",
    "LMClient",
    "LMClientConfig",
    "LMClientStats",
    "LMHandle",
    "LMProtocol",
    "LMRequest",
    "LMResponse",
    "Message",
    "RateLimiter",
    "RetryPolicy",
    "Usage",
    "VirtualSleeper",
    "host_engines",
    "request_key",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
