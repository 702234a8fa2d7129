"""``Tool``: a Python callable described for an LM (name, description, JSON-schema args).

A Tool reads what it can from the callable: the name from ``__name__``, the
description from the docstring (as written, not dedented: DSPy sends it so)
and one JSON schema per parameter from the type hints (pydantic's, with
``$ref``s inlined; ``*args``/``**kwargs`` get an empty schema, as in DSPy).
Calling the tool checks the arguments an LM chose against the hints, coerces
them (``"3"`` -> ``3``, a dict -> a pydantic model) and calls the function. Bad arguments raise
:class:`~dspex.errors.UsageError` (a ``ValueError``, as in DSPy) naming the
argument and the fix, so ReAct can show the LM what went wrong.

pydantic is imported when the first Tool is built, not when dspex is.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints

from dspex.errors import UsageError
from dspex.programs._callbacks import hooked

__all__ = ["Tool"]

_NO_VALIDATOR = object()  # cached marker: pydantic cannot validate this type


class Tool:
    """A callable the LM may use, with the description and argument schemas it sees.

    ``Tool(func, name=None, desc=None, args=None, arg_types=None, arg_desc=None)``:
    anything not given is read from ``func`` (for a callable object, from its
    ``__call__``). ``args`` maps each argument to its JSON schema, ``arg_types``
    to its Python type, ``arg_desc`` adds a description to an argument's schema.
    ``tool(**kwargs)`` validates and calls; ``await tool.acall(**kwargs)`` too.
    """

    func: Callable[..., Any]
    name: str
    desc: str | None
    args: dict[str, Any]
    arg_types: dict[str, Any]
    arg_desc: dict[str, str] | None
    has_kwargs: bool

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: Mapping[str, Any] | None = None,
        arg_types: Mapping[str, Any] | None = None,
        arg_desc: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(func, Tool):
            raise UsageError(
                f"Tool(func=...) got the Tool {func.name!r}; pass the Tool itself where a "
                "tool is expected, or Tool(tool.func, ...) to re-describe its function."
            )
        if not callable(func):
            raise UsageError(
                f"Tool(func={func!r}): func must be callable (a function, a method or an "
                f"object with __call__), got {type(func).__name__}. Pass the function itself, "
                "e.g. Tool(search), not the result of calling it."
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise UsageError(f"Tool(name={name!r}): name must be a non-empty string.")
        self.func = func
        self.arg_desc = dict(arg_desc) if arg_desc is not None else None
        params = _parameters(func)
        hints = _hints(func)
        self.has_kwargs = params is None or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
        named = {} if params is None else {k: p for k, p in params.items() if _named(p)}
        described = {} if params is None else params  # DSPy lists *args/**kwargs too
        # Required arguments are checked before the call, so the LM gets a clear message.
        self._required = tuple(k for k, p in named.items() if p.default is inspect.Parameter.empty)
        self._positional = tuple(
            k for k, p in named.items() if p.kind is inspect.Parameter.POSITIONAL_ONLY
        )
        inferred_types = {k: hints.get(k, Any) for k in described}
        self.name = name if name is not None else _name_of(func)
        self.desc = desc if desc is not None else _doc_of(func)
        self.arg_types = dict(arg_types) if arg_types is not None else inferred_types
        if args is not None:
            self.args = {k: dict(v) if isinstance(v, Mapping) else v for k, v in args.items()}
        else:
            self.args = {
                k: _arg_schema(k, p, self.arg_types.get(k, Any)) for k, p in described.items()
            }
        if self.arg_desc:
            unknown = [k for k in self.arg_desc if k not in self.args]
            if unknown:
                raise UsageError(
                    f"Tool {self.name!r}: arg_desc names {unknown}, which are not arguments of "
                    f"the tool (its arguments are {list(self.args)}); fix the names in arg_desc."
                )
            for k, text in self.arg_desc.items():
                if isinstance(self.args.get(k), dict):
                    self.args[k]["description"] = text
        self._validators: dict[str, Any] = {}

    # -- calling -----------------------------------------------------------------------

    @hooked("tool")
    def __call__(self, **kwargs: Any) -> Any:
        """Validate ``kwargs`` and call the function (an async one runs to completion here)."""
        result = self._invoke(self._validate_and_parse_args(**kwargs))
        if inspect.iscoroutine(result):
            return _run_coroutine(self.name, result)
        return result

    @hooked("tool")
    async def acall(self, **kwargs: Any) -> Any:
        """Validate ``kwargs`` and call the function, awaiting it if it is async."""
        result = self._invoke(self._validate_and_parse_args(**kwargs))
        if inspect.isawaitable(result):
            return await result
        return result

    def _invoke(self, kwargs: dict[str, Any]) -> Any:
        # Positional-only parameters (``len(obj, /)``) cannot be passed by name.
        positional = []
        for key in self._positional:
            if key not in kwargs:
                break
            positional.append(kwargs.pop(key))
        return self.func(*positional, **kwargs)

    def _validate_and_parse_args(self, **kwargs: Any) -> dict[str, Any]:
        """``kwargs`` checked against the argument list and coerced to the hinted types."""
        for key, value in kwargs.items():
            if key not in self.args and not self.has_kwargs:
                raise UsageError(
                    f"tool {self.name!r} has no argument {key!r} (given {_short(value)}); "
                    f"its arguments are {list(self.args)}. Call it with those names only."
                )
        missing = [k for k in self._required if k not in kwargs]
        if missing:
            raise UsageError(
                f"tool {self.name!r} needs argument(s) {missing}, which were not given "
                f"(given: {list(kwargs)}). Pass a value for each, e.g. "
                f"{{{', '.join(repr(k) + ': ...' for k in missing)}}}."
            )
        parsed: dict[str, Any] = {}
        for key, value in kwargs.items():
            validator = self._validator(key)
            if validator is None:
                parsed[key] = value
                continue
            try:
                parsed[key] = validator.validate_python(value)
            except Exception as exc:  # pydantic's ValidationError, without importing it here
                raise UsageError(
                    f"tool {self.name!r}: argument {key!r}={_short(value)} is not a valid "
                    f"{_type_name(self.arg_types[key])}: {_first_error(exc)}. Pass a value "
                    f"matching its schema {json.dumps(self.args.get(key, {}), default=repr)}."
                ) from exc
        return parsed

    def _validator(self, key: str) -> Any:
        """pydantic's TypeAdapter for argument ``key``, or None to pass the value through."""
        found = self._validators.get(key)
        if found is None:
            annotation = self.arg_types.get(key, Any)
            found = _NO_VALIDATOR
            if annotation is not Any:
                found = _type_adapter(annotation)
            self._validators[key] = found
        return None if found is _NO_VALIDATOR else found

    # -- describing --------------------------------------------------------------------

    def format(self) -> str:
        """The tool's line in a prompt (same as ``str(tool)``)."""
        return str(self)

    def format_as_litellm_function_call(self) -> dict[str, Any]:
        """The OpenAI-style ``{"type": "function", "function": {...}}`` description."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.desc,
                "parameters": {
                    "type": "object",
                    "properties": self.args,
                    # An argument whose schema carries a default may be left out.
                    "required": [k for k, v in self.args.items() if not _has_default(v)],
                },
            },
        }

    def __str__(self) -> str:
        # DSPy's wording byte for byte (ReAct's prompt lists tools with it): newlines in
        # the description become two spaces and the arguments print as a Python dict.
        head = (
            f"{self.name}, whose description is <desc>{self.desc}</desc>."
            if self.desc
            else (f"{self.name}.")
        )
        return f"{head.replace(chr(10), '  ')} It takes arguments {self.args}."

    def __repr__(self) -> str:
        return f"Tool(name={self.name}, desc={self.desc}, args={self.args})"

    # Validators are caches: rebuilt on demand after a copy or an unpickle.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_validators"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# -- reading a callable -------------------------------------------------------------------


def _target(func: Callable[..., Any]) -> Any:
    """What holds the signature and hints: the function, or a callable object's ``__call__``."""
    if inspect.isfunction(func) or inspect.ismethod(func) or inspect.isclass(func):
        return func
    call = getattr(func, "__call__", None)  # noqa: B004  (want the bound method itself)
    return call if inspect.ismethod(call) else func


