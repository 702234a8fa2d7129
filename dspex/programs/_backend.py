"""Which backend runs a fan-out's units: local threads, or Ray actors over a cluster.

Chosen, highest first, by ``backend=`` on the call (``Evaluate(...,
backend="ray")``, ``optimizer.compile(..., backend="ray")``), by an enclosing
compile's choice (a contextvar, so the evaluations an optimizer runs follow
its compile), else by the ``runtime.backend`` setting. The driver always
runs the coordinating part (journal, progress, optimizer logic, the
WorkerPool that dispatches); only the units' bodies move to Ray.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Literal, cast

from dspex.errors import UsageError

__all__ = ["BACKENDS", "Backend", "backend_scope", "check_backend", "resolve_backend"]

Backend = Literal["local", "ray"]
BACKENDS: Final = ("local", "ray")

_chosen: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "dspex_backend", default=None
)


def check_backend(value: object, where: str) -> Backend | None:
    """``value`` checked: None (not chosen here), ``"local"`` or ``"ray"``."""
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in BACKENDS:
        raise UsageError(
            f"{where}(backend={value!r}): must be 'local' (threads in this process) or 'ray' "
            "(actors on a Ray cluster, needs dspex[ray]); or leave it unset for the "
            "runtime.backend setting"
        )
    return cast(Backend, value.lower())


def resolve_backend(explicit: Backend | None = None) -> Backend:
    """The backend for a fan-out started here (see the module docstring)."""
    if explicit is not None:
        return explicit
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    from dspex.programs._runtime_access import current_runtime

    backend: Backend = current_runtime().settings.runtime.backend
    return backend


@contextmanager
def backend_scope(backend: Backend | None) -> Iterator[None]:
    """Fan-outs started in this block (and in what it calls) use ``backend``; None: no change."""
    if backend is None:
        yield
        return
    token = _chosen.set(backend)
    try:
        yield
    finally:
        _chosen.reset(token)
