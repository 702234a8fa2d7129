"""The in-process settings holder behind ``dspex.configure`` / ``dspex.context``.

Global settings are an immutable mapping replaced wholesale under a lock
(copy-on-write), so readers never lock. ``context(**overrides)`` layers
overrides through a ``contextvars.ContextVar``: they apply to the current
thread or task only and end with the ``with`` block.

Everything else reads settings through :func:`current_settings` (or the
``settings`` object's attributes); a later issue moves the global layer onto
the ConfigServer actor behind this same interface. The ``callbacks`` setting
is also mirrored into ``dspex.actors._callbacks``, where every observed call
reads it cheaply (and where ``dspex.LM``, below this layer, can see it).
The actors layer reads two more settings through hooks installed from here
(:func:`install_caller_hooks`): never at import, but when a runtime starts.
Settings that no call could use (``num_threads=-1``) are refused when set.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from dspex.actors._async_pool import set_worker_limit
from dspex.actors._callbacks import (
    check_callbacks,
    reset_scoped_callbacks,
    scope_callbacks,
    set_global_callbacks,
)
from dspex.actors._lm._model import set_scoped_params
from dspex.actors._server_stream import set_stream_opener
from dspex.actors._telemetry_emitter import set_history_gate
from dspex.errors import UsageError
from dspex.programs._usage import current_usage_tracker

__all__ = [
    "DEFAULTS",
    "Settings",
    "check_num_threads",
    "check_program_settings",
    "configure",
    "context",
    "current_settings",
    "install_caller_hooks",
    "settings",
]

DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "lm": None,
        "adapter": None,
        "rm": None,
        "trace": None,
        "callbacks": (),
        "max_trace_size": 10_000,
        "max_errors": 10,
        "num_threads": 8,
        "async_max_workers": 8,
        "track_usage": False,
        "disable_history": False,
        "provide_traceback": False,
        "warn_on_type_mismatch": True,
        # Read by DSPy programs and extensions; dspex accepts and returns them.
        "branch_idx": 0,
        "send_stream": None,
        "stream_listeners": (),
        "usage_tracker": None,  # None here: the tracker of an active track_usage() is returned
        "caller_predict": None,
        "caller_modules": None,
        "allow_tool_async_sync_conversion": False,
        "max_history_size": 10_000,
        "interpreter_factory": None,
    }
)


class _Overlay:
    """The ``context()`` overrides in effect, with their merge over a global layer.

    ``merged`` is ``(global layer, overrides over it)``, built on the first read
    and again once ``configure`` replaces the global layer: the settings in
    effect become one read-only dict, read at dict speed (a ChainMap's lookups
    cost a few microseconds per Predict call). Any thread may rebuild it; the
    tuple is replaced whole.
    """

    __slots__ = ("layered", "merged")

    def __init__(self, layered: Mapping[str, Any]) -> None:
        self.layered = layered
        self.merged: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None


_overrides: ContextVar[_Overlay | None] = ContextVar("dspex_settings", default=None)


class Settings:
    """Process-wide settings with per-context overrides, read as attributes.

    ``settings.lm`` / ``settings["lm"]`` read the value in effect for the
    calling thread; ``configure(**kw)`` changes the global layer;
    ``context(**kw)`` overrides for the body of a ``with`` block.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._global: Mapping[str, Any] = MappingProxyType(dict(DEFAULTS))

    def current(self) -> Mapping[str, Any]:
        """The settings in effect here: context overrides over the global layer."""
        overlay = _overrides.get()
        if overlay is None:
            return self._global
        base = self._global
        merged = overlay.merged
        if merged is None or merged[0] is not base:
            merged = overlay.merged = (base, MappingProxyType({**base, **overlay.layered}))
        return merged[1]

    def configure(self, **kwargs: Any) -> None:
        """Set global settings (visible to every thread not overriding them)."""
        check_program_settings(kwargs, "dspex.configure")
        if not _hooks_installed and _HOOKED_KEYS & kwargs.keys():
            install_caller_hooks()
        callbacks = "callbacks" in kwargs
        if callbacks:
            check_callbacks(kwargs["callbacks"], "dspex.configure")
        with self._lock:
            merged = dict(self._global)
            merged.update(kwargs)
            self._global = MappingProxyType(merged)
            if callbacks:
                set_global_callbacks(kwargs["callbacks"])

    @contextmanager
    def context(self, **kwargs: Any) -> Iterator[None]:
        """Override settings for the current thread/task inside a ``with`` block."""
        _check_request_params(kwargs)
        check_program_settings(kwargs, "dspex.context")
        if not _hooks_installed and _HOOKED_KEYS & kwargs.keys():
            install_caller_hooks()  # a dspex.LM called outside any program reads these too
        scoped = None
        if "callbacks" in kwargs:
            check_callbacks(kwargs["callbacks"], "dspex.context")
            scoped = scope_callbacks(kwargs["callbacks"])
        outer = _overrides.get()
        layered = dict(outer.layered) if outer is not None else {}
        layered.update(kwargs)
        token = _overrides.set(_Overlay(MappingProxyType(layered)))
        try:
            yield
        finally:
            _overrides.reset(token)
            if scoped is not None:
                reset_scoped_callbacks(scoped)

    def reset(self) -> None:
        """Restore the global defaults (for tests and teardown)."""
        with self._lock:
            self._global = MappingProxyType(dict(DEFAULTS))
            set_global_callbacks(DEFAULTS["callbacks"])

    def get(self, key: str, default: Any = None) -> Any:
        current = self.current()
        if key in current:
            return _live(key, current[key])
        return default

    def copy(self) -> dict[str, Any]:
        """A plain-dict snapshot of the settings in effect (DSPy's ``settings.copy()``).

        ``dspex.configure(**snapshot)`` later restores them.
        """
        return dict(self.current())

    @property
    def config(self) -> dict[str, Any]:
        """A plain-dict snapshot of the settings in effect."""
        return dict(self.current())

    def __getitem__(self, key: str) -> Any:
        return _live(key, self.current()[key])

    def __contains__(self, key: object) -> bool:
        return key in self.current()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        current = self.current()
        if name in current:
            return _live(name, current[name])
        raise AttributeError(
            f"no setting named {name!r}; known settings: {sorted(current)}. "
            f"Set it with dspex.configure({name}=...)"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(
                f"settings are read-only attributes; use dspex.configure({name}=...) "
                f"or `with dspex.context({name}=...)`"
            )

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.current().items() if v not in (None, (), [])}
        return f"Settings({shown})"