def _parameters(func: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The callable's parameters (``self`` excluded), or None when Python cannot tell."""
    try:
        return dict(inspect.signature(_target(func)).parameters)
    except (TypeError, ValueError):  # some builtins have no signature
        return None


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    target = _target(func)
    if inspect.isclass(target):
        target = target.__init__
    try:
        return get_type_hints(target)
    except Exception:  # unresolved forward references: treat those args as Any
        return {}


def _named(param: inspect.Parameter) -> bool:
    return param.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _name_of(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


def _doc_of(func: Callable[..., Any]) -> str | None:
    """The docstring as written (None when there is none), as DSPy reads it."""
    doc = getattr(func, "__doc__", None)
    if not doc:
        doc = getattr(_target(func), "__doc__", None)
    return doc if isinstance(doc, str) else None


def _has_default(schema: Any) -> bool:
    return isinstance(schema, Mapping) and "default" in schema


def _arg_schema(name: str, param: inspect.Parameter, annotation: Any) -> dict[str, Any]:
    """The JSON schema of one argument: pydantic's, ``$ref``s inlined, default added."""
    from pydantic import TypeAdapter

    try:
        schema = _inline_refs(TypeAdapter(annotation).json_schema())
    except Exception:  # pydantic cannot describe the type: say only what it is called
        schema = {"description": f"a {_type_name(annotation)} value"}
    if param.default is not inspect.Parameter.empty:
        schema["default"] = _json_default(param.default)
    return schema


def _json_default(value: Any) -> Any:
    """A parameter default as JSON shows it (an Enum member as its value), as DSPy does."""
    from decimal import Decimal

    from pydantic import TypeAdapter

    if isinstance(value, Decimal):  # a JSON number suits float and Decimal arguments alike
        return float(value)
    try:
        return TypeAdapter(Any).dump_python(value, mode="json")
    except Exception:  # not JSON-representable: keep the object itself
        return value


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition.

    LMs read an inlined schema better. A recursive model cannot be inlined:
    its schema is returned unchanged.
    """
    defs = schema.get("$defs")
    if not defs:
        return schema

    class _Recursive(Exception):
        pass

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                key = ref[len("#/$defs/") :]
                if key in stack or key not in defs:
                    raise _Recursive
                extra = {k: walk(v, stack) for k, v in node.items() if k != "$ref"}
                return {**walk(defs[key], (*stack, key)), **extra}
            return {k: walk(v, stack) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(item, stack) for item in node]
        return node

    try:
        inlined: dict[str, Any] = walk(schema, ())
    except _Recursive:
        return schema
    return inlined


def _type_adapter(annotation: Any) -> Any:
    """A lax pydantic validator for ``annotation``; numbers are accepted for ``str``.

    LMs (and JSON decoding) often turn ``"2024"`` into ``2024``; a str argument
    should still get its text. Types that carry their own pydantic config
    (models, TypedDicts) refuse a config, and are validated as they are.
    """
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(annotation, config=ConfigDict(coerce_numbers_to_str=True))
    except Exception:  # the type has its own config, or pydantic cannot validate it
        pass
    try:
        return TypeAdapter(annotation)
    except Exception:  # a type pydantic cannot validate: trust the function
        return _NO_VALIDATOR


# -- helpers for messages and async ---------------------------------------------------------


def _type_name(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None)
    return (
        name
        if isinstance(name, str) and not getattr(annotation, "__args__", None)
        else (str(annotation).replace("typing.", ""))
    )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
        except Exception:  # not pydantic's shape after all
            return str(exc)
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{first.get('msg', exc)}" + (f" (at {where})" if where else "")
    return str(exc)


def _run_coroutine(name: str, coroutine: Any) -> Any:
    """Run an async tool's coroutine to completion in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise UsageError(
        f"tool {name!r} is async and was called synchronously inside a running event loop; "
        f"use `await tool.acall(...)` there instead."
    )
