"""Finding what ``dspex serve module_or_file:attr`` serves.

``attr`` (dotted for nested attributes) names one of:

* a program (a ``dspex.Module``), served as it is;
* a dict of name -> program, each served under its name;
* a path (``str`` or ``Path``) to a directory written by
  ``program.save(dir, save_program=True)``, loaded with ``dspex.load``;
* a callable taking no arguments that returns any of the above (a factory).

With ``--state state.json`` the saved JSON state is loaded into the (single)
program: the usual pairing of a factory that builds the program in code and
the state a compiled program saved. A bare path instead of ``module:attr`` is
a ``dspex.load`` directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dspex.errors import UsageError

__all__ = ["load_programs"]


def _import(module_or_file: str) -> Any:
    path = Path(module_or_file)
    if module_or_file.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UsageError(f"dspex serve: no such file {module_or_file!r}")
        resolved = path.resolve()
        # Sibling modules of the file import as they would when it runs as a script.
        sys.path.insert(0, str(resolved.parent))
        spec = importlib.util.spec_from_file_location(f"_dspex_serve_{resolved.stem}", resolved)
        if spec is None or spec.loader is None:
            raise UsageError(f"dspex serve: cannot import {module_or_file!r} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_or_file)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"dspex serve: cannot import module {module_or_file!r} ({exc}); give a module on "
            "sys.path (run from its directory) or a path to a .py file"
        ) from exc


def _is_program(obj: Any) -> bool:
    from dspex.programs import BaseModule

    return isinstance(obj, BaseModule)


def _load_dir(path: Path, allow_pickle: bool) -> Any:
    from dspex.programs import load

    if not allow_pickle:
        raise UsageError(
            f"dspex serve: {path} is a saved program directory; loading it unpickles "
            "program.pkl, which runs code from the file. Pass --allow-pickle if you trust it, "
            "or serve a factory with --state state.json instead"
        )
    return load(path, allow_pickle=True)


def _resolve(obj: Any, where: str, allow_pickle: bool, depth: int = 0) -> Any:
    if _is_program(obj):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _resolve(v, f"{where}[{k!r}]", allow_pickle, depth) for k, v in obj.items()}
    if isinstance(obj, str | Path):
        path = Path(obj)
        if path.is_dir():
            return _load_dir(path, allow_pickle)
        raise UsageError(
            f"dspex serve: {where} is the path {str(obj)!r}, which is not a saved program "
            "directory; for a '.json' state, serve the factory that builds the program and "
            "pass --state state.json"
        )
    if callable(obj) and depth == 0:
        return _resolve(obj(), f"{where}()", allow_pickle, depth + 1)
    raise UsageError(
        f"dspex serve: {where} is a {type(obj).__name__}; expected a dspex Module, a dict of "
        "name -> Module, a saved program directory, or a function returning one of these"
    )


def load_programs(
    target: str,
    *,
    name: str | None = None,
    state: str | None = None,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """The programs ``target`` names, by the name each is served under."""
    module_part, sep, attr = target.rpartition(":")
    if not sep:  # no ":": a saved program directory
        path = Path(target)
        if not path.is_dir():
            raise UsageError(
                f"dspex serve: {target!r} is neither module_or_file:attr nor a saved program "
                "directory; e.g. dspex serve app.py:qa"
            )
        programs = {name or path.name: _load_dir(path, allow_pickle)}
    else:
        if not module_part or not attr:
            raise UsageError(f"dspex serve: {target!r} must look like module_or_file:attr")
        obj = _import(module_part)
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise UsageError(
                    f"dspex serve: {module_part!r} has no attribute {attr!r}"
                ) from None
        found = _resolve(obj, target, allow_pickle)
        if isinstance(found, dict):
            if name is not None:
                raise UsageError(
                    f"dspex serve: {target} is a dict of programs, served under its keys; "
                    "--name applies to a single program only"
                )
            programs = found
        else:
            programs = {name or attr.rsplit(".", 1)[-1]: found}
    if not programs:
        raise UsageError(f"dspex serve: {target} holds no program to serve")
    if state is not None:
        if len(programs) != 1:
            raise UsageError("dspex serve: --state applies to a single program, not a dict")
        (only,) = programs.values()
        only.load(state)
    for served in programs:
        if not served or "/" in served or served != served.strip():
            raise UsageError(f"dspex serve: {served!r} cannot be a program name in a URL path")
    return programs
