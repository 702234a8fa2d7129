"""Which Runtime a call belongs to: the run's, the newest started, or the default one.

The default runtime starts lazily (from ``DSPEX_*`` settings and a
``DSPEX_CONFIG`` file, if any) the first time something needs a runtime and
none was started, so a plain DSPy-style script works; it stops at exit.
"""

from __future__ import annotations

import threading

from dspex.actors._program_run import current_run
from dspex.actors._runtime import Runtime
from dspex.actors._runtime_registry import active_runtimes

__all__ = ["current_runtime", "default_runtime", "stop_default_runtime"]

_lock = threading.Lock()
_default: Runtime | None = None


def current_runtime() -> Runtime:
    """The runtime for a call made here (starting the default one if none runs)."""
    run = current_run()
    if run is not None and isinstance(run.runtime, Runtime) and run.runtime.running:
        return run.runtime
    active = active_runtimes()
    if active:
        newest: Runtime = active[-1]
        return newest
    return default_runtime()


def default_runtime() -> Runtime:
    """The process's default runtime, started on first use (thread-safe)."""
    global _default
    with _lock:
        if _default is None or not _default.running:
            from dspex.config import load_settings

            _default = Runtime(load_settings()).start()
        return _default


def stop_default_runtime(timeout: float | None = None) -> bool:
    """Stop the default runtime if it runs; the next call starts a fresh one."""
    global _default
    with _lock:
        rt, _default = _default, None
    return rt.stop(timeout) if rt is not None else True
