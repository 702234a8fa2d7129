"""Seams for work that runs outside this process: serve backends and remote tree branches.

The actors layer knows nothing of Ray. The programs layer registers what it
provides when a runtime starts (``programs/_settings.install_caller_hooks``):

- a *serve backend*: ``Runtime.serve(name, program, backend="ray", ...)``
  asks the backend's factory for the runtime's :class:`RemoteServers`
  directory (made once per runtime) and serves through it; ``ask``/``tell``/
  ``stop`` of a name it serves go there;
- *tree sources*: callables that return branches of remote actors (replicas,
  pool workers) that ``Runtime.tree()`` appends under the root, each node
  with its ``location`` (node id and address).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from dspex.errors import UsageError

if TYPE_CHECKING:
    from dspex.supervision import TreeNode

__all__ = [
    "RemoteServers",
    "TreeSource",
    "register_serve_backend",
    "register_tree_source",
    "remote_branches",
    "serve_backend",
    "unregister_tree_source",
]

log = logging.getLogger("dspex.runtime")


class RemoteServers(Protocol):
    """One runtime's program servers on a backend; every method callable from any thread."""

    @property
    def serve(self) -> Callable[..., Any]:
        """``serve(name, program, /, **options)``: each backend has its own options."""
        ...

    def ask(self, name: str, /, **inputs: Any) -> Any: ...

    def tell(self, name: str, /, **inputs: Any) -> int: ...

    def stop(self, name: str, /) -> None: ...

    def names(self) -> list[str]: ...

    def close_all(self) -> None: ...

    def tree(self, timeout: float) -> TreeNode | None: ...


BackendFactory = Callable[[Any], RemoteServers]
"""``factory(runtime)``: the runtime's directory of servers on that backend."""

TreeSource = Callable[[float], "TreeNode | None"]
"""``source(timeout)``: a branch of remote actors for ``rt.tree()``, or None when idle."""

_lock = threading.Lock()
_backends: dict[str, BackendFactory] = {}
_sources: dict[str, TreeSource] = {}


def register_serve_backend(name: str, factory: BackendFactory) -> None:
    """Make ``serve(..., backend=name)`` available (idempotent; the latest factory wins)."""
    with _lock:
        _backends[name] = factory


def serve_backend(name: str) -> BackendFactory:
    """The factory of serve backend ``name``; a clear error naming the choices otherwise."""
    with _lock:
        factory = _backends.get(name)
        known = sorted(_backends)
    if factory is None:
        raise UsageError(
            f"serve(backend={name!r}) is not available; use backend='local' (the default)"
            + (f" or one of {known}" if known else "")
            + ". The 'ray' backend needs the ray extra (pip install 'dspex[ray]') and a "
            "runtime started by dspex.start() or dspex.configure(...)"
        )
    return factory


def register_tree_source(key: str, source: TreeSource) -> None:
    """Add (or replace) the remote branch ``key`` shown by every runtime's ``tree()``."""
    with _lock:
        _sources[key] = source


def unregister_tree_source(key: str) -> None:
    with _lock:
        _sources.pop(key, None)


def remote_branches(timeout: float) -> tuple[TreeNode, ...]:
    """Every registered source's branch; a failing source is logged and left out."""
    with _lock:
        sources = list(_sources.items())
    branches: list[TreeNode] = []
    for key, source in sources:
        try:
            branch = source(timeout)
        except Exception:  # the tree of the local runtime must still render
            log.exception("rt.tree(): the remote branch %r failed", key)
            continue
        if branch is not None:
            branches.append(branch)
    return tuple(branches)
