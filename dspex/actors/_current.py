"""Which Runtime a call belongs to: the run's, the newest started, or the default one.

The default runtime starts lazily (from ``DSPEX_*`` settings and a
``DSPEX_CONFIG`` file, if any) the first time something needs a runtime and
none was started, so a plain DSPy-style script works; it stops at exit.
This module imports no Runtime until one must start, so the light corners of
the programs layer (history, settings) may ask it on every call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal, overload

from dspex.actors._program_run import current_run
from dspex.actors._runtime_registry import active_runtimes

if TYPE_CHECKING:
    from dspex.actors._runtime import Runtime

__all__ = ["current_runtime", "default_runtime", "stop_default_runtime"]

_lock = threading.Lock()
_default: Runtime | None = None


@overload
def current_runtime(start: Literal[True] = ...) -> Runtime: ...
@overload
def current_runtime(start: bool) -> Runtime | None: ...
def current_runtime(start: bool = True) -> Runtime | None:
    """The runtime for a call made here: the run's, else the newest running one.

    With none running, ``start=True`` (the default) starts the default runtime;
    ``start=False`` returns None instead (for what only reports to a runtime).
    """
    run = current_run()
    runtime = run.runtime if run is not None else None
    if runtime is not None and getattr(runtime, "running", False) is True:  # a stand-in: no
        return runtime  # type: ignore[no-any-return]
    active = active_runtimes()
    if active:
        newest: Runtime = active[-1]
        return newest
    return default_runtime() if start else None


def default_runtime() -> Runtime:
    """The process's default runtime, started on first use (thread-safe)."""
    global _default
    with _lock:
        if _default is None or not _default.running:
            from dspex.actors._runtime import Runtime
            from dspex.config import load_settings

            _default = Runtime(load_settings()).start()
        return _default


def stop_default_runtime(timeout: float | None = None) -> bool:
    """Stop the default runtime if it runs; the next call starts a fresh one."""
    global _default
    with _lock:
        rt, _default = _default, None
    return rt.stop(timeout) if rt is not None else True
