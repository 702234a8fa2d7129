"""dspex: DSPy's programming model on an OTP-style supervised actor runtime.

``import dspex as dspy`` runs ordinary DSPy programs; ``dspex.start()`` adds a
supervision tree, resilient LM clients, named program actors and daemons.

Names load lazily on first use so ``import dspex`` stays cheap: the table
``_LAZY`` maps each public name to the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex.errors import (
    ActorStoppedError,
    AdapterParseError,
    AuthenticationError,
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    DSPexError,
    LMError,
    LMTimeoutError,
    LocalModelError,
    MaxChildrenError,
    OverloadedError,
    ProgramError,
    ProviderError,
    RateLimitError,
    RegistryError,
    SignatureError,
    StartError,
    SupervisionError,
    UsageError,
)

__version__ = "0.1.0"

# public name -> module defining it (imported on first attribute access)
_LAZY: dict[str, str] = {}

__all__ = [
    "ActorStoppedError",
    "AdapterParseError",
    "AuthenticationError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "DSPexError",
    "LMError",
    "LMTimeoutError",
    "LocalModelError",
    "MaxChildrenError",
    "OverloadedError",
    "ProgramError",
    "ProviderError",
    "RateLimitError",
    "RegistryError",
    "SignatureError",
    "StartError",
    "SupervisionError",
    "UsageError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # let type checkers see the lazy names
    pass
