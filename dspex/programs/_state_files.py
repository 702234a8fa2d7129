"""Program state in files: save and load DSPy's JSON state format, and opt-in pickles.

``save_module``/``load_module_state`` write and read the JSON layout of
``_state`` (``Module.save``/``Module.load``); anything wrong with a file's
content is a ``UsageError`` naming the file. Whole-program pickles
(``save(directory, save_program=True)``, ``dspex.load``) are explicit opt-ins.
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
from typing import Any

from dspex.errors import UsageError
from dspex.programs._signature import SignatureMeta, make_signature
from dspex.programs._state import (
    Program,
    apply_module_state,
    dependency_versions,
    installed_version,
    lm_from_state,
    lm_to_state,
    serialize_value,
)

__all__ = ["load", "load_module_state", "read_json_file", "save_module"]

logger = logging.getLogger("dspex.programs")

_PICKLE_WARNING = (
    "Loading untrusted .pkl files can run arbitrary code, which may be dangerous. To avoid "
    'this, prefer saving using json format using module.save("module.json").'
)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    converted = serialize_value(value)
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
    own = installed_version("dspex") or "unknown"  # "unknown": run from a source tree
    return {"dependency_versions": dependency_versions(), "dspex_version": own}


def save_module(
    module: Program,
    path: str | Path,
    *,
    save_program: bool = False,
    modules_to_serialize: list[Any] | None = None,
) -> None:
    """Write ``module``'s state to ``path`` (``.json``, or ``.pkl`` pickled), or pickle
    the whole program (``save_program=True``)."""
    path = Path(path)
    if save_program:
        _save_program_dir(module, path, modules_to_serialize)
        return
    if path.suffix == ".pkl":
        _save_pickled_state(module, path)
        return
    if path.suffix != ".json":
        raise UsageError(
            f"save() path {str(path)!r} must end in '.json' or '.pkl' (or be a directory with "
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
    module: Program,
    path: str | Path,
    *,
    allow_pickle: bool = False,
    allow_unsafe_lm_state: bool = False,
) -> None:
    """Read a state file (dspex's or DSPy's) into ``module``.

    JSON is only data. A ``.pkl`` state is unpickled, which runs code from the
    file, so it is refused unless ``allow_pickle=True`` (DSPy's rule).
    """
    path = Path(path)
    if path.suffix == ".pkl":
        state = _load_pickled_state(path, allow_pickle)
    elif path.suffix != ".json":
        raise UsageError(f"load() path {str(path)!r} must end in '.json' or '.pkl'")
    else:
        state = read_json_file(path, "state file")
    if not isinstance(state, dict):
        raise UsageError(
            f"{path} must hold a JSON object of predictor states, got {type(state).__name__}"
        )
    _warn_version_mismatch(state.get("metadata"), str(path))
    apply_module_state(module, state, allow_unsafe_lm_state=allow_unsafe_lm_state)


def read_json_file(path: Path, what: str) -> Any:
    """The JSON data in ``path`` (a ``what``, e.g. "state file").

    Anything wrong with the file's content is a ``UsageError`` naming the
    file, the fault and the fix; a missing file stays ``FileNotFoundError``.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path} is not a UTF-8 text file: byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} is not valid UTF-8. A {what} is JSON written by save(); re-save "
            "it, or convert the file to UTF-8."
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            f"A {what} is JSON written by save(); re-save it, or fix the file there."
        ) from exc
    except RecursionError as exc:
        # json's decoder recurses once per nesting level: a file nested past
        # Python's recursion limit cannot be read (and no save() writes one).
        raise UsageError(
            f"{path} nests its JSON more deeply than Python can read (over "
            f"{sys.getrecursionlimit()} levels); a {what} written by save() is a few levels "
            "deep, so this file is damaged or is not one. Re-save the program's state."
        ) from exc


def _save_pickled_state(module: Program, path: Path) -> None:
    """DSPy's ``save("x.pkl")``: the state (objects kept as they are) pickled, with a warning.

    LMs are in the state as their redacted settings, so no API key is written.
    """
    import io

    logger.warning(_PICKLE_WARNING)
    state = module.dump_state(json_mode=False)
    state["metadata"] = _metadata()
    buffer = io.BytesIO()
    try:
        _pickle_module().dump(state, buffer, protocol=4)
    except Exception as exc:
        raise UsageError(
            f"cannot pickle the state of {type(module).__name__}: {exc}. Remove unpicklable "
            "values from its demos, or save('program.json')."
        ) from exc
    _write_atomic_bytes(path, buffer.getvalue())


