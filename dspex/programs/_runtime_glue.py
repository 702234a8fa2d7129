"""The DSPy-style entry points that tie programs to the runtime.

``configure``/``context`` keep DSPy's semantics (program settings such as the
LM object and adapter live in the in-process settings holder, and context
overrides travel into run actors with the caller's contextvars); runtime
settings (temperature, cache, telemetry...) are validated by the current
Runtime's ConfigServer. ``configure`` starts the default runtime lazily and
works from any thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# LM is light (the LM protocol types only); the Runtime and everything it
# starts load on first use, keeping `dspex.Predict` cheap to import.
from dspex.actors._lm._model import LM
from dspex.programs._runtime_access import current_runtime
from dspex.programs._settings import (
    DEFAULTS,
    check_program_settings,
    install_caller_hooks,
    settings,
)

if TYPE_CHECKING:
    from dspex.actors import Runtime
    from dspex.supervision import TreeNode

__all__ = ["configure", "configure_cache", "inspect_history", "start"]

# Keys of dspex.config.Settings that configure() forwards to the runtime.
_RUNTIME_KEYS = frozenset(
    {"temperature", "max_tokens", "lm_client", "models", "cache", "telemetry", "runtime"}
)


def install_backends() -> None:
    """Register the programs layer's serve backends and tree sources (idempotent).

    ``ray`` only names a factory here: the Ray modules (and ray itself) load when
    a server is served on it or the pool's branch is first asked for.
    """
    from dspex.actors._remote import register_serve_backend, register_tree_source

    register_serve_backend("ray", _ray_servers)
    register_tree_source(RAY_POOL_BRANCH, _ray_pool_branch)  # the pool's workers, while running


RAY_POOL_BRANCH = "ray-pool"


def _ray_servers(runtime: Any) -> Any:
    """The ``"ray"`` serve backend's factory: the runtime's ``RayServers``."""
    from dspex.programs._ray._serve import ray_servers

    return ray_servers(runtime)


def _ray_pool_branch(timeout: float) -> TreeNode | None:
    """The Ray pool's workers for ``rt.tree()``; None while no crew runs."""
    from dspex.programs._ray._tree import pool_branch

    return pool_branch(timeout)


def _as_lm(value: Any) -> Any:
    return LM(value) if isinstance(value, str) else value


def start(
    lm: Any = None,
    config: str | os.PathLike[str] | None = None,
    *,
    clock: Any = None,
    **settings_kwargs: Any,
) -> Runtime:
    """Start a Runtime (also a context manager): ``with dspex.start(lm=...) as rt:``.

    ``lm`` is a model id or an ``LM``; ``config`` a TOML file. Settings come
    from kwargs > ``DSPEX_*`` environment > the TOML file > defaults. The LM,
    if given, becomes the default LM of programs (as ``configure(lm=...)``).
    """
    from dspex.actors import Runtime
    from dspex.config import load_settings

    if isinstance(lm, str):
        settings_kwargs["lm"] = lm
    adapter = settings_kwargs.pop("adapter", None)
    # "lm" is a program setting too, but a model id goes to the runtime settings
    # first and comes back below as an LM object (never as the bare string).
    program_keys = {
        k: settings_kwargs.pop(k) for k in list(settings_kwargs) if k in DEFAULTS and k != "lm"
    }
    check_program_settings(program_keys, "dspex.start")  # before anything starts
    loaded = load_settings(Path(config) if config is not None else None, **settings_kwargs)
    install_caller_hooks()  # before its first call can run
    install_backends()
    runtime = Runtime(loaded, clock=clock).start()
    lm_obj = lm if lm is not None and not isinstance(lm, str) else None
    if lm_obj is None and loaded.lm:
        lm_obj = LM(loaded.lm)
    if lm_obj is not None:
        program_keys["lm"] = lm_obj
    if adapter is not None:
        program_keys["adapter"] = _adapter(adapter)
    if program_keys:
        settings.configure(**program_keys)
    return runtime


def _adapter(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    import dspex.programs._adapters as adapters  # XMLAdapter loads xml only when named

    table = {"chat": "ChatAdapter", "json": "JSONAdapter", "xml": "XMLAdapter"}
    try:
        return getattr(adapters, table[value.lower()])()
    except KeyError:
        from dspex.errors import ConfigError

        raise ConfigError(
            f"adapter={value!r}: use one of {sorted(table)} or an Adapter instance",
            key="adapter",
            value=value,
        ) from None


def configure(**kwargs: Any) -> None:
    """Set global settings, DSPy-style: ``dspex.configure(lm=dspex.LM(...), adapter=...)``.

    Works from any thread. Starts the default runtime if none is running.
    Runtime settings (temperature, max_tokens, cache, telemetry, lm_client,
    runtime, models) are validated and raise ``ConfigError`` on bad values.
    """
    runtime_keys = {k: kwargs.pop(k) for k in list(kwargs) if k in _RUNTIME_KEYS}
    check_program_settings(kwargs, "dspex.configure")  # before a runtime starts for it
    if "lm" in kwargs:
        kwargs["lm"] = _as_lm(kwargs["lm"])
    if "adapter" in kwargs and kwargs["adapter"] is not None:
        kwargs["adapter"] = _adapter(kwargs["adapter"])
    install_backends()
    runtime = current_runtime()
    if runtime_keys:
        runtime.configure(**runtime_keys)
    if kwargs:
        settings.configure(**kwargs)


def inspect_history(n: int = 1, file: TextIO | None = None) -> str:
    """Print (and return) the last ``n`` LM calls from the runtime's bounded history.

    Every LM's calls are there (``dspex.LM``, ``DummyLM``, a custom LM), unless
    made with ``disable_history=True``. With no runtime running there is no
    history: nothing is printed and "" returned.
    """
    runtime = current_runtime(start=False)
    if runtime is None:
        return ""
    return runtime.inspect_history(n, file)


def configure_cache(
    enable_disk_cache: bool | None = None,
    enable_memory_cache: bool | None = None,
    disk_cache_dir: str | os.PathLike[str] | None = None,
    disk_size_limit_bytes: int | None = None,
    memory_max_entries: int | None = None,
    **unsupported: Any,
) -> Mapping[str, Any]:
    """DSPy's ``configure_cache``: reshape the current runtime's response cache.

    Returns the validated cache settings now in effect.
    """
    if unsupported:
        from dspex.errors import ConfigError

        name = sorted(unsupported)[0]
        raise ConfigError(
            f"configure_cache({name}=...): not supported; use enable_disk_cache, "
            "enable_memory_cache, disk_cache_dir, disk_size_limit_bytes, memory_max_entries",
            key=name,
            value=unsupported[name],
        )
    cache: dict[str, Any] = {}
    if enable_disk_cache is not None:
        cache["disk_enabled"] = enable_disk_cache
    if enable_memory_cache is not None:
        cache["memory_enabled"] = enable_memory_cache
    if disk_cache_dir is not None:
        cache["dir"] = Path(disk_cache_dir)
    if disk_size_limit_bytes is not None:
        cache["disk_max_bytes"] = disk_size_limit_bytes
    if memory_max_entries is not None:
        cache["memory_max_entries"] = memory_max_entries
    runtime = current_runtime()
    new = runtime.configure(cache=cache) if cache else runtime.settings  # rebuilds the store
    return new.cache.public_dict()
