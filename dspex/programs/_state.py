"""Program state in DSPy's JSON format: dump, check and apply (files: ``_state_files``).

A saved file is a JSON object keyed by predictor path (``"qa.predict"``),
each entry ``{"traces", "train", "demos", "signature": {"instructions",
"fields": [{"prefix", "description"}]}, "lm"}``, plus ``"metadata":
{"dependency_versions": {...}}``: the layout DSPy 3.x writes and reads, so
files move both ways. Loading reads plain JSON only; nothing in a state file
is imported, evaluated or unpickled. API keys and other secrets are stripped
from LM state before it is written anywhere.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from dspex.actors._lm._base_lm import BUILTIN_LM_CLASS_PATHS, LM_CLASS_STATE_KEY, import_lm_class
from dspex.config import is_secret_key
from dspex.errors import DSPexError, StateKeyError, UsageError

if TYPE_CHECKING:
    from dspex.programs._signature import Signature

__all__ = [
    "DSPY_FORMAT_VERSION",
    "UNSAFE_LM_STATE_KEYS",
    "Program",
    "apply_module_state",
    "dependency_versions",
    "installed_version",
    "is_secret_key",
    "lm_from_state",
    "lm_to_state",
    "prepare_predict_state",
    "serialize_demo",
    "serialize_value",
]

logger = logging.getLogger("dspex.programs")


# The DSPy release whose state layout dspex writes and reads (documentation only: it is
# never written into a file, which records only versions actually installed here).
DSPY_FORMAT_VERSION = "3.4.1"

# LM settings that redirect traffic (and the key) elsewhere: a state file from
# an untrusted source must not set them unless the caller allows it (as DSPy).
UNSAFE_LM_STATE_KEYS = frozenset({"api_base", "base_url", "model_list"})

_PREDICT_STATE_KEYS = ("traces", "train", "demos")


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _redact(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def dependency_versions() -> dict[str, str]:
    """The ``metadata.dependency_versions`` block: only what is installed here.

    Only keys DSPy knows (its loader fails on others), and no ``dspy`` entry
    unless DSPy itself is installed: dspex wrote the file, not DSPy. dspex's own
    version goes in ``metadata.dspex_version``.
    """
    versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for name in ("dspy", "cloudpickle"):
        installed = installed_version(name)
        if installed is not None:
            # DSPy records cloudpickle as major.minor.
            versions[name] = installed if name == "dspy" else ".".join(installed.split(".")[:2])
    return versions


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (package metadata), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


# -- LM state -------------------------------------------------------------------------


def lm_to_state(lm: Any) -> dict[str, Any] | None:
    """An LM's saveable settings (DSPy's ``lm`` entry), secrets removed."""
    if lm is None:
        return None
    dump = getattr(lm, "dump_state", None)
    if callable(dump):
        state = dict(dump())
    else:
        state = {"model": getattr(lm, "model", None), **dict(getattr(lm, "kwargs", {}) or {})}
    redacted: dict[str, Any] = _redact(state)
    return redacted


def lm_from_state(state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False) -> Any:
    """Build an LM from a saved ``lm`` entry (``dspex.LM(**state)``).

    Keys that redirect traffic (``api_base``, ``base_url``, ``model_list``) are
    dropped unless ``allow_unsafe_lm_state``. Returns None, with a warning,
    when no LM class is available to build it.
    """
    if not isinstance(state, Mapping) or not isinstance(state.get("model"), str):
        raise UsageError(
            f"saved LM state must be a dict with a 'model' string, got {state!r}; "
            "fix the file's 'lm' entry or set it to null"
        )
    values = dict(state)
    marker = values.pop(LM_CLASS_STATE_KEY, None)
    if marker is not None and marker not in BUILTIN_LM_CLASS_PATHS:
        return _custom_lm_from_state(marker, state, allow_unsafe_lm_state=allow_unsafe_lm_state)
    unsafe = sorted(UNSAFE_LM_STATE_KEYS & values.keys())
    if unsafe and not allow_unsafe_lm_state:
        logger.warning(
            "Ignoring unsafe LM setting(s) %s in loaded state; pass allow_unsafe_lm_state=True "
            "to keep them for files you trust.",
            unsafe,
        )
        for key in unsafe:
            del values[key]
    if "/" not in values["model"]:
        # A test double (DummyLM's "dummy") or a bare id: no provider to rebuild it for.
        logger.warning(
            "Saved LM %r not restored: it is not a '<provider>/<model>' id; attach an LM in "
            "code (predictor.lm = ...) or configure one globally.",
            values["model"],
        )
        return None
    from dspex.config import PROVIDERS

    if values["model"].partition("/")[0] not in PROVIDERS:
        # A litellm provider DSPy knows and dspex does not ("azure/...", "vllm/..."):
        # dspex.LM would refuse it, so the file still loads and the LM is left out.
        logger.warning(
            "Saved LM %r not restored: dspex speaks to providers %s only; attach an LM in "
            "code (predictor.lm = ...) or configure one globally.",
            values["model"],
            ", ".join(PROVIDERS),
        )
        return None
    factory = _lm_factory()
    if factory is None:
        logger.warning(
            "Saved LM %r not restored: no dspex.LM class is available in this build; "
            "attach an LM in code (predictor.lm = ...) or configure one globally.",
            values["model"],
        )
        return None
    return factory(**values)


def _custom_lm_from_state(
    marker: Any, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool
) -> Any:
    """A saved LM of a user's class: imported only for a state the caller trusts."""
    if not allow_unsafe_lm_state:
        raise UsageError(
            f"Refusing to import custom serialized LM class {marker!r} from saved state: "
            "importing a class named in a file can run its code. Pass "
            "allow_unsafe_lm_state=True to load a file you trust, or attach the LM in code."
        )
    if not isinstance(marker, str):
        raise UsageError(f"saved LM class {marker!r} must be a 'module.ClassName' string")
    cls = import_lm_class(marker)
    load: Any = getattr(cls, "load_state", None)
    if callable(load) and getattr(load, "__self__", None) is cls:  # a classmethod, as DSPy's
        return load(dict(state))
    values = {k: v for k, v in state.items() if k != LM_CLASS_STATE_KEY}
    return cls(**values)


