"""Loading settings from a TOML file, ``DSPEX_*`` variables and keyword arguments.

Precedence, highest first: keyword arguments > environment > TOML file >
defaults. The sources are deep-merged into one table, validated once, and a
failure becomes a ``ConfigError`` that names the dotted key, the (redacted)
value, the source it came from and how to fix it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from dspex.config._secrets import REDACTED, is_secret_path, redact_value
from dspex.config._settings import Settings, deep_merge
from dspex.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_core import ErrorDetails

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "config_error",
    "dotted",
    "env_var_name",
    "kwarg_form",
    "load_settings",
]

ENV_PREFIX = "DSPEX_"
CONFIG_ENV_VAR = "DSPEX_CONFIG"
"""Names the TOML file to load when ``config`` is not passed."""

KWARGS = "keyword argument"


@dataclass(frozen=True)
class Provenance:
    """Which source set each setting path (the last one wins), and the file's name."""

    labels: dict[tuple[str, ...], str] = field(default_factory=dict)
    config_file: str | None = None

    def source_of(self, path: tuple[str, ...]) -> str:
        for end in range(len(path), 0, -1):
            label = self.labels.get(path[:end])
            if label is not None:
                return label
        return KWARGS


# Set only while load_settings validates; outside it every value is a keyword argument.
_PROVENANCE: ContextVar[Provenance | None] = ContextVar("dspex_config_provenance", default=None)