settings = Settings()


def _live(key: str, value: Any) -> Any:
    # dspex keeps the active usage tracker in its own context variable (track_usage);
    # DSPy programs read it as settings.usage_tracker.
    if key == "usage_tracker" and value is None:
        return current_usage_tracker()
    return value


def current_settings() -> Mapping[str, Any]:
    """The settings in effect for the caller (read-only mapping)."""
    return settings.current()


def configure(**kwargs: Any) -> None:
    """Set global settings, e.g. ``dspex.configure(lm=lm, adapter=ChatAdapter())``."""
    settings.configure(**kwargs)


# -- what the actors layer reads here -------------------------------------------------
#
# dspex.LM and the telemetry emitter (actors layer) must see two program
# settings in effect in the caller's thread, but may not import this layer:
# they call hooks installed from here. Installing is not done at import (an
# import has no side effects) but when a runtime is started or reached for a
# program call (``start``, ``_runtime_access.current_runtime``), or when a
# setting the hooks read is first set.

_SCOPED_REQUEST_KEYS = ("temperature", "max_tokens")
_HOOKED_KEYS = frozenset({*_SCOPED_REQUEST_KEYS, "disable_history"})
_hooks_installed = False
_hooks_lock = threading.Lock()


def scoped_request_params() -> Mapping[str, Any] | None:
    """``dspex.context(temperature=..., max_tokens=...)`` overrides in effect here, if any.

    Runs in the calling thread on every ``dspex.LM`` call.
    """
    current = settings.current()
    found = {k: current[k] for k in _SCOPED_REQUEST_KEYS if current.get(k) is not None}
    return found or None