def _load_pickled_state(path: Path, allow_pickle: bool) -> Any:
    import pickle

    if not allow_pickle:
        raise UsageError(
            f"refusing to load {path}: loading .pkl files can run arbitrary code, which may be "
            "dangerous. Prefer saving with .json files if possible. Set allow_pickle=True if "
            "you are sure about the source of the file and in a trusted environment."
        )
    with path.open("rb") as f:
        try:
            return pickle.load(f)  # the caller vouched for the file
        except ModuleNotFoundError as exc:
            raise _missing_module(exc, path) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            RecursionError,
            ImportError,
            AttributeError,
        ) as exc:
            raise UsageError(
                f"cannot unpickle {path}: {type(exc).__name__}: {exc}. The file is damaged, or "
                "was saved where other modules or classes existed; save the state again in "
                "this environment (or as '.json')."
            ) from exc


def _missing_module(exc: ModuleNotFoundError, path: Path) -> ModuleNotFoundError:
    """``exc`` with a note naming the file and the fix.

    It stays a ModuleNotFoundError, as DSPy raises it: callers catch that type.
    """
    exc.add_note(
        f"{path} refers to module {exc.name!r}, which this environment cannot import. Make it "
        "importable, or save the program with modules_to_serialize=[that module] so its code "
        "is stored in the file."
    )
    return exc


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _warn_version_mismatch(metadata: Any, where: str) -> None:
    if not isinstance(metadata, Mapping):
        return
    saved_own = metadata.get("dspex_version")
    here_own = installed_version("dspex")
    if isinstance(saved_own, str) and saved_own != "unknown" and here_own not in (None, saved_own):
        logger.warning(
            "%s was saved with dspex %s but this is dspex %s; loaded state may differ.",
            where,
            saved_own,
            here_own,
        )
    saved = metadata.get("dependency_versions")
    if not isinstance(saved, Mapping):
        return
    here = dependency_versions()
    for name, version in saved.items():
        current = here.get(name)
        if current is None or str(version) == current:
            continue  # the same, or not installed here (DSPy in a file DSPy wrote): nothing to say
        # DSPy's wording, one warning per dependency, so log filters written for DSPy match.
        logger.warning(
            "There is a mismatch of %s version between saved model and current environment "
            "(%s). You saved with `%s==%s`, but now you have `%s==%s`. This might cause errors "
            "or performance downgrade on the loaded model, please consider loading the model "
            "in the same environment as the saving environment.",
            name,
            where,
            name,
            version,
            name,
            current,
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
        import cloudpickle  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        import pickle

        return pickle
    return cloudpickle


def _save_program_dir(module: Program, path: Path, modules_to_serialize: list[Any] | None) -> None:
    """Pickle the whole program into ``path/program.pkl`` plus ``metadata.json``.

    LMs are written as their redacted state and signatures as their fields,
    so neither API keys nor unpicklable client handles end up in the file.
    """
    import io

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

    path = Path(path)
    if not (path / "metadata.json").is_file() or not (path / "program.pkl").is_file():
        raise UsageError(
            f"{path} is not a saved program directory (metadata.json and program.pkl); "
            "to load a '.json' state use program.load(path) on a program built in code"
        )
    metadata = read_json_file(path / "metadata.json", "program's metadata file")
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

    pickled = path / "program.pkl"
    with pickled.open("rb") as f:
        try:
            return ProgramUnpickler(f).load()
        except ModuleNotFoundError as exc:
            raise _missing_module(exc, pickled) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            RecursionError,
            ImportError,
            AttributeError,
        ) as exc:
            # A damaged file, one nested too deeply, or one naming a class this
            # environment lacks; other errors come from the program's own code.
            raise UsageError(
                f"cannot unpickle {pickled}: {type(exc).__name__}: {exc}. The file is damaged, "
                "or was saved where other modules or classes existed; save the program again "
                "in this environment (or load its '.json' state into a program built in code)."
            ) from exc