def load_settings(
    config: str | Path | None = None, *, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build validated :class:`Settings` from defaults, a TOML file, env vars and kwargs.

    Precedence, highest first: ``**overrides`` > ``DSPEX_*`` environment >
    the TOML file > built-in defaults. Sources are deep-merged, so a kwarg
    ``cache={"dir": ...}`` changes only ``cache.dir``.

    ``config`` is the TOML file; when None, the file named by ``DSPEX_CONFIG``
    is read, if set. ``env`` defaults to ``os.environ``. Nested env keys use a
    double underscore (``DSPEX_CACHE__DIR``); values are parsed as JSON when
    they start with ``{`` or ``[``, ``null``/``none``/empty mean None, and the
    schema coerces the rest (``"3"`` -> 3, ``"true"`` -> True). Overrides are
    scalars, nested dicts or settings sub-models; ``None`` is a value, not
    "unset". Every failure raises ``ConfigError`` naming the key and source.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    given = config not in (None, "")
    path = config if given else environ.get(CONFIG_ENV_VAR) or None
    provenance = Provenance(config_file=None if path is None else str(path))
    layers: list[dict[str, Any]] = []

    if path is not None:
        named_by = "" if given else f" (named by {CONFIG_ENV_VAR})"
        file_data = read_toml(Path(path), named_by=named_by)
        _record(provenance, file_data, (), f"file {path}")
        layers.append(file_data)

    layers.append(settings_from_env(environ, provenance))

    kwargs = deep_merge({}, overrides)
    _record(provenance, kwargs, (), KWARGS)
    layers.append(kwargs)

    data: dict[str, Any] = {}
    for layer in layers:
        data = deep_merge(data, layer)
    token = _PROVENANCE.set(provenance)
    try:
        return Settings(**data)
    finally:
        _PROVENANCE.reset(token)


def _record(
    provenance: Provenance, data: Mapping[str, Any], prefix: tuple[str, ...], label: str
) -> None:
    for key, value in data.items():
        path = (*prefix, str(key))
        provenance.labels[path] = label
        if isinstance(value, Mapping):
            _record(provenance, value, path, label)


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def read_toml(path: Path, *, named_by: str = "") -> dict[str, Any]:
    """The tables of a TOML settings file; ``ConfigError`` if it is missing or invalid."""
    path = path.expanduser()
    where = f"config file {path}{named_by}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{where} does not exist. Pass the path of an existing TOML file as "
            f"config=... (or in {CONFIG_ENV_VAR}), or leave it out to use the defaults.",
            key="config",
            value=str(path),
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{where} cannot be read: {exc.strerror}. Pass a readable TOML file.",
            key="config",
            value=str(path),
        ) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {exc.start}). Save it as UTF-8.",
            key="config",
            value=str(path),
        ) from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table
        raise ConfigError(
            f"{where} nests its arrays or tables more deeply than Python can read; "
            "settings are a few levels deep, so the file is damaged or not a dspex config. "
            "Fix it, or pass another file.",
            key="config",
            value=str(path),
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        reason = str(exc)
        match = _TOML_POSITION.search(reason)
        at = ""
        if match:
            reason = reason[: match.start()]
            at = f" at line {match.group(1)}, column {match.group(2)}"
        raise ConfigError(
            f"{where} is not valid TOML{at}: {reason}. Fix the syntax there "
            "(strings need quotes; tables look like [cache]).",
            key="config",
            value=str(path),
        ) from exc


def env_var_name(path: tuple[str, ...]) -> str:
    """The ``DSPEX_*`` variable that sets a dotted path (models take JSON)."""
    if path and path[0] == "models":
        return f"{ENV_PREFIX}MODELS (a JSON object)"
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def _parse_env_value(name: str, path: tuple[str, ...], raw: str) -> Any:
    text = raw.strip()
    if text.lower() in ("", "null", "none"):
        return None
    if text[0] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            shown = REDACTED if is_secret_path(path) or path[0] == "models" else raw
            raise ConfigError(
                f"environment variable {name} is not valid JSON ({exc.msg} at character "
                f"{exc.pos}). Set it to a JSON "
                f"{'object' if text[0] == '{' else 'array'}, or unset it.",
                key=".".join(path),
                value=shown,
            ) from exc
    return raw


def settings_from_env(environ: Mapping[str, str], provenance: Provenance) -> dict[str, Any]:
    """The ``DSPEX_*`` variables of ``environ`` as a nested table.

    Shallow variables apply before deeper ones, so ``DSPEX_CACHE__DIR`` wins
    over a ``dir`` inside a JSON ``DSPEX_CACHE``.
    """
    entries: list[tuple[tuple[str, ...], str]] = []
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV_VAR:
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        if not all(path):
            raise ConfigError(
                f"environment variable {name} is not a setting name: parts are joined by "
                "exactly two underscores, e.g. DSPEX_CACHE__DIR. Rename or unset it.",
                key=name,
            )
        entries.append((path, name))
    entries.sort(key=lambda entry: (len(entry[0]), entry[1]))

    data: dict[str, Any] = {}
    for path, name in entries:
        value = _parse_env_value(name, path, environ[name])
        table = data
        for part in path[:-1]:
            if not isinstance(table.get(part), dict):
                table[part] = {}
            table = table[part]
        table[path[-1]] = value
        label = f"environment variable {name}"
        provenance.labels[path] = label
        if isinstance(value, Mapping):
            _record(provenance, value, path, label)
    return data


def config_error(exc: ValidationError, model_path: tuple[str, ...]) -> ConfigError:
    """The one translation of a pydantic ``ValidationError`` into a ``ConfigError``.

    ``model_path`` is where the failing model sits in ``Settings``. The sources
    recorded by a running :func:`load_settings` say where each value came from;
    outside it, values are keyword arguments.
    """
    provenance = _PROVENANCE.get() or Provenance()
    problems = [_problem(err, model_path, provenance) for err in exc.errors(include_url=False)]
    key, value, text = problems[0]
    if len(problems) > 1:
        text += f"\nAlso {len(problems) - 1} more problem(s):"
        text += "".join(f"\n  - {more}" for _, _, more in problems[1:])
    return ConfigError(text, key=key, value=value)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dotted(path: tuple[str, ...]) -> str:
    """A setting path as a dotted key; odd segments (model ids) are quoted."""
    return ".".join(part if _IDENTIFIER.fullmatch(part) else json.dumps(part) for part in path)


def _problem(
    err: ErrorDetails, model_path: tuple[str, ...], provenance: Provenance
) -> tuple[str, Any, str]:
    loc = tuple(str(part) for part in err["loc"])
    bad_key = "[key]" in loc
    path = model_path + tuple(part for part in loc if part != "[key]")
    key = dotted(path)
    value = redact_value(path, err.get("input"))
    if path[:1] == ("models",) and len(path) <= 2 and isinstance(value, str) and not bad_key:
        value = REDACTED  # a bare string where a model's table belongs is likely its key
    source = provenance.source_of(path)
    if err["type"] == "extra_forbidden":
        return key, value, _unknown_key_text(path, source)
    expected, requirement = _expectation(err)
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    if bad_key:
        text = f"{key}: the key {shown} {expected} (from {source}). Rename it to {requirement}."
        return key, value, text
    fix = _fix(path, requirement, source, provenance.config_file)
    return key, value, f"{key} = {shown}: {expected} (from {source}). {fix}"


def _expectation(err: ErrorDetails) -> tuple[str, str]:
    """What the value must be (a phrase after the key) and what to set it to."""
    kind, msg = err["type"], err["msg"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind == "dspex_value":
        return msg, str(ctx["requirement"])
    bounds = {
        "greater_than_equal": (">=", "greater than or equal to", "ge"),
        "greater_than": (">", "greater than", "gt"),
        "less_than_equal": ("<=", "less than or equal to", "le"),
        "less_than": ("<", "less than", "lt"),
    }
    if kind in bounds:
        op, words, name = bounds[kind]
        bound = ctx[name]
        if kind == "greater_than_equal" and bound == 1 and isinstance(bound, int):
            return "must be a positive integer", "a value >= 1"
        if kind == "greater_than" and bound == 0:
            return "must be a positive number", "a value > 0"
        return f"must be {words} {bound}", f"a value {op} {bound}"
    simple = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "path_type": "a path string",
        "dict_type": "a table of settings",
        "model_type": "a table of settings",
        "model_attributes_type": "a table of settings",
    }
    if kind in simple:
        return f"must be {simple[kind]}", simple[kind]
    if kind == "literal_error":
        return f"must be {ctx['expected']}", f"one of {ctx['expected']}"
    return msg.replace("Input should be", "must be", 1), "a valid value"


def _fix(path: tuple[str, ...], requirement: str, source: str, config_file: str | None) -> str:
    if source == KWARGS:
        return f"Pass {requirement} for {dotted(path)} ({kwarg_form(path)})."
    file = config_file or "dspex.toml"
    return f"Set {env_var_name(path)} or {_toml_location(path)} in {file} to {requirement}."


def kwarg_form(path: tuple[str, ...]) -> str:
    """How a keyword argument reaches ``path``: ``cache={"dir": ...}``."""
    inner = "..."
    for part in reversed(path[1:]):
        inner = "{" + f"{json.dumps(part)}: {inner}" + "}"
    return f"{path[0]}={inner}"


def _toml_location(path: tuple[str, ...]) -> str:
    if len(path) == 1:
        return f"{path[0]} at the top level"
    if path[0] == "models" and len(path) == 2:
        return f"[{dotted(path)}]"
    return f"[{dotted(path[:-1])}] {path[-1]}"


def _unknown_key_text(path: tuple[str, ...], source: str) -> str:
    parent, name = path[:-1], path[-1]
    schema = _schema_at(parent)
    valid = list(schema.model_fields) if schema is not None else []
    options = {field_name: (*parent, field_name) for field_name in valid}
    if not parent and schema is not None:
        # "cache_dir" is most likely cache.dir written flat (DSPEX_CACHE_DIR).
        for group in valid:
            sub, keyed = _submodel(schema.model_fields[group].annotation)
            if sub is not None and not keyed:
                options.update({f"{group}_{f}": (group, f) for f in sub.model_fields})
    text = f"{dotted(path)}: unknown setting (from {source})."
    match = difflib.get_close_matches(name.lower(), list(options), n=1, cutoff=0.6)
    if match:
        target = options[match[0]]
        also = f" ({env_var_name(target)})" if source.startswith("environment") else ""
        text += f" Did you mean {dotted(target)}{also}?"
    where = f" in [{dotted(parent)}]" if parent else " at the top level"
    return text + f" Valid keys{where}: {', '.join(valid)}."


def _schema_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    """The settings model found at ``path`` below ``Settings`` (model ids skipped)."""
    schema: type[BaseModel] = Settings
    index = 0
    while index < len(path):
        info = schema.model_fields.get(path[index])
        if info is None:
            return None
        sub, keyed = _submodel(info.annotation)
        if sub is None:
            return None
        schema, index = sub, index + (2 if keyed else 1)
    return schema


def _submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The settings model inside an annotation, and whether it sits in a dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        sub, _ = _submodel(args[1])
        return sub, sub is not None
    if origin in (Union, UnionType, Annotated):
        for arg in args:
            sub, keyed = _submodel(arg)
            if sub is not None:
                return sub, keyed
    return None, False