def history_disabled() -> bool:
    """DSPy's ``disable_history`` in effect here (runs once per LM call).

    Reads the context layer, then the global one, directly: building
    ``settings.current()``'s merged view would cost more than these two lookups.
    """
    overlay = _overrides.get()
    if overlay is not None and "disable_history" in overlay.layered:
        return bool(overlay.layered["disable_history"])
    return bool(settings._global.get("disable_history"))


def worker_limit() -> int:
    """``async_max_workers`` in effect here; a UsageError naming it when it is not an int >= 1.

    Read in the caller's thread for each call handed to dspex's async worker threads.
    """
    limit = current_settings().get("async_max_workers")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(
            f"async_max_workers={limit!r}: must be an int >= 1 (threads for async calls), "
            "e.g. dspex.configure(async_max_workers=8)"
        )
    return limit


def install_caller_hooks() -> None:
    """Install :func:`scoped_request_params`, :func:`history_disabled`, the
    served-program stream opener and :func:`worker_limit` in the actors layer
    (idempotent, any thread).
    They stay for the process's life."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        set_scoped_params(scoped_request_params)
        set_history_gate(history_disabled)
        set_stream_opener(_stream_served)
        set_worker_limit(worker_limit)
        _hooks_installed = True


def _stream_served(runtime: Any, name: str, inputs: Mapping[str, Any]) -> AsyncIterator[Any]:
    """``rt.stream``'s opener; the streaming modules load on the first stream."""
    from dspex.programs._stream_serve import stream_served

    return stream_served(runtime, name, inputs)


def check_num_threads(value: Any, where: str) -> int:
    """``value`` if it is an int >= 1, else a UsageError naming ``where`` and the fix."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"{where}(num_threads={value!r}): must be an int >= 1 (the number of examples "
            "run at once), e.g. num_threads=16"
        )
    return value


def check_program_settings(values: Mapping[str, Any], where: str) -> None:
    """Refuse program settings no later call could use, when they are set.

    ``where`` names the call for the message, e.g. ``"dspex.configure"``.
    None leaves a setting to its default.
    """
    for key in ("num_threads", "async_max_workers"):
        value = values.get(key)
        if value is not None:
            if key == "num_threads":
                check_num_threads(value, where)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(
                    f"{where}({key}={value!r}): must be an int >= 1 (threads for async calls), "
                    f"e.g. {key}=8"
                )
    max_errors = values.get("max_errors")
    if max_errors is not None and (
        isinstance(max_errors, bool) or not isinstance(max_errors, int | float) or max_errors < 0
    ):
        raise UsageError(
            f"{where}(max_errors={max_errors!r}): must be a number >= 0 (stop after that many "
            "failed examples), e.g. max_errors=10, or float('inf') to never stop"
        )


def _check_request_params(kwargs: dict[str, Any]) -> None:
    """Refuse override values a provider would reject, before any call is made.

    The same bounds as the runtime's ``temperature`` and ``max_tokens``
    settings; None clears an override.
    """
    temperature = kwargs.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise UsageError(
            f"dspex.context(temperature={temperature!r}): use a number from 0 to 2, "
            "e.g. temperature=0.7"
        )
    max_tokens = kwargs.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise UsageError(
            f"dspex.context(max_tokens={max_tokens!r}): use an int >= 1, e.g. max_tokens=512"
        )


def context(**kwargs: Any) -> Any:
    """Override settings inside a ``with`` block, e.g. ``with dspex.context(lm=lm2):``."""
    return settings.context(**kwargs)
