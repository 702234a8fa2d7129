"""Program state in DSPy's JSON format: dump, check, load, save and reload.

A saved file is a JSON object keyed by predictor path (``"qa.predict"``),
each entry ``{"traces", "train", "demos", "signature": {"instructions",
"fields": [{"prefix", "description"}]}, "lm"}``, plus ``"metadata":
{"dependency_versions": {...}}``: the layout DSPy 3.x writes and reads, so
files move both ways. Loading reads plain JSON only; nothing in a state file
is imported, evaluated or unpickled. API keys and other secrets are stripped
from LM state before it is written anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspex.actors._lm._base_lm import BUILTIN_LM_CLASS_PATHS, LM_CLASS_STATE_KEY, import_lm_class
from dspex.errors import DSPexError, UsageError

if TYPE_CHECKING:
    from dspex.programs._module import BaseModule
    from dspex.programs._signature import Signature

__all__ = [
    "DSPY_FORMAT_VERSION",
    "UNSAFE_LM_STATE_KEYS",
    "apply_module_state",
    "dependency_versions",
    "is_secret_key",
    "lm_from_state",
    "lm_to_state",
    "load_module_state",
    "prepare_predict_state",
    "save_module",
    "serialize_demo",
]

logger = logging.getLogger("dspex.programs")

# The DSPy release whose state layout we write; DSPy only warns on a mismatch.
DSPY_FORMAT_VERSION = "3.0.3"

# LM settings that redirect traffic (and the key) elsewhere: a state file from
# an untrusted source must not set them unless the caller allows it (as DSPy).
UNSAFE_LM_STATE_KEYS = frozenset({"api_base", "base_url", "model_list"})

_SECRET_WORDS = frozenset(
    {"apikey", "secret", "password", "passwd", "token", "authorization", "credential"}
    | {"credentials", "bearer"}
)
_KEYISH_QUALIFIERS = frozenset({"api", "access", "private", "secret", "subscription", "auth"})
_PREDICT_STATE_KEYS = ("traces", "train", "demos")


def is_secret_key(key: str) -> bool:
    """True for parameter names that hold credentials (``api_key``, ``Authorization``...)."""
    parts = set(key.lower().replace("-", "_").split("_"))
    if parts & _SECRET_WORDS:
        return True
    return "key" in parts and bool(parts & _KEYISH_QUALIFIERS)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _redact(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def dependency_versions() -> dict[str, str]:
    """The ``metadata.dependency_versions`` block, with only keys DSPy knows."""
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "dspy": DSPY_FORMAT_VERSION,
    }


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


def _serialize_value(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_dict()
    if isinstance(value, list):
        return [_serialize_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_serialize_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _serialize_value(v) for k, v in value.items()}
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
                copied[k] = _serialize_value(v)
            return copied
    return {k: _serialize_value(v) for k, v in items.items()}


# -- applying state ------------------------------------------------------------------


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
    for i, demo in enumerate(values.get("demos", [])):
        if not isinstance(demo, Mapping):
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
    module: BaseModule, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
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
        raise UsageError(
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


# -- files ------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    converted = _serialize_value(value)
    if converted is not value:
        return converted
    raise TypeError(f"a value of type {type(value).__name__} ({value!r:.80}) is not JSON data")


def _write_atomic(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _metadata() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("dspex")
    except PackageNotFoundError:  # running from a source tree
        own = "unknown"
    return {"dependency_versions": dependency_versions(), "dspex_version": own}


def save_module(
    module: BaseModule,
    path: str | Path,
    *,
    save_program: bool = False,
    modules_to_serialize: list[Any] | None = None,
) -> None:
    """Write ``module``'s state to ``path`` (``.json``), or pickle the whole program."""
    path = Path(path)
    if save_program:
        _save_program_dir(module, path, modules_to_serialize)
        return
    if path.suffix == ".pkl":
        raise UsageError(
            f"refusing to save {path}: pickled state files can run code when loaded, so dspex "
            "saves state as JSON only. Use a path ending in '.json', or "
            "save(directory, save_program=True) to pickle the whole program on purpose."
        )
    if path.suffix != ".json":
        raise UsageError(
            f"save() path {str(path)!r} must end in '.json' (or be a directory with "
            "save_program=True)"
        )
    state = module.dump_state(json_mode=True)
    state["metadata"] = _metadata()
    try:
        text = json.dumps(state, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"cannot save the state of {type(module).__name__} as JSON: {exc}. Store demos "
            "as strings, numbers, lists, dicts or pydantic models."
        ) from exc
    _write_atomic(path, text)


