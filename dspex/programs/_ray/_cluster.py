"""Joining (or starting) the Ray cluster, once per process, with nothing phoned home.

Ray is an optional extra (``pip install "dspex[ray]"``): it is imported only
here and in the other ``_ray`` modules, never at ``import dspex``. Every way
in goes through :func:`ensure_ray`, which turns Ray's usage-stats reporting
off before Ray is imported and never starts the dashboard, so a dspex
process talks to no address but the cluster's (loopback for a local one).
"""

from __future__ import annotations

import importlib
import os
import threading
from types import ModuleType
from typing import Any

from dspex.errors import UsageError

__all__ = ["RAY_EXTRA_HINT", "ensure_ray", "import_ray", "resolve_address"]

RAY_EXTRA_HINT = 'pip install "dspex[ray]"'

# Set before Ray is imported (Ray reads them at import and at init); worker
# processes inherit them from the raylet a local cluster starts from here.
_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
}

_lock = threading.Lock()


def _quiet() -> None:
    for name, value in _QUIET_ENV.items():
        os.environ[name] = value  # not setdefault: usage stats stay off even if a user enabled them


def import_ray() -> ModuleType:
    """The ``ray`` module, usage stats off; a :class:`UsageError` naming the extra if absent."""
    _quiet()
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise UsageError(
            f"the Ray backend needs Ray, which is not installed ({exc}); install it with "
            f"{RAY_EXTRA_HINT}, or use backend='local'"
        ) from None


def resolve_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``runtime.ray.address``, else None (start one)."""
    if address is not None:
        if not isinstance(address, str) or not address:
            raise UsageError(
                f"ensure_ray(address={address!r}): must be 'auto', 'host:port', "
                "'ray://host:10001' or None for a local cluster"
            )
        return address
    settings = _settings()
    return settings.runtime.ray.address if settings is not None else None


def _settings() -> Any:
    from dspex.actors._current import current_runtime

    runtime = current_runtime(False)
    if runtime is not None:
        return runtime.settings
    from dspex.config import load_settings

    return load_settings()


def ensure_ray(address: str | None = None) -> None:
    """Connect this process to Ray once: ``address``, else the config's, else a local cluster.

    A no-op when Ray is already initialised (by an earlier call, by a test or
    by the user's own ``ray.init``). Any thread may call it.
    """
    ray = import_ray()
    if ray.is_initialized():
        return
    target = resolve_address(address)
    with _lock:
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"address": target, "logging_level": "WARNING"}
        if target is None or not target.startswith("ray://"):
            options["include_dashboard"] = False  # the Ray Client refuses the option
        try:
            ray.init(**options)
        except ConnectionError as exc:
            raise UsageError(
                f"cannot join the Ray cluster at runtime.ray.address={target!r}: {exc}; start "
                "it with `ray start --head` (or fix the address), or leave the address unset "
                "for a local cluster"
            ) from None
