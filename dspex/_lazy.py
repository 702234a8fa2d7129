"""Lazy public faces: a package's names load their module on first access.

Used by the ``__init__`` of ``dspex``, ``dspex.config`` and ``dspex.actors``
so importing them stays cheap. Imports nothing from dspex, so every layer may
use it (the layering test lists it beside ``dspex.errors``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(
    package: str, namespace: dict[str, Any], table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    ``table`` maps each public name to its module, absolute (``"dspex.programs"``)
    or relative to the package (``"_settings"``). A loaded name is stored in
    ``namespace`` (the package's globals) so later lookups skip ``__getattr__``.
    """

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        path = module if module.startswith("dspex") else f"{package}.{module}"
        loaded = importlib.import_module(path)
        # An entry naming the package's own submodule (``"evaluate": "dspex.evaluate"``)
        # yields the module itself, as ``import dspy; dspy.evaluate.x`` expects.
        value = loaded if path == f"{package}.{name}" else getattr(loaded, name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table))

    return getattr_, dir_
