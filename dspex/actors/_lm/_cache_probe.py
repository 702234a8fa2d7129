"""Cache probes: answer a top-level call in the calling thread when the cache can.

While :func:`cache_only` is active, an :class:`LMHandle` call that the cache
cannot answer raises :class:`CacheMiss` before it sends anything or emits any
telemetry; the caller then runs the call as an ordinary ProgramRun actor.
``CacheMiss`` derives from ``BaseException`` so that adapters' and user code's
``except Exception`` fallbacks cannot swallow it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

__all__ = ["NOT_CACHED", "CacheMiss", "cache_only", "probing"]

NOT_CACHED: Any = object()  # Runtime.run_if_cached's answer when the cache could not answer

_probing: contextvars.ContextVar[bool] = contextvars.ContextVar("dspex_cache_only", default=False)


class CacheMiss(BaseException):
    """An LM call under :func:`cache_only` that the cache could not answer."""


def probing() -> bool:
    """Whether LM calls here may only be answered from the cache."""
    return _probing.get()


@contextlib.contextmanager
def cache_only() -> Iterator[None]:
    """LM calls in the body answer from the cache or raise :class:`CacheMiss`."""
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)
