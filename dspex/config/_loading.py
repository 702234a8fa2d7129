"""Loading settings from a TOML file, ``DSPEX_*`` variables and keyword arguments.

Precedence, highest first: keyword arguments > environment > TOML file >
defaults. The sources are deep-merged into one table, validated once, and a
failure becomes a ``ConfigError`` that names the dotted key, the (redacted)
value, the source it came from and how to fix it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dspex.config._explain import ENV_PREFIX, KWARGS, Provenance, sourced_from
from dspex.config._secrets import REDACTED, is_secret_path
from dspex.config._values import Settings, build_settings, deep_merge
from dspex.errors import ConfigError

__all__ = ["CONFIG_ENV_VAR", "ENV_PREFIX", "load_settings"]

CONFIG_ENV_VAR = "DSPEX_CONFIG"
"""Names the TOML file to load when ``config`` is not passed."""


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
    with sourced_from(provenance):
        return build_settings(data)


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
    import tomllib  # here: most processes read no config file (~2 ms at import)

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
