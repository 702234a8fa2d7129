"""dspex: DSPy's programming model on an OTP-style supervised actor runtime.

``import dspex as dspy`` runs ordinary DSPy programs; ``dspex.start()`` adds a
supervision tree, resilient LM clients, named program actors and daemons.

Names load lazily on first use so ``import dspex`` stays cheap: the table
``_LAZY`` maps each public name to the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import Any

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
_LAZY: dict[str, str] = {
    "Adapter": "dspex.programs",
    "ChainOfThought": "dspex.programs",
    "ChatAdapter": "dspex.programs",
    "Completions": "dspex.programs",
    "Example": "dspex.programs",
    "InputField": "dspex.programs",
    "JSONAdapter": "dspex.programs",
    "Module": "dspex.programs",
    "OutputField": "dspex.programs",
    "Parameter": "dspex.programs",
    "Predict": "dspex.programs",
    "Prediction": "dspex.programs",
    "Signature": "dspex.programs",
    "SignatureMeta": "dspex.programs",
    "XMLAdapter": "dspex.programs",
    "configure": "dspex.programs",
    "context": "dspex.programs",
    "ensure_signature": "dspex.programs",
    "infer_prefix": "dspex.programs",
    "load": "dspex.programs",
    "make_signature": "dspex.programs",
    "settings": "dspex.programs",
    "answer_exact_match": "dspex.programs",
    "answer_passage_match": "dspex.programs",
    "normalize_text": "dspex.programs",
    "f1_score": "dspex.programs",
    "Settings": "dspex.config",
    "load_settings": "dspex.config",
}

__all__ = [
    "ActorStoppedError",
    "Adapter",
    "AdapterParseError",
    "AuthenticationError",
    "CallTimeoutError",
    "ChainOfThought",
    "ChatAdapter",
    "CircuitOpenError",
    "Completions",
    "ConfigError",
    "DSPexError",
    "Example",
    "InputField",
    "JSONAdapter",
    "LMError",
    "LMTimeoutError",
    "LocalModelError",
    "MaxChildrenError",
    "Module",
    "OutputField",
    "OverloadedError",
    "Parameter",
    "Predict",
    "Prediction",
    "ProgramError",
    "ProviderError",
    "RateLimitError",
    "RegistryError",
    "Settings",
    "Signature",
    "SignatureError",
    "SignatureMeta",
    "StartError",
    "SupervisionError",
    "UsageError",
    "XMLAdapter",
    "answer_exact_match",
    "answer_passage_match",
    "configure",
    "context",
    "ensure_signature",
    "f1_score",
    "infer_prefix",
    "load",
    "load_settings",
    "make_signature",
    "normalize_text",
    "settings",
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
