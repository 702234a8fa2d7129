"""Explaining a settings validation failure: one ``ConfigError`` naming the
dotted key, the (redacted) value, the source it came from and how to fix it.

Both the settings models (which translate pydantic's ``ValidationError`` as
it is raised) and the loader (which records where each value came from)
build on this module; the root settings model is passed in, so this module
knows the schema without importing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from dspex.config._secrets import REDACTED, redact_value
from dspex.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails

__all__ = [
    "ENV_PREFIX",
    "KWARGS",
    "Provenance",
    "config_error",
    "dotted",
    "env_var_name",
    "kwarg_form",
    "sourced_from",
]

ENV_PREFIX = "DSPEX_"

KWARGS = "keyword argument"


class Provenance:
    """Which source set each setting path (the last one wins), and the file's name."""

    __slots__ = ("config_file", "labels")

    def __init__(
        self,
        labels: dict[tuple[str, ...], str] | None = None,
        config_file: str | None = None,
    ) -> None:
        self.labels: dict[tuple[str, ...], str] = {} if labels is None else labels
        self.config_file = config_file

    def source_of(self, path: tuple[str, ...]) -> str:
        for end in range(len(path), 0, -1):
            label = self.labels.get(path[:end])
            if label is not None:
                return label
        return KWARGS


# Set only while load_settings validates; outside it every value is a keyword argument.
_PROVENANCE: ContextVar[Provenance | None] = ContextVar("dspex_config_provenance", default=None)


@contextmanager
def sourced_from(provenance: Provenance) -> Iterator[None]:
    """Explain failures inside the block with ``provenance``'s sources."""
    token = _PROVENANCE.set(provenance)
    try:
        yield
    finally:
        _PROVENANCE.reset(token)


def env_var_name(path: tuple[str, ...]) -> str:
    """The ``DSPEX_*`` variable that sets a dotted path (models take JSON)."""
    if path and path[0] == "models":
        return f"{ENV_PREFIX}MODELS (a JSON object)"
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def config_error(
    exc: ValidationError, model_path: tuple[str, ...], root: type[BaseModel]
) -> ConfigError:
    """The one translation of a pydantic ``ValidationError`` into a ``ConfigError``.

    ``model_path`` is where the failing model sits in ``root`` (``Settings``),
    whose schema names the valid keys when one is unknown. The sources
    recorded by a running :func:`load_settings` say where each value came from;
    outside it, values are keyword arguments.
    """
    provenance = _PROVENANCE.get() or Provenance()
    problems = [
        _problem(err, model_path, provenance, root) for err in exc.errors(include_url=False)
    ]
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
    err: ErrorDetails, model_path: tuple[str, ...], provenance: Provenance, root: type[BaseModel]
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
        return key, value, _unknown_key_text(path, source, root)
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


def _unknown_key_text(path: tuple[str, ...], source: str, root: type[BaseModel]) -> str:
    parent, name = path[:-1], path[-1]
    schema = _schema_at(root, parent)
    valid = list(schema.model_fields) if schema is not None else []
    options = {field_name: (*parent, field_name) for field_name in valid}
    if not parent and schema is not None:
        # "cache_dir" is most likely cache.dir written flat (DSPEX_CACHE_DIR).
        for group in valid:
            sub, keyed = _submodel(schema.model_fields[group].annotation)
            if sub is not None and not keyed:
                options.update({f"{group}_{f}": (group, f) for f in sub.model_fields})
    text = f"{dotted(path)}: unknown setting (from {source})."
    import difflib  # only a refused value needs a guess

    match = difflib.get_close_matches(name.lower(), list(options), n=1, cutoff=0.6)
    if match:
        target = options[match[0]]
        also = f" ({env_var_name(target)})" if source.startswith("environment") else ""
        text += f" Did you mean {dotted(target)}{also}?"
    where = f" in [{dotted(parent)}]" if parent else " at the top level"
    return text + f" Valid keys{where}: {', '.join(valid)}."


def _schema_at(root: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel] | None:
    """The settings model found at ``path`` below ``root`` (model ids skipped)."""
    schema: type[BaseModel] = root
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
    from pydantic import BaseModel  # only an error being explained gets here

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
