"""How a program and its metric cross the wire to a Ray worker: data plus import paths.

A program travels as a :class:`ShippedProgram`: an importable *factory*
(``"package.module:QualName"``, called with no arguments, or with the
signature for a bare ``Predict``/``ChainOfThought``) and the program's JSON
state (``dump_state``: demos, instructions, per-predictor LM settings). The
worker imports the factory, builds the program and loads the state, the
same way ``save``/``load`` round-trip a program. Nothing is pickled by
value: a pickle of user code either fails on the worker for want of the
same modules, or silently runs code that differs from the driver's.

What a shippable program satisfies (checked by :func:`ship` before any work
starts, by building the program once from what would be shipped):

- its class (or the ``__dspex_factory__`` it names) is defined at the top
  level of an importable module: not in ``__main__``, not inside a function;
  the workers can import that module (an installed package, or Ray's
  ``runtime_env`` ``py_modules``/``working_dir``);
- calling the factory with no arguments builds a program of the same
  structure, whose learnable state is ``dump_state()``: the learned demos
  and instructions are in the state, the rest is in the code;
- the state is JSON data (as for ``program.save("x.json")``).

A metric (or any function sent to workers) travels as its import path, so
it too must be a function defined at the top level of an importable module:
a lambda, a closure, a ``functools.partial`` or a function of ``__main__``
gets a clear error. The driver's ``dspex.configure(lm=..., adapter=...)``
travels as the LM's saved fields (never its API key: workers read keys from
their own environment) and the adapter's import path.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex.actors._lm._model import LM
from dspex.errors import UsageError
from dspex.programs._state import lm_from_state, lm_to_state
from dspex.programs._state_files import _json_default

__all__ = [
    "ShippedFunction",
    "ShippedProgram",
    "ShippedSettings",
    "import_path",
    "resolve_path",
    "ship",
    "ship_function",
    "ship_settings",
]

_PREDICT = "dspex.programs._predict:Predict"
_CHAIN_OF_THOUGHT = "dspex.programs._chain_of_thought:ChainOfThought"

_FIX = (
    "define it at the top level of a module the Ray workers can import (not in __main__ "
    "or inside a function); see docs/distributed.md"
)


def resolve_path(path: str) -> Any:
    """The object ``"package.module:Qual.name"`` names (imports the module)."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise UsageError(f"import path {path!r}: must look like 'package.module:QualName'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"import path {path!r}: cannot import {module_name!r} ({exc})") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"import path {path!r}: {module_name} has no {qualname!r}") from None
    return obj


def import_path(obj: Any, what: str) -> str:
    """``obj``'s ``"module:qualname"``, checked to import back to ``obj`` itself."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise UsageError(
            f"{what} {obj!r} cannot be shipped to Ray workers: it has no import path "
            f"(a {type(obj).__name__} instance, not a function or class); {_FIX}"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        kind = "a lambda" if "<lambda>" in qualname else "defined inside a function (a closure)"
        raise UsageError(
            f"{what} {module}.{qualname} is {kind}, which cannot be shipped to Ray workers "
            f"by import path; {_FIX}"
        )
    if module == "__main__":
        raise UsageError(
            f"{what} {qualname} is defined in __main__, which Ray workers cannot import; "
            f"move it to a module of its own; {_FIX}"
        )
    path = f"{module}:{qualname}"
    try:
        found = resolve_path(path)
    except UsageError as exc:
        raise UsageError(f"{what} cannot be shipped to Ray workers: {exc}; {_FIX}") from None
    if found is not obj:
        raise UsageError(
            f"{what} {path} is not what that import path names on a fresh import "
            f"(it was redefined or replaced); {_FIX}"
        )
    return path


@dataclass(frozen=True, slots=True)
class ShippedFunction:
    """A function by import path (a metric): ``.resolve()`` on the worker."""

    path: str

    def resolve(self) -> Callable[..., Any]:
        fn = resolve_path(self.path)
        if not callable(fn):
            raise UsageError(f"{self.path} is not callable")
        return fn  # type: ignore[no-any-return]


def ship_function(fn: Callable[..., Any], what: str = "metric") -> ShippedFunction:
    """``fn`` as its import path; a :class:`UsageError` for lambdas, closures, ``__main__``."""
    if not callable(fn):
        raise UsageError(f"{what}={fn!r}: must be a function")
    return ShippedFunction(import_path(fn, what))


@dataclass(frozen=True, slots=True)
class ShippedSettings:
    """The driver's ``dspex.configure`` values a worker needs: LM fields, adapter path."""

    lm: Mapping[str, Any] | None = None
    """``LM.dump_state()`` (never holds an API key), or None."""
    adapter: str | None = None

    def apply(self) -> dict[str, Any]:
        """The ``configure`` keywords these stand for, built on the worker."""
        out: dict[str, Any] = {}
        if self.lm is not None:
            # The driver wrote this state itself: its api_base is trusted.
            out["lm"] = lm_from_state(self.lm, allow_unsafe_lm_state=True)
        if self.adapter is not None:
            out["adapter"] = resolve_path(self.adapter)()
        return out