def _lm_factory() -> Any:
    import dspex.actors

    return getattr(dspex.actors, "LM", None)


# -- demos ------------------------------------------------------------------------------


def serialize_value(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_dict()
    if isinstance(value, list):
        return [serialize_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(serialize_value(v) for v in value)
    if isinstance(value, dict):
        return {k: serialize_value(v) for k, v in value.items()}
    return value


def serialize_demo(demo: Any, *, json_mode: bool = True) -> Any:
    """One demo as saved: a plain dict (Examples and pydantic values converted)."""
    if isinstance(demo, Mapping):
        items = dict(demo)
    else:
        store = getattr(demo, "_store", None)
        if store is None:
            raise UsageError(
                f"demo {demo!r} ({type(demo).__name__}) is neither an Example nor a dict; "
                "demos must be dspex.Example objects or dicts of field values"
            )
        items = dict(store)
        if not json_mode:
            copied = demo.copy()
            for k, v in items.items():
                copied[k] = serialize_value(v)
            return copied
    return {k: serialize_value(v) for k, v in items.items()}


# -- applying state ------------------------------------------------------------------


class Program(Protocol):
    """What saving and loading ask of a program (``Module`` serves it)."""

    def named_parameters(self) -> list[tuple[str, Any]]: ...

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]: ...


def prepare_predict_state(
    signature: type[Signature], state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
) -> dict[str, Any]:
    """Check one predictor's saved state and return the attribute values to set.

    Raises before anything is changed. Demos stay plain dicts, as in DSPy.
    """
    if not isinstance(state, Mapping):
        raise UsageError(f"predictor state must be a JSON object, got {type(state).__name__}")
    values: dict[str, Any] = {}
    for key in _PREDICT_STATE_KEYS:
        if key in state:
            items = state[key]
            if not isinstance(items, list):
                raise UsageError(f"'{key}' must be a list, got {type(items).__name__}: {items!r}")
            values[key] = list(items)
    from dspex.programs._example import Example

    for i, demo in enumerate(values.get("demos", [])):
        # Examples arrive from a pickled (.pkl) state, which keeps objects as they were.
        if not isinstance(demo, Mapping | Example):
            raise UsageError(f"demos[{i}] must be an object of field values, got {demo!r}")
    if "extended_signature" in state:
        raise UsageError(
            "this state holds an 'extended_signature' (a DSPy 2.x ChainOfThought save); "
            "re-save the program with DSPy 3.x or dspex to load it"
        )
    if "signature" in state:
        values["signature"] = signature.load_state(state["signature"])
    elif "signature_instructions" in state:  # DSPy 2.5 layout
        sig = signature.with_instructions(str(state["signature_instructions"]))
        if "signature_prefix" in state and sig.fields:
            last = list(sig.fields)[-1]
            sig = sig.with_updated_fields(last, prefix=str(state["signature_prefix"]))
        values["signature"] = sig
    if "lm" in state:
        lm_state = state["lm"]
        values["lm"] = (
            lm_from_state(lm_state, allow_unsafe_lm_state=allow_unsafe_lm_state)
            if lm_state
            else None
        )
    return values


def apply_module_state(
    module: Program, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
) -> None:
    """Load ``state`` into every parameter of ``module``, all checked before any is set."""
    if not isinstance(state, Mapping):
        raise UsageError(f"program state must be a JSON object, got {type(state).__name__}")
    params = module.named_parameters()
    if [name for name, _ in params] == ["self"] and "self" not in state:
        # A lone predictor (Predict.save) is written flat, as DSPy writes it.
        state = {"self": {k: v for k, v in state.items() if k != "metadata"}}
    missing = [name for name, _ in params if name not in state]
    if missing:
        held = sorted(k for k in state if k != "metadata")
        raise StateKeyError(
            f"the state has no entry for predictor(s) {missing} of {type(module).__name__}; "
            f"it holds {held}. Load a state saved from a program with the same structure."
        )
    staged: list[tuple[Any, Any, bool]] = []
    for name, param in params:
        prepare = getattr(param, "_prepare_state", None)
        if prepare is None:
            staged.append((param, state[name], False))
            continue
        try:
            staged.append(
                (param, prepare(state[name], allow_unsafe_lm_state=allow_unsafe_lm_state), True)
            )
        except DSPexError as exc:
            raise UsageError(f"cannot load the state of predictor {name!r}: {exc}") from exc
    for param, values, prepared in staged:
        if prepared:
            param._apply_state(values)
        else:
            param.load_state(values)
