"""The settings values: plain frozen objects, checked without pydantic on the common path.

``Settings`` and its sections are plain classes (attribute reads at full
speed, no pydantic import). A value is checked here when it is plainly
valid (an int where an int belongs, ``"8"`` from the environment, a known
literal, an ``http://`` URL, ...); anything else (a doubtful or bad value, an
unknown key, a ``models`` table) goes to the pydantic schema in
``_settings`` (imported then), which coerces it exactly as before or raises
the one ``ConfigError`` naming the key, the value, its source and the fix.
So errors and coercions are pydantic's; only the plainly valid skip it.
A process that configures nothing unusual never imports pydantic (about
60 ms on a slow machine, plus tens of ms building validators).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dspex.config._explain import dotted, kwarg_form
from dspex.config._model_id import model_id_problem
from dspex.config._secrets import REDACTED, redact, redact_value
from dspex.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "BudgetSettings",
    "CacheSettings",
    "LMClientSettings",
    "ModelPrice",
    "ModelSettings",
    "RaySettings",
    "RuntimeSettings",
    "Settings",
    "TelemetrySettings",
    "build_settings",
    "deep_merge",
]


class _Slow(Exception):
    """The value is not plainly valid: let the pydantic schema decide."""


Check = Callable[[Any], Any]

_DIGITS = re.compile(r"0|[1-9][0-9]{0,17}")
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?")


def _int(low: int) -> Check:
    def check(value: Any) -> int:
        if type(value) is str and _DIGITS.fullmatch(value):
            value = int(value)
        if type(value) is int and value >= low:
            return value
        raise _Slow

    return check


def _float(low: float, high: float = math.inf, *, open_low: bool = True) -> Check:
    def check(value: Any) -> float:
        if type(value) is str and _DECIMAL.fullmatch(value):
            value = float(value)
        plain = type(value) in (int, float) and math.isfinite(value) and value <= high
        if plain and (value > low or (not open_low and value == low)):
            return float(value)
        raise _Slow

    return check


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _Slow


def _literal(*choices: str) -> Check:
    def check(value: Any) -> str:
        if type(value) is str and value.lower() in choices:
            return value.lower()
        raise _Slow

    return check


def _optional(inner: Check) -> Check:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _url(value: Any) -> str:
    if type(value) is str and value.startswith(("http://", "https://")):
        return value.rstrip("/")
    raise _Slow


def _model_id(value: Any) -> str:
    if type(value) is str and model_id_problem(value) is None:
        return value
    raise _Slow


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    raise _Slow


def _dir(value: Any) -> Path:
    if (type(value) is str and value) or isinstance(value, Path):
        return Path(value).expanduser()
    raise _Slow


def _empty_table(value: Any) -> dict[str, Any]:
    if type(value) is dict and not value:
        return {}
    raise _Slow


def _refuse(value: Any) -> Any:
    raise _Slow


def _section(cls: Callable[[], type[_Section]]) -> Check:
    def check(value: Any) -> _Section:
        kind = cls()
        if isinstance(value, kind):
            return value
        if isinstance(value, Mapping):
            return kind._plainly(dict(value))
        raise _Slow

    return check


class _Section:
    """Base of every settings value: frozen, compared by value, errors as ConfigError.

    ``_fields`` maps each field to its default (a callable default is a
    factory) and ``_checks`` to the plain check; a field without a check is
    always left to pydantic.
    """

    _path: ClassVar[tuple[str, ...]] = ()
    _fields: ClassVar[dict[str, Any]] = {}
    _checks: ClassVar[dict[str, Check]] = {}
    model_fields_set: set[str]

    def __init__(self, /, **data: Any) -> None:
        try:
            values = self._plain_values(data)
        except _Slow:
            values = self._from_schema(data)
        self.__dict__.update(values)

    @classmethod
    def _plainly(cls, data: dict[str, Any]) -> _Section:
        """An instance from ``data`` if every value is plainly valid, else ``_Slow``."""
        made = object.__new__(cls)
        made.__dict__.update(cls._plain_values(data))
        return made

    @classmethod
    def _plain_values(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, default in cls._fields.items():
            if name in data:
                check = cls._checks.get(name, _refuse)
                values[name] = check(data[name])
            else:
                values[name] = default() if callable(default) else default
        if len(data) > len(values) or not all(name in cls._fields for name in data):
            raise _Slow  # an unknown key: pydantic's error names the valid ones
        cls._check_together(values)
        values["model_fields_set"] = set(data)
        return values

    @classmethod
    def _check_together(cls, values: dict[str, Any]) -> None:
        """Checks across fields (plain path); raise ``_Slow`` to let pydantic explain."""

    @classmethod
    def _from_schema(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        checked = _schema(cls)(**{key: _as_data(value) for key, value in data.items()})
        values = {name: _plain(getattr(checked, name)) for name in cls._fields}
        values["model_fields_set"] = set(checked.model_fields_set)
        return values

    @classmethod
    def model_validate(cls, data: Mapping[str, Any]) -> Any:
        """``cls(**data)``, as pydantic spells it."""
        return cls(**data)

    @classmethod
    def _fields_of_schema(cls) -> Any:
        return _schema(cls).model_fields

    def __setattr__(self, name: str, value: Any) -> None:
        path = (*type(self)._path, name)
        raise ConfigError(
            f"{type(self).__name__} is frozen, so {dotted(path)} cannot be assigned. "
            f"Derive new settings instead: settings.merged({kwarg_form(path)}).",
            key=dotted(path),
            value=redact_value(path, value),
        )

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, n) for n in self._fields)))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """The fields as a dict, sections nested; ``mode="json"`` makes it JSON-ready."""
        return {name: _dump(getattr(self, name), mode) for name in self._fields}

    def model_dump_json(self) -> str:
        """``model_dump(mode="json")`` as compact JSON (secrets show as their mask)."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Any:
        """A copy with ``update`` applied, not re-checked (as pydantic's ``model_copy``)."""
        values = dict(self.__dict__)
        if update:
            values.update(update)
            values["model_fields_set"] = set(self.model_fields_set) | set(update)
        return _rebuild(type(self), values)

    def public_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of these settings for logs: every secret is redacted."""
        result: dict[str, Any] = redact(self.model_dump(mode="json"))
        return result


class _SchemaFields:
    """``Cls.model_fields``: the pydantic schema's fields (imports pydantic; docs, tests)."""

    def __get__(self, instance: object, owner: type[_Section]) -> Any:
        return owner._fields_of_schema()