def ship_settings(values: Mapping[str, Any], where: str | None = None) -> ShippedSettings:
    """The shippable part of ``values``: ``lm`` and ``adapter``.

    From the driver's ``current_settings()`` (``where=None``) the other
    settings stay in the driver (callbacks, trace). From settings named by
    ``where`` (an optimizer's ``teacher_settings``) any other key is refused.
    """
    if where is not None:
        other = sorted(set(values) - {"lm", "adapter"})
        if other:
            raise UsageError(
                f"{where}={dict(values)!r}: only 'lm' and 'adapter' can be shipped to Ray "
                f"workers, not {other}; use backend='local' for those"
            )
    lm = values.get("lm")
    adapter = values.get("adapter")
    lm_state = None
    if lm is not None:
        if type(lm) is not LM:
            raise UsageError(
                f"dspex.configure(lm={lm!r}): only a dspex.LM can be shipped to Ray workers, "
                f"not a {type(lm).__name__} (DummyLM and custom LMs live in the driver); "
                "use backend='local'"
            )
        lm_state = _json_checked(lm_to_state(lm), "the configured LM")
    adapter_path = None
    if adapter is not None:
        adapter_path = import_path(type(adapter), "the configured adapter")
    return ShippedSettings(lm=lm_state, adapter=adapter_path)


@dataclass(frozen=True, slots=True)
class ShippedProgram:
    """A program as it crosses the wire: factory path, optional signature, JSON state."""

    factory: str
    state: str
    """``dump_state(json_mode=True)`` as JSON text."""
    signature: str | None = None
    """For a bare Predict/ChainOfThought: the signature's typed string, or ``signature_path``."""
    signature_path: str | None = None
    digest: str = field(default="", compare=False)
    """SHA-256 of the rest: workers build each distinct program once."""

    def build(self) -> Any:
        """The program, built from the factory and loaded with the state (on a worker)."""
        factory = resolve_path(self.factory)
        if self.signature_path is not None:
            program = factory(resolve_path(self.signature_path))
        elif self.signature is not None:
            program = factory(self.signature)
        else:
            program = factory()
        program.load_state(json.loads(self.state), allow_unsafe_lm_state=True)
        return program


def _json_checked(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"{what} cannot be shipped to Ray workers: its state is not JSON data ({exc}); "
            "store demos as strings, numbers, lists, dicts or pydantic models"
        ) from None


def _signature_of(program: Any) -> tuple[str | None, str | None]:
    """The signature a bare dspex Predict/ChainOfThought is built from: (text, import path)."""
    # Known by import path, not imported: they import (through Module.batch) this module.
    kind = f"{type(program).__module__}:{type(program).__qualname__}"
    if kind == _PREDICT:
        sig = program.signature
    elif kind == _CHAIN_OF_THOUGHT:
        sig = program.predict.signature.delete("reasoning")
    else:
        return None, None
    try:
        return None, import_path(sig, "signature")
    except UsageError:
        pass  # a string signature: send its typed text if that rebuilds the same fields
    text: str = sig.to_string()
    rebuilt = type(program)(text)
    again = rebuilt.signature if kind == _PREDICT else rebuilt.predict.signature.delete("reasoning")
    if [(n, f.annotation) for n, f in again.fields.items()] != [
        (n, f.annotation) for n, f in sig.fields.items()
    ]:
        raise UsageError(
            f"{type(program).__name__}({text!r}) cannot be shipped to Ray workers: its "
            "signature's types do not survive as text; define the signature as a class at "
            "the top level of an importable module"
        )
    return text, None


def ship(program: Any, *, factory: str | Callable[[], Any] | None = None) -> ShippedProgram:
    """``program`` as a :class:`ShippedProgram`, or a clear :class:`UsageError` saying why not.

    ``factory`` (or a ``__dspex_factory__`` attribute on the program or its
    class) overrides the program's class as the builder: an import path or a
    top-level function taking no arguments. The program is rebuilt once here
    from what would be shipped and its state compared, so a program that the
    workers would build differently fails now, before any work.
    """
    chosen = factory if factory is not None else getattr(program, "__dspex_factory__", None)
    signature = signature_path = None
    if chosen is None:
        path = import_path(type(program), "program class")
        signature, signature_path = _signature_of(program)
    elif isinstance(chosen, str):
        resolve_path(chosen)
        path = chosen
    else:
        path = import_path(chosen, "program factory")
    dump = getattr(program, "dump_state", None)
    if dump is None:
        raise UsageError(
            f"program {program!r} cannot be shipped to Ray workers: it is not a dspex.Module "
            "(no dump_state)"
        )
    state = _json_checked(dump(json_mode=True), f"program {type(program).__name__}")
    text = json.dumps(state, sort_keys=True)
    key = f"{path}\0{signature}\0{signature_path}\0{text}"
    shipped = ShippedProgram(
        factory=path,
        state=text,
        signature=signature,
        signature_path=signature_path,
        digest=hashlib.sha256(key.encode()).hexdigest(),
    )
    try:
        rebuilt = shipped.build()
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"program {type(program).__name__} cannot be shipped to Ray workers: building it "
            f"from {path}() and its state failed ({type(exc).__name__}: {exc}); the factory "
            "must take no arguments (or set __dspex_factory__ / pass factory=)"
        ) from exc
    again = _json_checked(rebuilt.dump_state(json_mode=True), "the rebuilt program")
    if json.dumps(again, sort_keys=True) != text:
        raise UsageError(
            f"program {type(program).__name__} cannot be shipped to Ray workers: {path}() "
            "builds a program whose state differs from this one (different predictors or "
            "signatures, e.g. built from constructor arguments); set __dspex_factory__ to a "
            "function that builds this program, or pass factory="
        )
    return shipped
