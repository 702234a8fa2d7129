"""The process's running runtimes, and stopping them at interpreter exit.

Kept apart from the Runtime class so it imports nothing heavy: the list is
what ``current_runtime()`` consults when a call is not inside a run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["active_runtimes", "register", "unregister"]

log = logging.getLogger("dspex.runtime")

_lock = threading.Lock()
_active: list[tuple[Any, Callable[..., Any]]] = []  # (runtime, its stop)
_exit_hook_installed = False


def register(runtime: Any, stop: Callable[..., Any]) -> None:
    """Record a started runtime; ``stop(timeout=...)`` runs at interpreter exit."""
    global _exit_hook_installed
    with _lock:
        _active.append((runtime, stop))
        if not _exit_hook_installed:
            _exit_hook_installed = True
            _install_exit_hook()


def unregister(runtime: Any) -> None:
    with _lock:
        _active[:] = [(rt, stop) for rt, stop in _active if rt is not runtime]


def active_runtimes() -> list[Any]:
    """Runtimes started and not yet stopped, oldest first."""
    with _lock:
        return [rt for rt, _ in _active]


def _stop_all_at_exit() -> None:
    with _lock:
        entries = list(reversed(_active))
    for _, stop in entries:
        try:
            stop(timeout=30.0)
        except Exception:
            log.exception("dspex runtime: stop at interpreter exit failed")


def _install_exit_hook() -> None:
    # Stop the tree while the interpreter is whole: threading._register_atexit
    # hooks run when the main thread ends, before non-daemon threads (the IO
    # loop) are joined and long before atexit handlers (concurrent.futures
    # relies on it). Actor threads are daemons, so nothing left hangs exit.
    hook = getattr(threading, "_register_atexit", None)
    if hook is not None:
        hook(_stop_all_at_exit)
    else:  # pragma: no cover - other Python implementations
        import atexit

        atexit.register(_stop_all_at_exit)
