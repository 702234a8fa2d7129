"""The dspex runtime of a Ray worker process, started once from the driver's settings.

Every Ray worker actor dspex starts runs its units on a runtime of its own
process: its LM client actors, HTTP connection pools, single-flight table
and memory cache serve every unit that process runs, for every pool, until
the process exits. The driver ships its :class:`~dspex.config.Settings` as
plain data *without secrets* (:func:`shippable_settings`): API keys and
other secrets come from the worker's own environment (``DSPEX_*``,
``OPENAI_API_KEY``...), so no key travels through Ray's object store, its
logs or its dashboards. The disk cache directory travels as a path: on
shared storage every node shares one cache, otherwise each node has its own.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dspex.config import is_secret_key

if TYPE_CHECKING:
    from dspex.actors import Runtime

__all__ = ["node_runtime", "shippable_settings", "stop_node_runtime"]

_lock = threading.Lock()
_runtime: Runtime | None = None
_shipped: Mapping[str, Any] | None = None


def _without_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _without_secrets(v)
            for k, v in value.items()
            if not (isinstance(k, str) and is_secret_key(k)) and not _is_secret_value(v)
        }
    if isinstance(value, list | tuple):
        return [_without_secrets(v) for v in value]
    return value


def _is_secret_value(value: Any) -> bool:
    return callable(getattr(value, "get_secret_value", None))


def shippable_settings(settings: Any) -> dict[str, Any]:
    """``settings`` as JSON-able overrides for a worker: secrets left out, backend local.

    Runs in the driver. The worker runs units itself: its own pools are local.
    """
    raw = settings.model_dump(mode="python")
    data: dict[str, Any] = _without_secrets(_jsonable(raw))
    data.setdefault("runtime", {})["backend"] = "local"
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if _is_secret_value(value):
        return value  # dropped by _without_secrets
    return str(value)  # paths


def node_runtime(shipped: Mapping[str, Any]) -> Runtime:
    """This process's runtime, started on first use from ``shipped`` (+ this environment).

    ``shipped`` comes from :func:`shippable_settings`. Later calls reuse the
    running runtime (settings of a later pool with different values do not
    restart it: one runtime per worker process). Runs in the Ray worker.
    """
    global _runtime, _shipped
    with _lock:
        if _runtime is not None and _runtime.running:
            return _runtime
        from dspex.actors import Runtime
        from dspex.config import load_settings
        from dspex.programs._settings import install_caller_hooks

        # Precedence: the driver's values over the worker's defaults; the
        # secrets missing from them come from this process's DSPEX_* env.
        settings = load_settings(**dict(shipped))
        install_caller_hooks()
        _runtime = Runtime(settings).start()
        _shipped = shipped
        atexit.register(stop_node_runtime)
        return _runtime


def stop_node_runtime() -> None:
    """Stop this process's runtime (at exit, or when a worker actor is torn down)."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None and runtime.running:
        runtime.stop()
