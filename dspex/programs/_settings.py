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
"""

from __future__ import annotations

import threading
from collections import ChainMap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from dspex.actors._callbacks import (
    check_callbacks,
    reset_scoped_callbacks,
    scope_callbacks,
    set_global_callbacks,
)
from dspex.errors import UsageError

__all__ = ["DEFAULTS", "Settings", "configure", "context", "current_settings", "settings"]

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
        "max_history_size": 10_000,
        "provide_traceback": False,
        "warn_on_type_mismatch": True,
    }
)

_overrides: ContextVar[Mapping[str, Any] | None] = ContextVar("dspex_settings", default=None)


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
        layered = _overrides.get()
        if layered is None:
            return self._global
        return ChainMap(layered, self._global)  # type: ignore[arg-type]

    def configure(self, **kwargs: Any) -> None:
        """Set global settings (visible to every thread not overriding them)."""
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
        scoped = None
        if "callbacks" in kwargs:
            check_callbacks(kwargs["callbacks"], "dspex.context")
            scoped = scope_callbacks(kwargs["callbacks"])
        outer = _overrides.get()
        layered = dict(outer) if outer is not None else {}
        layered.update(kwargs)
        token = _overrides.set(MappingProxyType(layered))
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
        return self.current().get(key, default)

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
        return self.current()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.current()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        current = self.current()
        if name in current:
            return current[name]
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


def current_settings() -> Mapping[str, Any]:
    """The settings in effect for the caller (read-only mapping)."""
    return settings.current()


def configure(**kwargs: Any) -> None:
    """Set global settings, e.g. ``dspex.configure(lm=lm, adapter=ChatAdapter())``."""
    settings.configure(**kwargs)


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