def load_module_state(
    module: BaseModule,
    path: str | Path,
    *,
    allow_pickle: bool = False,
    allow_unsafe_lm_state: bool = False,
) -> None:
    """Read a JSON state file (dspex's or DSPy's) into ``module``. Never unpickles."""
    path = Path(path)
    if path.suffix == ".pkl":
        raise UsageError(
            f"refusing to load {path}: loading a pickle can run arbitrary code, and dspex never "
            "unpickles state files (allow_pickle does not change this). Re-save the state "
            "as '.json' from a trusted environment."
        )
    if path.suffix != ".json":
        raise UsageError(f"load() path {str(path)!r} must end in '.json'")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise UsageError(
            f"{path} must hold a JSON object of predictor states, got {type(state).__name__}"
        )
    _warn_version_mismatch(state.get("metadata"), str(path))
    apply_module_state(module, state, allow_unsafe_lm_state=allow_unsafe_lm_state)


def _warn_version_mismatch(metadata: Any, where: str) -> None:
    if not isinstance(metadata, Mapping):
        return
    saved = metadata.get("dependency_versions")
    if not isinstance(saved, Mapping):
        return
    here = dependency_versions()["python"]
    if saved.get("python") not in (None, here):
        logger.warning(
            "%s was saved with Python %s but this is Python %s; loaded state may differ.",
            where,
            saved.get("python"),
            here,
        )


# -- whole-program pickles (explicit opt-in only) ------------------------------------


def _is_lm(obj: Any) -> bool:
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "generate", None))
        and isinstance(getattr(obj, "model", None), str)
        and hasattr(obj, "kwargs")
    )


def _pickle_module() -> Any:
    try:
        import cloudpickle  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        import pickle

        return pickle
    return cloudpickle


def _save_program_dir(
    module: BaseModule, path: Path, modules_to_serialize: list[Any] | None
) -> None:
    """Pickle the whole program into ``path/program.pkl`` plus ``metadata.json``.

    LMs are written as their redacted state and signatures as their fields,
    so neither API keys nor unpicklable client handles end up in the file.
    """
    import io

    from dspex.programs._signature import SignatureMeta

    if path.suffix:
        raise UsageError(
            f"with save_program=True the path must be a directory without a suffix, got {path}"
        )
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory")
    pickling = _pickle_module()
    if modules_to_serialize:
        if not hasattr(pickling, "register_pickle_by_value"):
            raise UsageError("modules_to_serialize needs the cloudpickle package installed")
        for mod in modules_to_serialize:
            pickling.register_pickle_by_value(mod)

    class ProgramPickler(pickling.Pickler):  # type: ignore[misc, name-defined]
        def persistent_id(self, obj: Any) -> Any:
            # Signature classes are often built at runtime (not importable by name).
            if isinstance(obj, SignatureMeta) and obj.fields:
                return ("dspex.signature", obj.__name__, obj.instructions, dict(obj.fields))
            if _is_lm(obj):
                return ("dspex.lm", lm_to_state(obj))
            return None

    buffer = io.BytesIO()
    try:
        ProgramPickler(buffer, protocol=4).dump(module)
    except Exception as exc:
        raise UsageError(
            f"cannot pickle {type(module).__name__}: {exc}. Remove unpicklable attributes, "
            "or save only the state with save('program.json')."
        ) from exc
    logger.warning(
        "Saved a pickled program to %s: loading it runs code from the file, so only load it "
        "from a trusted source (prefer module.save('program.json')).",
        path,
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "program.pkl").write_bytes(buffer.getvalue())
    _write_atomic(path / "metadata.json", json.dumps(_metadata(), indent=2) + "\n")


def load(path: str | Path, allow_pickle: bool = False) -> Any:
    """Load a whole program saved with ``save(directory, save_program=True)``.

    This unpickles, which runs code from the file: it is refused unless
    ``allow_pickle=True`` is passed for a directory you trust.
    """
    import pickle

    from dspex.programs._signature_build import make_signature

    path = Path(path)
    if not (path / "metadata.json").is_file() or not (path / "program.pkl").is_file():
        raise UsageError(
            f"{path} is not a saved program directory (metadata.json and program.pkl); "
            "to load a '.json' state use program.load(path) on a program built in code"
        )
    metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    _warn_version_mismatch(metadata, str(path))
    if not allow_pickle:
        raise UsageError(
            f"refusing to unpickle {path / 'program.pkl'}: unpickling runs code from the file. "
            "Pass allow_pickle=True only if you trust its source."
        )

    class ProgramUnpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            kind = pid[0] if isinstance(pid, tuple) and pid else None
            if kind == "dspex.lm":
                return lm_from_state(pid[1]) if pid[1] else None
            if kind == "dspex.signature":
                _, name, instructions, fields = pid
                return make_signature(dict(fields), instructions, signature_name=name)
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")

    with (path / "program.pkl").open("rb") as f:
        return ProgramUnpickler(f).load()