_Section.model_fields = _SchemaFields()  # type: ignore[attr-defined]


def _rebuild(cls: type[_Section], values: dict[str, Any]) -> _Section:
    made = object.__new__(cls)
    made.__dict__.update(values)
    return made


def _schema(cls: type[_Section]) -> type[BaseModel]:
    from dspex.config import _settings

    model: type[BaseModel] = getattr(_settings, cls.__name__)
    return model


def _as_data(value: Any) -> Any:
    """A value handed to the pydantic schema: plain sections become tables."""
    if isinstance(value, _Section):
        return {name: _as_data(getattr(value, name)) for name in value.model_fields_set}
    if isinstance(value, dict):
        return {key: _as_data(item) for key, item in value.items()}
    return value


def _plain(value: Any) -> Any:
    """A value read from a pydantic settings model, its sub-models made plain."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    fields = getattr(type(value), "__pydantic_fields__", None)
    plain_cls = _PLAIN.get(type(value).__name__) if fields is not None else None
    if plain_cls is None:
        return value
    values = {name: _plain(getattr(value, name)) for name in plain_cls._fields}
    values["model_fields_set"] = set(value.model_fields_set)
    return _rebuild(plain_cls, values)


def _dump(value: Any, mode: str) -> Any:
    if isinstance(value, _Section):
        return value.model_dump(mode=mode)
    if isinstance(value, dict):
        return {key: _dump(item, mode) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_dump(item, mode) for item in value]
    if mode == "json":
        if isinstance(value, Path):
            return str(value)
        if callable(getattr(value, "get_secret_value", None)):
            return REDACTED
    return value


class LMClientSettings(_Section):
    """Defaults for every LM client actor: retries, timeouts, breaker, rate limits, HTTP."""

    _path = ("lm_client",)
    _fields = {
        "num_retries": 3,
        "timeout": 60.0,
        "backoff_base": 0.25,
        "backoff_max": 30.0,
        "rpm": None,
        "tpm": None,
        "breaker_failure_threshold": 5,
        "breaker_reset_timeout": 30.0,
        "max_in_flight": 512,
        "api_base": None,
        "transport": "auto",
        "max_response_bytes": 32 * 1024 * 1024,
    }
    _checks = {
        "num_retries": _int(0),
        "timeout": _float(0),
        "backoff_base": _float(0),
        "backoff_max": _float(0),
        "rpm": _optional(_int(1)),
        "tpm": _optional(_int(1)),
        "breaker_failure_threshold": _int(1),
        "breaker_reset_timeout": _float(0),
        "max_in_flight": _int(1),
        "api_base": _optional(_url),
        "transport": _literal("auto", "h11", "httpx"),
        "max_response_bytes": _int(1),
    }
    num_retries: int
    timeout: float
    backoff_base: float
    backoff_max: float
    rpm: int | None
    tpm: int | None
    breaker_failure_threshold: int
    breaker_reset_timeout: float
    max_in_flight: int
    api_base: str | None
    transport: Literal["auto", "h11", "httpx"]
    max_response_bytes: int

    @classmethod
    def _check_together(cls, values: dict[str, Any]) -> None:
        if values["backoff_max"] < values["backoff_base"]:
            raise _Slow


class ModelPrice(_Section):
    """A model's price in USD per million tokens (overrides the genai-prices table)."""

    _path = ("models", "<model>", "price")
    _fields = {"input": None, "output": None}
    input: float
    output: float

    @classmethod
    def _plain_values(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        raise _Slow  # both fields are required: pydantic checks and explains


class ModelSettings(_Section):
    """Per-model overrides of ``lm_client`` plus the model's key and extra request params.

    Rare enough that every value goes through the pydantic schema.
    """

    _path = ("models", "<model>")
    _fields = {
        "api_base": None,
        "api_key": None,
        "rpm": None,
        "tpm": None,
        "num_retries": None,
        "timeout": None,
        "params": dict,
        "fallbacks": list,
        "fallback_on_timeout": False,
        "price": None,
    }
    api_base: str | None
    api_key: Any  # a pydantic SecretStr
    rpm: int | None
    tpm: int | None
    num_retries: int | None
    timeout: float | None
    params: dict[str, Any]
    fallbacks: list[str]
    fallback_on_timeout: bool
    price: ModelPrice | None


class CacheSettings(_Section):
    """The LM response cache: a memory LRU in front of an on-disk SQLite tier."""

    _path = ("cache",)
    _fields = {
        "enabled": True,
        "memory_enabled": True,
        "disk_enabled": True,
        "dir": lambda: Path("~/.dspex_cache").expanduser(),
        "memory_max_entries": 100_000,
        "disk_max_bytes": 1 << 30,
    }
    _checks = {
        "enabled": _bool,
        "memory_enabled": _bool,
        "disk_enabled": _bool,
        "dir": _dir,
        "memory_max_entries": _int(1),
        "disk_max_bytes": _int(1),
    }
    enabled: bool
    memory_enabled: bool
    disk_enabled: bool
    dir: Path
    memory_max_entries: int
    disk_max_bytes: int


class TelemetrySettings(_Section):
    """Structured log output, the LM history ring and latency sampling."""

    _path = ("telemetry",)
    _fields = {
        "format": "console",
        "level": "warning",
        "history_size": 200,
        "latency_window": 1024,
        "otel": False,
    }
    _checks = {
        "format": _literal("json", "console", "off"),
        "level": _literal("debug", "info", "warning", "error", "critical"),
        "history_size": _int(1),
        "latency_window": _int(1),
        "otel": _bool,
    }
    format: Literal["json", "console", "off"]
    level: Literal["debug", "info", "warning", "error", "critical"]
    history_size: int
    latency_window: int
    otel: bool


class BudgetSettings(_Section):
    """A runtime-wide spending limit: once spent, no new LM call starts."""

    _path = ("budget",)
    _fields = {"max_cost_usd": None, "max_tokens": None}
    _checks = {"max_cost_usd": _optional(_float(0)), "max_tokens": _optional(_int(1))}
    max_cost_usd: float | None
    max_tokens: int | None


class RaySettings(_Section):
    """Where the Ray backend's work goes (``runtime.backend = "ray"``; needs ``dspex[ray]``)."""

    _path = ("runtime", "ray")
    _fields = {"address": None, "workers": None, "max_restarts": 3}
    _checks = {
        "address": _optional(_text),
        "workers": _optional(_int(1)),
        "max_restarts": _int(0),
    }
    address: str | None
    workers: int | None
    max_restarts: int


class RuntimeSettings(_Section):
    """The supervision tree: run bounds, timeouts and the root's restart intensity."""

    _path = ("runtime",)
    _fields = {
        "max_runs": 1024,
        "run_start_timeout": 5.0,
        "shutdown_timeout": 5.0,
        "max_restarts": 3,
        "max_seconds": 5.0,
        "warm_runs": 0,
        "spare_threads": 256,
        "backend": "local",
        "ray": RaySettings,
    }
    _checks = {
        "max_runs": _int(1),
        "run_start_timeout": _float(0),
        "shutdown_timeout": _float(0),
        "max_restarts": _int(0),
        "max_seconds": _float(0),
        "warm_runs": _int(0),
        "spare_threads": _int(0),
        "backend": _literal("local", "ray"),
        "ray": _section(lambda: RaySettings),
    }
    max_runs: int
    run_start_timeout: float
    shutdown_timeout: float
    max_restarts: int
    max_seconds: float
    warm_runs: int
    spare_threads: int
    backend: Literal["local", "ray"]
    ray: RaySettings


class Settings(_Section):
    """Everything the runtime needs; frozen, so a snapshot can cross threads.

    Build it with :func:`~dspex.config.load_settings` (TOML file, ``DSPEX_*``
    environment, keyword arguments) and derive variants with :meth:`merged`.
    """

    _fields = {
        "lm": None,
        "adapter": None,
        "temperature": None,
        "max_tokens": None,
        "track_usage": False,
        "lm_client": LMClientSettings,
        "models": dict,
        "cache": CacheSettings,
        "telemetry": TelemetrySettings,
        "runtime": RuntimeSettings,
        "budget": BudgetSettings,
    }
    _checks = {
        "lm": _optional(_model_id),
        "adapter": _optional(_literal("chat", "json", "xml")),
        "temperature": _optional(_float(0, 2, open_low=False)),
        "max_tokens": _optional(_int(1)),
        "track_usage": _bool,
        "lm_client": _section(lambda: LMClientSettings),
        "models": _empty_table,
        "cache": _section(lambda: CacheSettings),
        "telemetry": _section(lambda: TelemetrySettings),
        "runtime": _section(lambda: RuntimeSettings),
        "budget": _section(lambda: BudgetSettings),
    }
    lm: str | None
    adapter: Literal["chat", "json", "xml"] | None
    temperature: float | None
    max_tokens: int | None
    track_usage: bool
    lm_client: LMClientSettings
    models: dict[str, ModelSettings]
    cache: CacheSettings
    telemetry: TelemetrySettings
    runtime: RuntimeSettings
    budget: BudgetSettings

    def merged(self, **overrides: Any) -> Settings:
        """A new Settings with ``overrides`` deep-merged over these, re-validated.

        Overrides are nested dicts or sub-models (only a sub-model's explicitly
        set fields count). Unchanged groups are reused, not re-validated.
        """
        if not overrides:
            return self
        return Settings(**deep_merge(_fields(self), overrides))

    def lm_client_for(self, model: str) -> LMClientSettings:
        """``lm_client`` with the per-model overrides of ``models[model]`` applied."""
        entry = self.models.get(model)
        if entry is None:
            return self.lm_client
        shared = ("api_base", "num_retries", "timeout", "rpm", "tpm")
        updates = {name: getattr(entry, name) for name in shared}
        updates = {name: value for name, value in updates.items() if value is not None}
        if not updates:
            return self.lm_client
        copied: LMClientSettings = self.lm_client.model_copy(update=updates)
        return copied


_PLAIN: dict[str, type[_Section]] = {
    cls.__name__: cls
    for cls in (
        LMClientSettings,
        ModelPrice,
        ModelSettings,
        CacheSettings,
        TelemetrySettings,
        BudgetSettings,
        RaySettings,
        RuntimeSettings,
        Settings,
    )
}


def _fields(section: _Section) -> dict[str, Any]:
    return {name: getattr(section, name) for name in section._fields}


def _as_override(value: Any) -> Any:
    """A sub-model given as an override contributes only the fields it set."""
    if isinstance(value, _Section):
        return {name: getattr(value, name) for name in value.model_fields_set}
    return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base``, recursing where both sides are tables.

    Values of ``base`` may be settings sections (expanded only where an
    override reaches into them); scalars and lists in ``override`` replace.
    """
    out = dict(base)
    for key, raw in override.items():
        new = _as_override(raw)
        if not isinstance(new, Mapping):
            out[key] = new
            continue
        old = out.get(key)
        if isinstance(old, _Section):
            out[key] = deep_merge(_fields(old), new)
        elif isinstance(old, Mapping):
            out[key] = deep_merge(old, new)
        else:
            out[key] = deep_merge({}, new)
    return out


def build_settings(data: Mapping[str, Any]) -> Settings:
    """``Settings(**data)``: plainly valid data is checked here, the rest by pydantic."""
    return Settings(**data)
